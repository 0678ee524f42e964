"""Issue 15 (d): a backend failing 50 % of calls: retry amplification with and without the retry budget.

Two Echo ``MeshServer`` processes each fail half their calls with UNAVAILABLE. Two
``MeshChannel`` clients declare Echo.Unary idempotent (``retry_methods``), so every failed
call is retried once on the other instance; they run side by side at the same paced rate:

* ``no budget`` (baseline): a budget that never runs out (ratio 1.0);
* ``budget``: the default Finagle-style budget (20 % of recent calls, 10/s floor, 10 s window).

Throttling and outlier ejection are off in both, so only the budget differs. Amplification
is attempts sent / calls offered, counted by the channel, over the whole run and after the
budget's first 10 s window (in which its floor of 10 retries/s exceeds 20 % of this load).
Goal: <= 1.2x with the budget.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import tempfile
import time
from pathlib import Path

from _harness import Report, Row, children, command, parser, run
from _semantics import PacedLoad, start_server

from grpcmesh import open_registry
from grpcmesh.client import MeshChannel, OutlierPolicy
from grpcmesh.client.retry_budget import RetryBudgetPolicy
from grpcmesh.client.settings import CallSettings
from grpcmesh.client.throttle import ThrottlePolicy

SCRIPT = "calls_retry_budget.py"
SERVICE = "echo-flaky"
WINDOW = 10.0
"""The default retry budget's window (seconds)."""
UNARY = "/grpcmesh.echo.v1.Echo/Unary"


async def main(args: argparse.Namespace, report: Report) -> None:
    seconds = 3.0 if args.smoke else args.seconds
    callers = 2 if args.smoke else args.callers
    async with contextlib.AsyncExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="grpcmesh-bench-budget-")))
        url = f"sqlite://{tmp}/registry.db"
        started = await stack.enter_async_context(children())
        await asyncio.gather(
            *(start_server(started, url, SERVICE, f"flaky-{k}", "--fail-percent", "50") for k in range(2))
        )
        registry = open_registry(url)
        stack.push_async_callback(registry.close)
        common = {
            "throttle": ThrottlePolicy(enabled=False),
            "outlier": OutlierPolicy(consecutive_failures=10**6, success_rate=None, latency_factor=None),
        }
        budgets = {
            "no budget": CallSettings(retry_budget=RetryBudgetPolicy(ratio=1.0), **common),  # type: ignore[arg-type]
            "budget": CallSettings(**common),  # type: ignore[arg-type]
        }
        loads = []
        channels = []
        for name, settings in budgets.items():
            channel = MeshChannel(registry, SERVICE, settings=settings, retry_methods=[UNARY])
            stack.push_async_callback(channel.close)
            await asyncio.wait_for(channel.channel_ready(), 30)
            while len(channel.endpoints) < 2:
                await asyncio.sleep(0.05)
            channels.append(channel)
            loads.append(PacedLoad(name, channel, callers, pause=0.01, timeout=2.0))

        def attempts() -> list[int]:
            return [sum(e.calls for e in c.stats().per_endpoint) for c in channels]

        sent_before = attempts()
        begin = time.monotonic()
        for load in loads:
            load.start(begin)
        warm_up = min(WINDOW, seconds / 2)  # the budget's first window, where its 10/s floor dominates
        await asyncio.sleep(warm_up)
        sent_warm = attempts()
        offered_warm = [load.calls() for load in loads]
        await asyncio.sleep(seconds - warm_up)
        for load in loads:
            await load.stop()
        sent_end = attempts()
        sent = [end - before for end, before in zip(sent_end, sent_before, strict=True)]
        steady = {
            load.name: (end - warm) / max(1, load.calls() - offered)
            for load, end, warm, offered in zip(loads, sent_end, sent_warm, offered_warm, strict=True)
        }
        stats = [c.stats() for c in channels]

    report.line(
        f"### Retry budget: 2 instances failing 50 % with UNAVAILABLE, {seconds:g} s, "
        f"{callers} paced callers per client"
    )
    report.line()
    rows = []
    amplification = {}
    for load, count, stat in zip(loads, sent, stats, strict=True):
        offered = load.calls()
        amplification[load.name] = count / max(1, offered)
        rows.append(
            [
                load.name,
                offered,
                count,
                f"{amplification[load.name]:.3f}x",
                f"{steady[load.name]:.3f}x",
                stat.retries_total,
                stat.retries_denied,
                f"{load.failures() / max(1, offered):.0%}",
            ]
        )
    report.table(
        [
            "client",
            "calls offered",
            "attempts sent",
            "amplification",
            f"after the first {warm_up:g} s",
            "retries",
            "denied",
            "failed",
        ],
        rows,
    )
    report.add(
        Row(
            "backend failing 50 %: retry amplification (sent/offered), budget vs none",
            "<= 1.2x with the budget (after its first window)",
            f"{steady['budget']:.3f}x vs {steady['no budget']:.3f}x after the first {warm_up:g} s; whole run "
            f"{amplification['budget']:.3f}x vs {amplification['no budget']:.3f}x (the 10/s floor lets the "
            "first window retry more than 20 %)",
            steady["budget"] <= 1.2,
            command(SCRIPT, "--seconds", str(args.seconds), "--callers", str(args.callers)),
        )
    )


if __name__ == "__main__":
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--seconds", type=float, default=20.0)
    p.add_argument("--callers", type=int, default=4)
    run(main, p.parse_args(), SCRIPT)
