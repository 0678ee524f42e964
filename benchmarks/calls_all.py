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
#### Load shedding: what made it work, and why it is still off by default

An overloaded grpc.aio server does not queue calls where Python sees them: grpc's core holds
them until the event loop takes them, so in-flight counts and event-loop lag stay low while
calls wait hundreds of milliseconds. The shedder reads each call's queueing delay (the timeout
the mesh channel sent in `x-mesh-timeout-ms` less the server's `time_remaining()`). Three
changes took it from goodput 0.77-0.88 and p99 6.5-8x to the figures above (four runs on
2026-11-30, 01:06-01:11 UTC: goodput 0.85-0.90, p99 2.4-2.7x; without shedding 0.26-0.28 and
50-58x; with `maximum_concurrent_rpcs=2` 0.49-0.67 and about 50x): (1) while
shedding, a call that already waited more than `max_queue_delay` (now 10 ms) is refused at
once, instead of only after the delay persisted; the admitted calls used to be the ones that
had queued just under the 20 ms target, plus 20 ms of handler; (2) a prompt call that finds
every slot taken waits for one for what is left of its `max_queue_delay`, instead of being
refused, so a freed slot never waits for a prompt arrival (the CPU stays busy) and queueing
stays bounded; (3) admission is the outermost layer, before the call context, tracing,
metrics and the access log, with a fixed refusal message. Refusals are cheap either way:
server CPU per OK call, refusals included, is about 11 ms for a 10 ms handler with 2-3
refusals per OK call (about 0.3 ms each, mostly grpc.aio's own per-call work; the earlier
estimate of 1 ms was too high). What is left of the admitted latency is the
10 ms queueing target, two 10 ms handlers sharing the loop, and the benchmark client's own
Python at 300 calls/s (in a debug run the server saw at most 10 ms queued plus 25 ms of
handler; the client sees a p50 near 40 ms): p99 2.4-2.7x the unloaded one, short of 2x.
grpc.aio's `maximum_concurrent_rpcs` is no substitute (row above): calls still wait in grpc's
core before it counts them (admitted p50 about 0.5 s, most past their deadline), and health
checks count against it and are refused. At 0.8x capacity shedding refused nothing, yet it
stays off by default: the queueing target is absolute, so a server whose handlers hold the
event loop longer than `interval` (50 ms) sheds a burst of two calls at any load. Turn it on
(`service.load_shedding.enabled: true`), with `max_queue_delay` and `interval` above the
longest time one handler blocks the loop, where a fast
refusal serves callers better than a late answer.
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
