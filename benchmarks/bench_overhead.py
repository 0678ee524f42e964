"""Figure 1, call overhead: a MeshChannel against a bare grpc.aio channel to the same servers.

Echo servers run in processes of their own (so the client process is the one measured);
the client process holds, side by side:

* ``bare x1``: ``grpc.aio.insecure_channel`` to server A (the baseline);
* ``mesh x1``: a ``MeshChannel`` whose registry lists only server A;
* ``bare x3``: one grpc.aio channel to A, B and C with grpc's own ``round_robin`` (baseline for 3);
* ``mesh x3``: a ``MeshChannel`` whose registry lists A, B and C;
* ``mesh x1 + middleware``: a ``MeshChannel`` with the client auth, metrics, tracing and
  logging interceptors, to server A' which runs the server half of them (every call traced),
  and the same with 10% of calls traced (the seed's ``sample_rate: 0.1``); baseline ``bare x1``.
  See ``_middleware.py`` for how the stack is set up.

Every configuration drives the same unary load (64 calls in flight, one generated stub, the
same request) for the same time; rounds are interleaved in a shuffled order so machine drift
hits all of them alike. Streaming throughput (server-streaming and bidirectional messages/s
on 8 concurrent streams) compares ``mesh x1`` with ``bare x1`` the same way.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.util
import os
import random
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any

import grpc
from _harness import BENCH_DIR, Child, Report, Row, children, command, median, parser, percentile, run

from grpcmesh import ServiceInstance, open_registry
from grpcmesh.client import MeshChannel
from grpcmesh.protos import echo_pb2, echo_pb2_grpc

SCRIPT = "bench_overhead.py"
GOAL_PLAIN = 0.95
GOAL_MIDDLEWARE = 0.80
STREAMS = 8


def middleware_available() -> bool:
    return importlib.util.find_spec("_middleware") is not None and _middleware_ready()


def _middleware_ready() -> bool:
    try:
        import _middleware

        return bool(_middleware.available())
    except ImportError:
        return False


async def unary_load(stub: echo_pb2_grpc.EchoStub, seconds: float, concurrency: int) -> tuple[int, list[float], float]:
    """``concurrency`` callers looping for ``seconds``; returns (calls, latencies, elapsed)."""
    request = echo_pb2.EchoRequest(message="x" * 32)
    latencies: list[float] = []
    started = time.perf_counter()
    end = started + seconds

    async def caller() -> None:
        while True:
            t0 = time.perf_counter()
            if t0 >= end:
                return
            await stub.Unary(request)
            latencies.append(time.perf_counter() - t0)

    await asyncio.gather(*(caller() for _ in range(concurrency)))
    return len(latencies), latencies, time.perf_counter() - started


async def server_stream_load(stub: echo_pb2_grpc.EchoStub, seconds: float, messages: int) -> tuple[int, float]:
    request = echo_pb2.EchoRequest(message="x" * 32, count=messages)
    received = 0
    started = time.perf_counter()
    end = started + seconds

    async def streamer() -> None:
        nonlocal received
        while time.perf_counter() < end:
            async for _ in stub.ServerStream(request):
                received += 1

    await asyncio.gather(*(streamer() for _ in range(STREAMS)))
    return received, time.perf_counter() - started


async def bidi_load(stub: echo_pb2_grpc.EchoStub, seconds: float, messages: int) -> tuple[int, float]:
    received = 0
    started = time.perf_counter()
    end = started + seconds

    async def requests() -> AsyncIterator[echo_pb2.EchoRequest]:
        for _ in range(messages):
            yield echo_pb2.EchoRequest(message="x" * 32)

    async def streamer() -> None:
        nonlocal received
        while time.perf_counter() < end:
            async for _ in stub.BidiStream(requests()):
                received += 1

    await asyncio.gather(*(streamer() for _ in range(STREAMS)))
    return received, time.perf_counter() - started


class Sample:
    """One configuration's results over the rounds: rate and client CPU per round, latencies."""

    def __init__(self) -> None:
        self.rates: list[float] = []
        self.cpu_us: list[float] = []
        self.latencies: list[float] = []


async def interleave(
    configs: dict[str, Callable[[], Coroutine[Any, Any, tuple[float, int, list[float]]]]], rounds: int, seed: int
) -> dict[str, Sample]:
    """Run each config once per round, in a shuffled order.

    Each config returns (rate, operations, latencies); the client process's CPU time per
    operation is measured around it, since on a shared machine CPU per call is far steadier
    than throughput.
    """
    results = {name: Sample() for name in configs}
    rng = random.Random(seed)
    for _ in range(rounds):
        order = list(configs)
        rng.shuffle(order)
        for name in order:
            cpu_before = sum(os.times()[:2])
            rate, operations, latencies = await configs[name]()
            cpu = sum(os.times()[:2]) - cpu_before
            results[name].rates.append(rate)
            results[name].cpu_us.append(cpu / max(operations, 1) * 1e6)
            results[name].latencies.extend(latencies)
    return results


def paired_ratio(results: dict[str, Sample], name: str, base: str) -> float:
    """Median over rounds of (rate / baseline's rate in the same round): drift cancels."""
    return median([a / b for a, b in zip(results[name].rates, results[base].rates, strict=True)])


async def start_server(started: list[Child], instance_id: str, loop: str, *extra: str) -> int:
    child = await Child.start(
        f"echo {instance_id}", str(BENCH_DIR / "_echo_server.py"), "--instance-id", instance_id, "--loop", loop, *extra
    )
    started.append(child)
    message = await child.read(timeout=60)
    return int(message["port"])


async def main(args: argparse.Namespace, report: Report) -> None:
    seconds = 0.3 if args.smoke else args.seconds
    rounds = 2 if args.smoke else args.rounds
    concurrency = 8 if args.smoke else args.concurrency
    messages = 20 if args.smoke else 200
    with_middleware = middleware_available()
    if not with_middleware:
        report.line("middleware package not present in this tree: the 'with middleware' row is skipped")
    async with contextlib.AsyncExitStack() as stack:
        started = await stack.enter_async_context(children())
        ports = await asyncio.gather(*(start_server(started, f"echo-{c}", args.loop) for c in "abc"))
        registry = open_registry("memory://bench-overhead")
        stack.push_async_callback(registry.close)
        for k, port in enumerate(ports):
            instance = ServiceInstance(name="echo-three", id=f"echo-{'abc'[k]}", address="127.0.0.1", port=port)
            await registry.register(instance)
        await registry.register(ServiceInstance(name="echo-one", id="echo-a", address="127.0.0.1", port=ports[0]))

        bare1 = grpc.aio.insecure_channel(f"127.0.0.1:{ports[0]}")
        bare3 = grpc.aio.insecure_channel(
            "ipv4:" + ",".join(f"127.0.0.1:{p}" for p in ports), options=[("grpc.lb_policy_name", "round_robin")]
        )
        mesh1 = MeshChannel(registry, "echo-one")
        mesh3 = MeshChannel(registry, "echo-three")
        channels: dict[str, grpc.aio.Channel] = {"bare x1": bare1, "mesh x1": mesh1, "bare x3": bare3, "mesh x3": mesh3}
        if with_middleware:
            import _middleware

            for label, rate in (("", 1.0), (", 10% traced", 0.1)):
                service = f"echo-mw-{int(rate * 100)}"
                mw_port = await start_server(started, service, args.loop, "--middleware", "--sample-rate", str(rate))
                await registry.register(ServiceInstance(name=service, id=service, address="127.0.0.1", port=mw_port))
                channels[f"mesh x1 + middleware{label}"] = MeshChannel(
                    registry, service, interceptors=_middleware.client_interceptors(rate)
                )
        for channel in channels.values():
            stack.push_async_callback(channel.close)
        stubs = {name: echo_pb2_grpc.EchoStub(channel) for name, channel in channels.items()}

        def unary(name: str) -> Callable[[], Coroutine[Any, Any, tuple[float, int, list[float]]]]:
            async def go() -> tuple[float, int, list[float]]:
                calls, latencies, elapsed = await unary_load(stubs[name], seconds, concurrency)
                return calls / elapsed, calls, latencies

            return go

        def streaming(name: str, kind: str) -> Callable[[], Coroutine[Any, Any, tuple[float, int, list[float]]]]:
            async def go() -> tuple[float, int, list[float]]:
                load = server_stream_load if kind == "server" else bidi_load
                received, elapsed = await load(stubs[name], seconds / 2, messages)
                return received / elapsed, received, []

            return go

        # Warm-up: connect everything, let the JIT-less interpreter settle its caches.
        await interleave({name: unary(name) for name in stubs}, 1, seed=0)
        unary_results = await interleave({name: unary(name) for name in stubs}, rounds, seed=1)
        stream_configs = {
            f"{name} {kind}": streaming(name, kind) for name in ("bare x1", "mesh x1") for kind in ("server", "bidi")
        }
        stream_results = await interleave(stream_configs, rounds, seed=2)

    report.line(
        f"### Call overhead: unary, {concurrency} calls in flight, {rounds} interleaved rounds of {seconds:g} s each"
    )
    report.line()
    report.line("Ratio = median over rounds of (calls/s / baseline's calls/s in the same round). Client CPU is the")
    report.line("client process's CPU time (all threads) per call: steadier than throughput on a shared machine.")
    report.line()
    report.table(
        ["configuration", "calls/s (median)", "ratio to baseline", "p50", "p99", "client CPU/call", "rounds (calls/s)"],
        [
            [
                name,
                f"{median(sample.rates):.0f}",
                f"{paired_ratio(unary_results, name, baseline(name)):.3f}",
                f"{percentile(sample.latencies, 50) * 1000:.2f} ms",
                f"{percentile(sample.latencies, 99) * 1000:.2f} ms",
                f"{median(sample.cpu_us):.0f} µs",
                ", ".join(f"{r:.0f}" for r in sample.rates),
            ]
            for name, sample in unary_results.items()
        ],
    )
    report.line(f"### Streaming throughput: {STREAMS} concurrent streams of {messages} messages, {rounds} rounds")
    report.line()
    report.table(
        ["configuration", "messages/s (median)", "ratio to bare", "client CPU/message", "rounds"],
        [
            [
                name,
                f"{median(sample.rates):.0f}",
                f"{paired_ratio(stream_results, name, name.replace('mesh', 'bare')):.3f}",
                f"{median(sample.cpu_us):.1f} µs",
                ", ".join(f"{r:.0f}" for r in sample.rates),
            ]
            for name, sample in stream_results.items()
        ],
    )

    for name, sample in unary_results.items():
        if name.startswith("bare"):
            continue
        base = unary_results[baseline(name)]
        ratio = paired_ratio(unary_results, name, baseline(name))
        cpu_ratio = median(sample.cpu_us) / median(base.cpu_us)
        goal = GOAL_MIDDLEWARE if "middleware" in name else GOAL_PLAIN
        report.add(
            Row(
                figure=f"1. call overhead, unary, {name} vs {baseline(name)}",
                goal=f">= {goal:.2f}x calls/s",
                measured=(
                    f"{ratio:.3f}x ({median(sample.rates):.0f} vs {median(base.rates):.0f} calls/s); "
                    f"p50 {msf(sample.latencies, 50)} vs {msf(base.latencies, 50)}, "
                    f"p99 {msf(sample.latencies, 99)} vs {msf(base.latencies, 99)}; "
                    f"client CPU/call {cpu_ratio:.2f}x"
                ),
                met=ratio >= goal,
                command=command(SCRIPT),
                details={"ratio": ratio, "cpu_ratio": cpu_ratio},
            )
        )
    for kind in ("server", "bidi"):
        mesh_name, bare_name = f"mesh x1 {kind}", f"bare x1 {kind}"
        ratio = paired_ratio(stream_results, mesh_name, bare_name)
        cpu_ratio = median(stream_results[mesh_name].cpu_us) / median(stream_results[bare_name].cpu_us)
        report.add(
            Row(
                figure=f"1. call overhead, {kind}-streaming messages/s, mesh x1 vs bare x1",
                goal=f">= {GOAL_PLAIN:.2f}x messages/s",
                measured=(
                    f"{ratio:.3f}x ({median(stream_results[mesh_name].rates):.0f} vs "
                    f"{median(stream_results[bare_name].rates):.0f} messages/s); client CPU/message {cpu_ratio:.2f}x"
                ),
                met=ratio >= GOAL_PLAIN,
                command=command(SCRIPT),
                details={"ratio": ratio, "cpu_ratio": cpu_ratio},
            )
        )


def msf(latencies: list[float], q: float) -> str:
    return f"{percentile(latencies, q) * 1000:.2f} ms"


def baseline(name: str) -> str:
    return "bare x3" if "x3" in name else "bare x1"


if __name__ == "__main__":
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--seconds", type=float, default=1.0, help="length of one configuration's round")
    p.add_argument("--rounds", type=int, default=9)
    p.add_argument("--concurrency", type=int, default=64, help="calls in flight")
    run(main, p.parse_args(), SCRIPT)
