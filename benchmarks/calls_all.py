"""Run the four call-semantics benchmarks (issue 15) and write their section of BENCHMARKS.md.

They are not part of ``make bench`` (whose scripts must fit in 10 minutes); run them with
``.venv/bin/python benchmarks/calls_all.py`` (about 2 minutes). The section is kept in
``benchmarks/CALLS.md``, which ``run_all.py`` copies into BENCHMARKS.md on every ``make bench``,
and is also replaced in BENCHMARKS.md right away (between the ``calls`` markers).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from _harness import BENCH_DIR, ROOT, child_env, machine

SCRIPTS = ("calls_hung_instance.py", "calls_slow_instance.py", "calls_retry_budget.py", "calls_shedding.py")
BEGIN, END = "<!-- calls:begin -->", "<!-- calls:end -->"

ANALYSIS = """\
#### Why load shedding is off by default

An overloaded grpc.aio server does not queue calls where Python sees them: grpc's core holds
them until the event loop takes them, one at a time, so in-flight counts and event-loop lag
stay low while calls wait hundreds of milliseconds. The shedder therefore reads each call's
queueing delay (the timeout the mesh channel sent in `x-mesh-timeout-ms` less the server's
`time_remaining()`), and refuses calls while it stays above 20 ms. That turns a collapse
(most calls past their deadline, goodput about a quarter to a third of capacity) into prompt
refusals; but every refusal still costs the server the Python side of a call (about 1 ms of
CPU in grpc.aio: deserialising, the wrapper, the abort), so at 3x load with 10 ms handlers the
server spends a good part of its core refusing, goodput stays under 0.9 of capacity on this
shared machine in most runs, and admitted calls still queue behind the refusals (p99 several
times the unloaded one). For cheaper handlers (4 ms) the refusals cost relatively more. The
in-flight floor trades one goal for the other: with `minimum_in_flight: 1` admitted calls kept
the unloaded latency (p50 17.6 ms, p99 2.9x) but the server sat a third idle (goodput 0.58, one
handler at a time awaiting its I/O); with the default 2, goodput 0.77-0.88 and p99 6.5-8x
over four runs on the loaded machine. Hence
the library ships it off; turn it on (`service.load_shedding.enabled: true`) where calls cost
well over a millisecond and a fast refusal is better for callers than a late answer.
"""


def render(results: list[dict[str, Any]]) -> list[str]:
    facts = machine()
    lines = [
        BEGIN,
        "## Call semantics across hops (issue 15)",
        "",
        "Run apart from `make bench`: `.venv/bin/python benchmarks/calls_all.py` (or each script alone). "
        f"Generated {datetime.now(UTC).strftime('%Y-%m-%d %H:%M UTC')} on {facts['cpus']} shared cores "
        f"(load average before: {facts.get('load_before', 'n/a')}); servers are real processes on 127.0.0.1.",
        "",
        "| figure | goal | measured | met | command |",
        "|---|---|---|---|---|",
    ]
    for result in results:
        for row in result["rows"]:
            met = {True: "yes", False: "**no**", None: "-"}[row["met"]]
            lines.append(f"| {row['figure']} | {row['goal']} | {row['measured']} | {met} | `{row['command']}` |")
    lines.append("")
    for result in results:
        lines += result["section"]
    lines += [ANALYSIS, END]
    return lines


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--smoke", action="store_true", help="tiny sizes; writes nothing")
    args = p.parse_args()
    results = []
    with tempfile.TemporaryDirectory(prefix="grpcmesh-calls-") as tmp:
        for script in SCRIPTS:
            out = Path(tmp) / f"{script}.json"
            command = [
                sys.executable,
                str(BENCH_DIR / script),
                "--json",
                str(out),
                *(["--smoke"] if args.smoke else []),
            ]
            if subprocess.run(command, env=child_env(), check=False).returncode != 0:
                print(f"{script} failed", file=sys.stderr)
                return 1
            results.append(json.loads(out.read_text()))
    if args.smoke:
        return 0
    section = "\n".join(render(results)) + "\n"
    (BENCH_DIR / "CALLS.md").write_text(section)
    target = ROOT / "BENCHMARKS.md"
    text = target.read_text()
    if BEGIN in text and END in text:
        text = text[: text.index(BEGIN)] + section.rstrip("\n") + text[text.index(END) + len(END) :]
    else:
        marker = "## Findings"
        at = text.find(marker)
        text = text + "\n" + section if at < 0 else text[:at] + section + "\n" + text[at:]
    target.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
