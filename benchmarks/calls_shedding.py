"""Issue 15 (c): a server offered 3x its capacity: goodput and admitted-call latency, shedding vs none.

Two Echo ``MeshServer`` processes do the same work per call — 10 ms of CPU on the event loop
then a 5 ms await (I/O) — one with adaptive load shedding, one without. Measured in one run:

1. unloaded latency: one caller, one call at a time (p50/p99), on each server;
2. capacity C: completed calls/s with 32 closed-loop callers on the server without shedding;
   a third server, with grpc.aio's own ``maximum_concurrent_rpcs`` cap (``--cap``) and no
   shedding, shows what that cheaper-looking refusal does;
3. overload: calls started open-loop at 3*C per second (1 s deadline each) for a few seconds,
   on each server in turn, interleaved over ``--rounds``.

Figures: goodput = successful calls/s / C (goal >= 0.9 with shedding) and p99 latency of
admitted (successful) calls / unloaded p99 (goal <= 2x with shedding); beside them, the
server process's CPU (cores used, and CPU per successful call: what refusals cost). Shedding is off by
default in the library; see BENCHMARKS.md for why.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import tempfile
import time
from pathlib import Path

import grpc
from _harness import Report, Row, children, command, ms, parser, percentile, run
from _semantics import start_server

from grpcmesh import open_registry
from grpcmesh.client import MeshChannel, OutlierPolicy
from grpcmesh.client.settings import CallSettings
from grpcmesh.client.throttle import ThrottlePolicy
from grpcmesh.protos import echo_pb2, echo_pb2_grpc

SCRIPT = "calls_shedding.py"
WORK = ("--work-ms", "10", "--await-ms", "5")
BELOW = 0.8
"""Load, as a fraction of capacity, at which shedding must refuse nothing to be on by default."""


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds a process has used so far (from /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def closed_loop(stub: echo_pb2_grpc.EchoAsyncStub, callers: int, seconds: float) -> list[float]:
    """Latencies of successful calls from ``callers`` back-to-back callers."""
    latencies: list[float] = []
    end = time.monotonic() + seconds

    async def caller() -> None:
        while time.monotonic() < end:
            began = time.monotonic()
            with contextlib.suppress(grpc.aio.AioRpcError):
                await stub.Unary(echo_pb2.EchoRequest(), timeout=5)
                latencies.append(time.monotonic() - began)

    await asyncio.gather(*(caller() for _ in range(callers)))
    return latencies


async def open_loop(
    stub: echo_pb2_grpc.EchoAsyncStub, rate: float, seconds: float
) -> tuple[list[float], dict[str, int]]:
    """Start ``rate`` calls/s for ``seconds`` whatever happens; latencies of the successes, codes of all."""
    latencies: list[float] = []
    codes: dict[str, int] = {}

    async def one() -> None:
        began = time.monotonic()
        try:
            await stub.Unary(echo_pb2.EchoRequest(), timeout=1.0)
        except grpc.aio.AioRpcError as exc:
            codes[exc.code().name] = codes.get(exc.code().name, 0) + 1
            return
        latencies.append(time.monotonic() - began)
        codes["OK"] = codes.get("OK", 0) + 1

    tasks: list[asyncio.Task[None]] = []
    start = time.monotonic()
    sent = 0
    while (now := time.monotonic()) < start + seconds:
        due = int((now - start) * rate)
        for _ in range(due - sent):
            tasks.append(asyncio.get_running_loop().create_task(one()))
        sent = due
        await asyncio.sleep(0.005)
    await asyncio.gather(*tasks)
    return latencies, codes


async def main(args: argparse.Namespace, report: Report) -> None:
    seconds = 1.0 if args.smoke else args.seconds
    rounds = 1 if args.smoke else args.rounds
    async with contextlib.AsyncExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="grpcmesh-bench-shed-")))
        url = f"sqlite://{tmp}/registry.db"
        started = await stack.enter_async_context(children())
        flags: dict[str, tuple[str, ...]] = {
            "plain": (),
            "shedding": ("--shedding", "--shedding-policy", args.policy, *args.shedding_server),
        }
        if args.cap:
            flags["grpc cap"] = ("--max-concurrent", str(args.cap))
        pids = {}
        for name, extra in flags.items():
            pids[name] = (
                await start_server(started, url, name.replace(" ", "-"), name.replace(" ", "-") + "-0", *WORK, *extra)
            ).pid
        registry = open_registry(url)
        stack.push_async_callback(registry.close)
        # The client must not hide the server's behaviour: no throttling, no ejection.
        settings = CallSettings(
            throttle=ThrottlePolicy(enabled=False),
            outlier=OutlierPolicy(consecutive_failures=10**6, success_rate=None, latency_factor=None),
        )
        stubs = {}
        for name in flags:
            channel = MeshChannel(registry, name.replace(" ", "-"), settings=settings)
            stack.push_async_callback(channel.close)
            await asyncio.wait_for(channel.channel_ready(), 30)
            stubs[name] = echo_pb2_grpc.EchoStub(channel)

        unloaded = {name: await closed_loop(stub, 1, min(2.0, seconds)) for name, stub in stubs.items()}
        saturated = await closed_loop(stubs["plain"], 32, min(3.0, seconds))
        capacity = len(saturated) / min(3.0, seconds)
        rate = 3 * capacity
        overload: dict[str, tuple[list[float], dict[str, int]]] = {name: ([], {}) for name in flags}
        server_cpu = dict.fromkeys(flags, 0.0)
        for _ in range(rounds):
            for name, stub in stubs.items():
                before = cpu_seconds(pids[name])
                latencies, codes = await open_loop(stub, rate, seconds)
                server_cpu[name] += cpu_seconds(pids[name]) - before
                overload[name][0].extend(latencies)
                for code, n in codes.items():
                    overload[name][1][code] = overload[name][1].get(code, 0) + n
                await asyncio.sleep(1.5)  # let the server drain before the next round
        # The on-by-default criterion: below capacity, shedding must refuse nothing.
        below: dict[str, int] = {}
        for _ in range(rounds):
            _, codes = await open_loop(stubs["shedding"], BELOW * capacity, seconds)
            for code, n in codes.items():
                below[code] = below.get(code, 0) + n
            await asyncio.sleep(1.5)

    report.line(
        f"### Overload: 10 ms CPU + 5 ms await per call; capacity {capacity:.0f} calls/s; offered {rate:.0f} calls/s "
        f"(3x) for {seconds:g} s x {rounds} rounds per server, 1 s deadline"
    )
    report.line()
    rows = []
    figures = {}
    labels = {"plain": "no shedding", "shedding": "shedding", "grpc cap": f"grpc maximum_concurrent_rpcs={args.cap}"}
    for name in overload:
        latencies, codes = overload[name]
        goodput = len(latencies) / (seconds * rounds) / capacity
        cpu = server_cpu[name]
        base_p99 = percentile([x for lat in unloaded.values() for x in lat], 99)  # same work: one baseline
        p99 = percentile(latencies, 99)
        figures[name] = (goodput, p99 / base_p99)
        rows.append(
            [
                labels[name],
                ms(percentile(unloaded[name], 50)),
                ms(percentile(unloaded[name], 99)),
                ms(base_p99),
                f"{goodput:.2f}",
                ms(percentile(latencies, 50)),
                ms(p99),
                f"{p99 / base_p99:.1f}x",
                f"{cpu / (seconds * rounds):.2f}",
                f"{cpu * 1000 / max(1, len(latencies)):.1f} ms",
                ", ".join(f"{c} {n}" for c, n in sorted(codes.items())),
            ]
        )
    report.table(
        [
            "server",
            "unloaded p50",
            "unloaded p99",
            "unloaded p99 (all)",
            "goodput / capacity",
            "admitted p50",
            "admitted p99",
            "p99 vs unloaded",
            "server CPU (cores)",
            "server CPU per OK call",
            "outcomes",
        ],
        rows,
    )
    refused = below.get("RESOURCE_EXHAUSTED", 0)
    report.line(
        f"Below capacity ({BELOW:g}x, {BELOW * capacity:.0f} calls/s, same rounds) the shedding server answered: "
        + ", ".join(f"{c} {n}" for c, n in sorted(below.items()))
    )
    report.line()
    goodput, ratio = figures["shedding"]
    cmd = command(SCRIPT, "--seconds", str(args.seconds), "--rounds", str(args.rounds), "--cap", str(args.cap))
    report.add(
        Row(
            "server at 3x capacity: goodput with shedding (vs without)",
            ">= 0.9 of capacity",
            f"{goodput:.2f} vs {figures['plain'][0]:.2f}",
            goodput >= 0.9,
            cmd,
        )
    )
    report.add(
        Row(
            "server at 3x capacity: p99 of admitted calls vs unloaded, shedding (vs without)",
            "<= 2x",
            f"{ratio:.1f}x vs {figures['plain'][1]:.1f}x",
            ratio <= 2.0,
            cmd,
        )
    )
    report.add(
        Row(
            f"server at {BELOW:g}x capacity: calls refused by shedding (on by default only if none)",
            "0",
            f"{refused} of {sum(below.values())}",
            refused == 0,
            cmd,
        )
    )


if __name__ == "__main__":
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--seconds", type=float, default=5.0)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--cap", type=int, default=2, help="also measure grpc.aio's maximum_concurrent_rpcs=N (0: skip)")
    p.add_argument("--policy", default="{}", help="SheddingPolicy fields as JSON for the shedding server")
    p.add_argument(
        "--shedding-server",
        action="append",
        default=[],
        help="one more _semantics_server.py flag, e.g. --shedding-server=--max-concurrent=4",
    )
    run(main, p.parse_args(), SCRIPT)
