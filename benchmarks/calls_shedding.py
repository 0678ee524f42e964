"""Issue 15 (c): a server offered 3x its capacity: goodput and admitted-call latency, shedding vs none.

Echo ``MeshServer`` processes do the same work per call — 10 ms of CPU on the event loop then a
5 ms await (I/O) — one without load shedding, one with the default shedding policy, one with
``arrival_factor: 0`` (every persistent queue counts as an overload: the fastest onset, the old
default). Measured in one run:

1. unloaded latency: one caller, one call at a time (p50/p99), on each server;
2. capacity C: completed calls/s with 32 closed-loop callers on the server without shedding,
   measured first and again before every round (goodput is divided by the mean);
   a third server, with grpc.aio's own ``maximum_concurrent_rpcs`` cap (``--cap``) and no
   shedding, shows what that cheaper-looking refusal does;
3. overload: calls started open-loop at 3*C per second (1 s deadline each) for a few seconds,
   on each server in turn, interleaved over ``--rounds``, each time right after one second at
   0.8*C (not measured: the overload meets a server at work, as it would in production); the
   shedding server twice, the second time from a mesh channel with its default client-side
   throttling (the others have none, so that the server's own behaviour shows).

4. below capacity: 0.8*C calls/s on each shedding server, evenly paced and then at random
   instants (Poisson arrivals, what many independent callers give); the on-by-default
   criterion: nothing refused.

Figures: goodput = successful calls/s / C (goal >= 0.9 with shedding) and p99 latency of
admitted (successful) calls / unloaded p99 (goal <= 2x with shedding); beside them, the
server process's CPU (cores used, and CPU per successful call: what refusals cost). Shedding is off by
default in the library; see BENCHMARKS.md for why.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
from _harness import Child, Report, Row, children, command, ms, parser, percentile, run
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
SHEDDERS = ("shedding", "fast onset")
"""The shedding servers: the default policy, and one that counts every persistent queue as an overload."""
WARM_UP = 1.0
"""Seconds of 0.8x load each server gets right before each overload, not measured."""


def cpu_seconds(pid: int, thread: int | None = None) -> float:
    """User + system CPU seconds a process (or one of its threads) has used so far (from /proc)."""
    path = f"/proc/{pid}/stat" if thread is None else f"/proc/{pid}/task/{thread}/stat"
    fields = Path(path).read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def cpu_sample(pid: int) -> tuple[float, float, float]:
    """(server process CPU, its main thread's CPU: the event loop, this client's CPU) so far."""
    return cpu_seconds(pid), cpu_seconds(pid, pid), cpu_seconds(os.getpid())


async def closed_loop(stub: echo_pb2_grpc.EchoAsyncStub, callers: int, seconds: float) -> list[float]:
    """Latencies of the successful calls ``callers`` back-to-back callers completed within ``seconds``.

    Calls still under way when the window closes are awaited but not counted: counting them
    would credit the window with up to ``callers`` calls served after it (about 10 % at 32
    callers and 3 s, which is what earlier runs of this benchmark did).
    """
    latencies: list[float] = []
    start = time.monotonic()
    end = start + seconds

    async def caller() -> None:
        while time.monotonic() < end:
            began = time.monotonic()
            with contextlib.suppress(grpc.aio.AioRpcError):
                await stub.Unary(echo_pb2.EchoRequest(), timeout=5)
                if (ended := time.monotonic()) < end:
                    latencies.append(ended - began)

    await asyncio.gather(*(caller() for _ in range(callers)))
    return latencies


@dataclass
class Load:
    """What one open-loop load saw."""

    latencies: list[float] = field(default_factory=list)
    """Of the successful calls that ended within the window."""
    codes: dict[str, int] = field(default_factory=dict)
    """Of every call started."""
    before_handler: list[float] = field(default_factory=list)
    """Per success: call started (client clock) to handler started (server clock, same machine)."""
    after_handler: list[float] = field(default_factory=list)
    """Per success: handler ended to the client having the reply."""

    def add(self, other: Load) -> None:
        self.latencies += other.latencies
        self.before_handler += other.before_handler
        self.after_handler += other.after_handler
        for code, n in other.codes.items():
            self.codes[code] = self.codes.get(code, 0) + n


async def open_loop(stub: echo_pb2_grpc.EchoAsyncStub, rate: float, seconds: float, poisson: bool = False) -> Load:
    """Start ``rate`` calls/s for ``seconds`` whatever happens: latencies of the successes that
    ended within the window (as for capacity), codes of all the calls started. Evenly paced, or
    with ``poisson`` at random instants (exponential gaps, what many independent callers give)."""
    load = Load()
    codes = load.codes
    start = time.monotonic()
    end = start + seconds

    async def one() -> None:
        began, wall = time.monotonic(), time.time()
        try:
            reply = await stub.Unary(echo_pb2.EchoRequest(), timeout=1.0)
        except grpc.aio.AioRpcError as exc:
            codes[exc.code().name] = codes.get(exc.code().name, 0) + 1
            return
        if (ended := time.monotonic()) < end:
            load.latencies.append(ended - began)
            handler_started, handler_ended = map(float, reply.message.split())  # the server's --stats stamps
            load.before_handler.append(handler_started - wall)
            load.after_handler.append(time.time() - handler_ended)
        codes["OK"] = codes.get("OK", 0) + 1

    tasks: list[asyncio.Task[None]] = []
    draw = random.Random(1) if poisson else None  # seeded: every run offers the same instants

    def gap() -> float:
        return draw.expovariate(rate) if draw else 1 / rate

    next_at = start + gap()
    while (now := time.monotonic()) < end:
        while next_at <= now:
            tasks.append(asyncio.get_running_loop().create_task(one()))
            next_at += gap()
        await asyncio.sleep(0.005)
    await asyncio.gather(*tasks)
    return load


async def main(args: argparse.Namespace, report: Report) -> None:
    seconds = 1.0 if args.smoke else args.seconds
    rounds = 1 if args.smoke else args.rounds
    async with contextlib.AsyncExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="grpcmesh-bench-shed-")))
        url = f"sqlite://{tmp}/registry.db"
        started = await stack.enter_async_context(children())
        fast = json.dumps({**json.loads(args.policy), "arrival_factor": 0})
        flags: dict[str, tuple[str, ...]] = {
            "plain": (),
            "shedding": ("--shedding", "--shedding-policy", args.policy, *args.shedding_server),
            "fast onset": ("--shedding", "--shedding-policy", fast, *args.shedding_server),
        }
        if args.cap:
            flags["grpc cap"] = ("--max-concurrent", str(args.cap))
        servers: dict[str, Child] = {}
        for name, extra in flags.items():
            label = name.replace(" ", "-")
            servers[name] = await start_server(started, url, label, label + "-0", *WORK, "--stats", *extra)
        registry = open_registry(url)
        stack.push_async_callback(registry.close)
        # The client must not hide the server's behaviour: no throttling, no ejection. One more
        # client of the shedding server keeps the mesh's default client-side throttling, to show
        # what a mesh caller gets (it is not one of the figures with a goal).
        no_ejection = OutlierPolicy(consecutive_failures=10**6, success_rate=None, latency_factor=None)
        settings = CallSettings(throttle=ThrottlePolicy(enabled=False), outlier=no_ejection)
        clients = {name: (name, settings) for name in flags}
        clients["throttled"] = ("shedding", CallSettings(outlier=no_ejection))
        stubs = {}
        server_of = {}
        for name, (target, client_settings) in clients.items():
            channel = MeshChannel(registry, target.replace(" ", "-"), settings=client_settings)
            stack.push_async_callback(channel.close)
            await asyncio.wait_for(channel.channel_ready(), 30)
            stubs[name] = echo_pb2_grpc.EchoStub(channel)
            server_of[name] = servers[target]

        async def server_stats(name: str) -> dict[str, Any]:
            """What the server's handlers saw since the last ask (see _semantics_server.py --stats)."""
            await server_of[name].send({"stats": True})
            stats: dict[str, Any] = (await server_of[name].read())["stats"]
            return stats

        unloaded = {name: await closed_loop(stub, 1, min(2.0, seconds)) for name, stub in stubs.items()}
        before = cpu_sample(servers["plain"].pid)
        window = time.monotonic()
        saturated = await closed_loop(stubs["plain"], 32, min(3.0, seconds))
        capacity_cpu = [
            (x - y) / (time.monotonic() - window) for x, y in zip(cpu_sample(servers["plain"].pid), before, strict=True)
        ]
        capacity = len(saturated) / min(3.0, seconds)
        rate = 3 * capacity
        capacities = [capacity]
        overload = {name: Load() for name in stubs}
        cpu = {name: [0.0, 0.0, 0.0] for name in stubs}
        walls = dict.fromkeys(stubs, 0.0)
        waited: dict[str, list[float]] = {name: [] for name in stubs}
        served: dict[str, list[float]] = {name: [] for name in stubs}
        for _ in range(rounds):
            # Capacity again before every round: goodput is divided by the mean of what the machine
            # gave during the run, not by one 3 s reading (it moved by several % between readings).
            capacities.append(len(await closed_loop(stubs["plain"], 32, min(3.0, seconds))) / min(3.0, seconds))
            await asyncio.sleep(1.5)
            for name, stub in stubs.items():
                # A server at work, not an idle one, meets the overload: it has served 0.8x capacity
                # for a second (what shedding learns its capacity from), not counted in the figures.
                await open_loop(stub, BELOW * capacity, WARM_UP)
                await server_stats(name)  # start afresh
                before = cpu_sample(server_of[name].pid)
                window = time.monotonic()
                overload[name].add(await open_loop(stub, rate, seconds))
                walls[name] += time.monotonic() - window
                cpu[name] = [
                    c + x - y for c, x, y in zip(cpu[name], cpu_sample(server_of[name].pid), before, strict=True)
                ]
                stats = await server_stats(name)
                waited[name] += stats["waited"]
                served[name] += stats["served"]
                await asyncio.sleep(1.5)  # let the server drain before the next round
        # The on-by-default criterion: below capacity, shedding must refuse nothing.
        below = {name: Load() for name in SHEDDERS}
        below_random = {name: Load() for name in SHEDDERS}
        for _ in range(rounds):
            for name in SHEDDERS:
                below[name].add(await open_loop(stubs[name], BELOW * capacity, seconds))
                await asyncio.sleep(1.5)
                below_random[name].add(await open_loop(stubs[name], BELOW * capacity, seconds, poisson=True))
                await asyncio.sleep(1.5)

    measured = sum(capacities) / len(capacities)
    report.line(
        f"### Overload: 10 ms CPU + 5 ms await per call; capacity {capacity:.0f} calls/s; offered {rate:.0f} calls/s "
        f"(3x) for {seconds:g} s x {rounds} rounds per server, each right after {WARM_UP:g} s at {BELOW:g}x (not "
        "measured), 1 s deadline"
    )
    report.line()
    report.line(
        f"Capacity: 32 closed-loop callers on the server without shedding, calls completed within "
        f"{min(3.0, seconds):g} s; meanwhile that server used {capacity_cpu[0]:.2f} cores (event loop "
        f"{capacity_cpu[1]:.2f}) and the client {capacity_cpu[2]:.2f}. Goodput counts the successes that "
        f"ended within each {seconds:g} s window, as capacity does. Capacity was measured again before "
        f"every round ({', '.join(f'{c:.0f}' for c in capacities)} calls/s); goodput is divided by their "
        f"mean, {measured:.0f} calls/s, and the offered load stays 3x the first."
    )
    report.line()
    rows = []
    breakdown = []
    figures = {}
    labels = {
        "plain": "no shedding",
        "shedding": "shedding",
        "fast onset": "shedding, `arrival_factor: 0` (fast onset)",
        "grpc cap": f"grpc maximum_concurrent_rpcs={args.cap}",
        "throttled": "shedding, client throttling on (the mesh default)",
    }
    base_p99 = percentile([x for lat in unloaded.values() for x in lat], 99)  # same work: one baseline
    for name, load in overload.items():
        goodput = len(load.latencies) / (seconds * rounds) / measured
        p99 = percentile(load.latencies, 99)
        figures[name] = (goodput, p99 / base_p99)
        process, loop, client = (x / walls[name] for x in cpu[name])
        refused = load.codes.get("RESOURCE_EXHAUSTED", 0) / walls[name]
        rows.append(
            [
                labels[name],
                ms(percentile(unloaded[name], 50)),
                ms(percentile(unloaded[name], 99)),
                ms(base_p99),
                f"{goodput:.2f}",
                ms(percentile(load.latencies, 50)),
                ms(p99),
                f"{p99 / base_p99:.1f}x",
                f"{process:.2f} (loop {loop:.2f})",
                f"{cpu[name][0] * 1000 / max(1, load.codes.get('OK', 0)):.1f} ms",
                f"{refused:.0f}",
                f"{client:.2f}",
                ", ".join(f"{c} {n}" for c, n in sorted(load.codes.items())),
            ]
        )
        breakdown.append(
            [
                labels[name],
                *(
                    f"{ms(percentile(values, 50))} / {ms(percentile(values, 99))}"
                    for values in (load.before_handler, waited[name], served[name], load.after_handler)
                ),
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
            "refused/s",
            "client CPU (cores)",
            "outcomes",
        ],
        rows,
    )
    report.line(
        "Where an admitted call's time goes (p50 / p99): the client starting it to its handler starting "
        "(wall clocks of the same machine), the part of that wait the server can see (the timeout sent in "
        "`x-mesh-timeout-ms` less `time_remaining()`: the signal shedding uses), the handler itself, and its "
        "end to the client having the reply."
    )
    report.line()
    report.table(
        ["server", "call start to handler", "wait seen by the server", "handler", "handler end to client"],
        breakdown,
    )
    for name in SHEDDERS:
        report.line(
            f"Below capacity ({BELOW:g}x, {BELOW * capacity:.0f} calls/s, same rounds) the server with "
            f"{labels[name]} answered: "
            + ", ".join(f"{c} {n}" for c, n in sorted(below[name].codes.items()))
            + "; with the same rate at random instants (Poisson arrivals): "
            + ", ".join(f"{c} {n}" for c, n in sorted(below_random[name].codes.items()))
        )
        report.line()
    goodput, ratio = figures["shedding"]
    cmd = command(SCRIPT, "--seconds", str(args.seconds), "--rounds", str(args.rounds), "--cap", str(args.cap))
    if args.policy != "{}":
        cmd += f" --policy '{args.policy}'"
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
    fast_goodput, fast_ratio = figures["fast onset"]
    report.add(
        Row(
            "server at 3x capacity, shedding with `arrival_factor: 0` (fast onset): goodput, admitted p99",
            ">= 0.9, <= 2x",
            f"goodput {fast_goodput:.2f}, p99 {fast_ratio:.1f}x unloaded",
            fast_goodput >= 0.9 and fast_ratio <= 2.0,
            cmd,
        )
    )
    throttled_goodput, throttled_ratio = figures["throttled"]
    report.add(
        Row(
            "server at 3x capacity, shedding, mesh clients with their default throttling: goodput, admitted p99",
            "(reported beside the figures above)",
            f"goodput {throttled_goodput:.2f}, p99 {throttled_ratio:.1f}x unloaded; "
            f"{overload['throttled'].codes.get('UNAVAILABLE', 0)} calls refused by the client itself",
            None,
            cmd,
        )
    )
    for name in SHEDDERS:
        which = "" if name == "shedding" else ", `arrival_factor: 0`"
        for pattern, loads in (("evenly paced", below), ("random (Poisson) arrivals", below_random)):
            refused = loads[name].codes.get("RESOURCE_EXHAUSTED", 0)
            report.add(
                Row(
                    f"server at {BELOW:g}x capacity, {pattern}: calls refused by shedding{which}",
                    "0 (on by default only if none)",
                    f"{refused} of {sum(loads[name].codes.values())}",
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
