"""Figure 6, import cost: ``import grpcmesh`` against ``import grpc`` in fresh interpreters.

Every sample is a new ``python -c`` process that times its own import (wall and CPU time,
interpreter start-up excluded) and counts the modules it added, so caches of an earlier
import cannot help. The imports alternate in shuffled rounds, so load on a shared machine
hits them alike; figures are ratios of medians. ``import grpc`` is the floor grpcmesh is
built on. ``import grpcmesh`` loads the errors only (the rest on first use), so the second
figure times ``from grpcmesh import Mesh``: everything a service needs (registry client,
balancers, server, config, metrics and logging).
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys

from _harness import Report, Row, child_env, command, median, parser, run

SCRIPT = "bench_import.py"
GOAL = 2.0
"""``import grpcmesh`` may take at most this many times ``import grpc``."""

IMPORTS = {"grpc": "import grpc", "grpcmesh": "import grpcmesh", "Mesh": "from grpcmesh import Mesh"}
"""Label -> the statement a fresh interpreter times."""

_PROBE = """
import sys, time
before = set(sys.modules)
wall, cpu = time.perf_counter(), time.process_time()
{statement}
wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
print(json.dumps({{"wall": wall, "cpu": cpu, "modules": len(set(sys.modules) - before)}}))
"""


def sample(label: str) -> dict[str, float]:
    code = "import json\n" + _PROBE.format(statement=IMPORTS[label])
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=child_env())
    result: dict[str, float] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


async def main(args: argparse.Namespace, report: Report) -> None:
    rounds = 2 if args.smoke else args.rounds
    modules = list(IMPORTS)
    samples: dict[str, list[dict[str, float]]] = {m: [] for m in modules}
    rng = random.Random(6)
    for module in modules:
        sample(module)  # warm the OS file cache once for each
    for _ in range(rounds):
        order = list(modules)
        rng.shuffle(order)
        for module in order:
            samples[module].append(sample(module))

    def med(module: str, key: str) -> float:
        return median([s[key] for s in samples[module]])

    report.line(f"### Import cost (median of {rounds} interleaved fresh interpreters each)")
    report.line()
    report.table(
        ["statement", "wall", "CPU", "modules loaded"],
        [
            [
                f"`{IMPORTS[m]}`",
                f"{med(m, 'wall') * 1000:.1f} ms",
                f"{med(m, 'cpu') * 1000:.1f} ms",
                f"{med(m, 'modules'):.0f}",
            ]
            for m in modules
        ],
    )
    report.line(
        "No optional package (aiohttp, OpenTelemetry, typer/rich, cryptography, aetcd, xDS protos) is imported by"
        " either grpcmesh statement: each loads only with the feature that needs it. (structlog imports rich when it"
        " is installed, as in the dev venv measured here; a core install has no rich.)"
    )
    report.line()
    for label, goal in (("grpcmesh", GOAL), ("Mesh", None)):
        wall_ratio = med(label, "wall") / med("grpc", "wall")
        cpu_ratio = med(label, "cpu") / med("grpc", "cpu")
        report.add(
            Row(
                figure=f"6. import time, `{IMPORTS[label]}` vs `import grpc`",
                goal=f"<= {goal:.1f}x wall time" if goal else "none (measured so the cost of a whole service shows)",
                measured=f"{wall_ratio:.2f}x ({med(label, 'wall') * 1000:.0f} ms vs {med('grpc', 'wall') * 1000:.0f}"
                f" ms); CPU {cpu_ratio:.2f}x; modules {med(label, 'modules'):.0f} vs {med('grpc', 'modules'):.0f}",
                met=wall_ratio <= goal if goal else None,
                command=command(SCRIPT),
                details={"wall_ratio": wall_ratio, "cpu_ratio": cpu_ratio},
            )
        )


if __name__ == "__main__":
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=7, help="fresh interpreters per statement")
    run(main, p.parse_args(), SCRIPT)
