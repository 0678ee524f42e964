"""Issue 15 (a): one of three instances frozen (SIGSTOP) under load, with and without ejection.

Three Echo ``MeshServer`` processes register with a 60 s TTL, so the frozen one stays in the
registry for the whole run: only the client can route around it. Two ``MeshChannel`` clients
run the same paced load side by side (0.5 s deadline per call):

* ``no ejection`` (baseline): outlier detection effectively off (it takes 10^6 failures in a
  row, no success-rate or latency ejection) and no keepalive — what the mesh did before;
* ``ejection`` (default settings): consecutive DEADLINE_EXCEEDED/UNAVAILABLE eject, one
  probe at a time after the ejection ends, keepalive pings.

Figures: failed calls after the freeze and the time until failures stop ("recovered": the
end of the last 0.5 s window with more than one failure). Goal: failures stop within a few
seconds (3 s) with ejection.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import tempfile
import time
from pathlib import Path

from _harness import Report, Row, children, command, parser, run
from _semantics import PacedLoad, start_server

from grpcmesh import open_registry
from grpcmesh.client import MeshChannel, OutlierPolicy
from grpcmesh.client.settings import CallSettings

SCRIPT = "calls_hung_instance.py"
SERVICE = "echo-hung"
WINDOW = 0.5


def recovered_after(load: PacedLoad, frozen_at: float, end: float) -> float:
    """Seconds from the freeze to the end of the last window with more than one failure."""
    last = 0.0
    t = frozen_at
    while t < end:
        if load.failures(t, t + WINDOW) > 1:
            last = t + WINDOW - frozen_at
        t += WINDOW
    return last


async def main(args: argparse.Namespace, report: Report) -> None:
    frozen_for = 3.0 if args.smoke else args.seconds
    callers = 3 if args.smoke else args.callers
    async with contextlib.AsyncExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="grpcmesh-bench-hung-")))
        url = f"sqlite://{tmp}/registry.db"
        started = await stack.enter_async_context(children())
        servers = await asyncio.gather(
            *(start_server(started, url, SERVICE, f"inst-{k}", "--ttl", "60") for k in range(3))
        )
        registry = open_registry(url)
        stack.push_async_callback(registry.close)
        off = CallSettings(
            outlier=OutlierPolicy(consecutive_failures=10**6, success_rate=None, latency_factor=None), keepalive=None
        )
        channels = {
            "no ejection": MeshChannel(registry, SERVICE, settings=off),
            "ejection": MeshChannel(registry, SERVICE),
        }
        for channel in channels.values():
            stack.push_async_callback(channel.close)
            await asyncio.wait_for(channel.channel_ready(), 30)
            while len(channel.endpoints) < 3:
                await asyncio.sleep(0.05)
        loads = [PacedLoad(name, ch, callers, pause=0.01, timeout=0.5) for name, ch in channels.items()]
        begin = time.monotonic()
        for load in loads:
            load.start(begin)
        await asyncio.sleep(1.0)
        victim = servers[0]
        os.kill(victim.pid, signal.SIGSTOP)
        frozen_at = time.monotonic() - begin
        try:
            await asyncio.sleep(frozen_for)
        finally:
            os.kill(victim.pid, signal.SIGCONT)
        end = time.monotonic() - begin
        for load in loads:
            await load.stop()

    report.line(
        f"### Hung instance: 1 of 3 frozen (SIGSTOP) for {frozen_for:g} s, {callers} paced callers per client, "
        "0.5 s deadline"
    )
    report.line()
    rows = []
    for load in loads:
        rows.append(
            [
                load.name,
                load.calls(0, frozen_at),
                load.calls(frozen_at, end),
                load.failures(frozen_at, end),
                load.failures(frozen_at + 3.0, end),
                f"{recovered_after(load, frozen_at, end):.1f} s",
                ", ".join(f"{n}x {e}" for e, n in load.errors().most_common(2)) or "-",
            ]
        )
    report.table(
        ["client", "calls before", "calls frozen", "failed frozen", "failed after +3 s", "recovered after", "errors"],
        rows,
    )
    base, ejecting = loads
    recovered = recovered_after(ejecting, frozen_at, end)
    cmd = command(SCRIPT, "--seconds", str(args.seconds), "--callers", str(args.callers))
    report.add(
        Row(
            "hung instance (SIGSTOP 1 of 3): failed calls, ejection vs none",
            "failures stop within 3 s",
            f"{ejecting.failures(frozen_at, end)} vs {base.failures(frozen_at, end)} failed; "
            f"recovered after {recovered:.1f} s vs {recovered_after(base, frozen_at, end):.1f} s",
            recovered <= 3.0,
            cmd,
        )
    )


if __name__ == "__main__":
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--seconds", type=float, default=10.0, help="how long the instance stays frozen")
    p.add_argument("--callers", type=int, default=6)
    run(main, p.parse_args(), SCRIPT)
