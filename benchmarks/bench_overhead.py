"""Figure 1, call overhead: a MeshChannel against a bare grpc.aio channel to the same servers.

Echo servers run in processes of their own (so the client process is the one measured);
the client process holds, side by side:

* ``bare x1``: ``grpc.aio.insecure_channel`` to server A (the baseline);
* ``mesh x1``: a ``MeshChannel`` whose registry lists only server A;
* ``bare x3``: one grpc.aio channel to A, B and C with grpc's own ``round_robin`` (baseline for 3);
* ``mesh x3``: a ``MeshChannel`` whose registry lists A, B and C;
* ``mesh x1 + middleware`` (when the middleware package is present): a ``MeshChannel`` with the
  client auth, metrics, tracing and logging interceptors, to server A' which runs the server
  half of them; its baseline is ``bare x1``.

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


async def interleave(
    configs: dict[str, Callable[[], Coroutine[Any, Any, tuple[float, list[float]]]]], rounds: int, seed: int
) -> dict[str, tuple[list[float], list[float]]]:
    """Run each config once per round, in a shuffled order; (rates per round, all latencies)."""
    results: dict[str, tuple[list[float], list[float]]] = {name: ([], []) for name in configs}
    rng = random.Random(seed)
    for _ in range(rounds):
        order = list(configs)
        rng.shuffle(order)
        for name in order:
            rate, latencies = await configs[name]()
            results[name][0].append(rate)
            results[name][1].extend(latencies)
    return results


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

            mw_port = await start_server(started, "echo-mw", args.loop, "--mode", "plain", "--middleware")
            await registry.register(ServiceInstance(name="echo-mw", id="echo-mw", address="127.0.0.1", port=mw_port))
            channels["mesh x1 + middleware"] = MeshChannel(
                registry, "echo-mw", interceptors=_middleware.client_interceptors()
            )
        for channel in channels.values():
            stack.push_async_callback(channel.close)
        stubs = {name: echo_pb2_grpc.EchoStub(channel) for name, channel in channels.items()}

        def unary(name: str) -> Callable[[], Coroutine[Any, Any, tuple[float, list[float]]]]:
            async def go() -> tuple[float, list[float]]:
                calls, latencies, elapsed = await unary_load(stubs[name], seconds, concurrency)
                return calls / elapsed, latencies

            return go

        def streaming(name: str, kind: str) -> Callable[[], Coroutine[Any, Any, tuple[float, list[float]]]]:
            async def go() -> tuple[float, list[float]]:
                load = server_stream_load if kind == "server" else bidi_load
                received, elapsed = await load(stubs[name], seconds / 2, messages)
                return received / elapsed, []

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
    report.table(
        ["configuration", "calls/s (median of rounds)", "ratio to baseline", "p50", "p99", "rounds (calls/s)"],
        [
            [
                name,
                f"{median(rates):.0f}",
                f"{median(rates) / median(unary_results[baseline(name)][0]):.3f}",
                f"{percentile(lat, 50) * 1000:.2f} ms",
                f"{percentile(lat, 99) * 1000:.2f} ms",
                ", ".join(f"{r:.0f}" for r in rates),
            ]
            for name, (rates, lat) in unary_results.items()
        ],
    )
    report.line(f"### Streaming throughput: {STREAMS} concurrent streams of {messages} messages, {rounds} rounds")
    report.line()
    report.table(
        ["configuration", "messages/s (median)", "ratio to bare", "rounds"],
        [
            [
                name,
                f"{median(rates):.0f}",
                f"{median(rates) / median(stream_results[name.replace('mesh', 'bare')][0]):.3f}",
                ", ".join(f"{r:.0f}" for r in rates),
            ]
            for name, (rates, _) in stream_results.items()
        ],
    )

    for name, (rates, lat) in unary_results.items():
        if name.startswith("bare"):
            continue
        base_rates, base_lat = unary_results[baseline(name)]
        ratio = median(rates) / median(base_rates)
        goal = GOAL_MIDDLEWARE if "middleware" in name else GOAL_PLAIN
        report.add(
            Row(
                figure=f"1. call overhead, unary, {name} vs {baseline(name)}",
                goal=f">= {goal:.2f}x calls/s",
                measured=(
                    f"{ratio:.3f}x ({median(rates):.0f} vs {median(base_rates):.0f} calls/s); "
                    f"p50 {percentile(lat, 50) * 1000:.2f} vs {percentile(base_lat, 50) * 1000:.2f} ms, "
                    f"p99 {percentile(lat, 99) * 1000:.2f} vs {percentile(base_lat, 99) * 1000:.2f} ms"
                ),
                met=ratio >= goal,
                command=command(SCRIPT),
                details={"ratio": ratio},
            )
        )
    for kind in ("server", "bidi"):
        mesh_rates = stream_results[f"mesh x1 {kind}"][0]
        bare_rates = stream_results[f"bare x1 {kind}"][0]
        ratio = median(mesh_rates) / median(bare_rates)
        report.add(
            Row(
                figure=f"1. call overhead, {kind}-streaming messages/s, mesh x1 vs bare x1",
                goal=f">= {GOAL_PLAIN:.2f}x messages/s",
                measured=f"{ratio:.3f}x ({median(mesh_rates):.0f} vs {median(bare_rates):.0f} messages/s)",
                met=ratio >= GOAL_PLAIN,
                command=command(SCRIPT),
                details={"ratio": ratio},
            )
        )


def baseline(name: str) -> str:
    return "bare x3" if "x3" in name else "bare x1"


if __name__ == "__main__":
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--seconds", type=float, default=2.0, help="length of one configuration's round")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--concurrency", type=int, default=64, help="calls in flight")
    run(main, p.parse_args(), SCRIPT)
