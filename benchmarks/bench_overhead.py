"""Figure 1, call overhead: a MeshChannel against a bare grpc.aio channel to the same servers.

Echo servers run in processes of their own (so the client's and each server's CPU are
measured apart); the client process holds, side by side:

* ``bare x1``: ``grpc.aio.insecure_channel`` to plain server A (the baseline);
* ``mesh x1``: a ``MeshChannel`` whose registry lists only server A;
* ``bare x3``: one grpc.aio channel to A, B and C with grpc's own ``round_robin`` (baseline for 3);
* ``mesh x3``: a ``MeshChannel`` whose registry lists A, B and C;
* ``mesh full, ...``: a ``MeshChannel`` running the mesh's client concerns (auth + metrics +
  tracing + access log, as ``Mesh`` configures them from its config) to a ``MeshServer``
  running the server half, at 10% and 100% traced, and with every call logged;
* ``mesh <concern> alone``: the same with only that concern switched on (tracing at 10%);
* ``peer full, 10% traced``: what a Python user assembles without grpcmesh on a bare channel
  and a bare grpc.aio server (opentelemetry-instrumentation-grpc + py-async-grpc-prometheus
  + structlog access log + shared-key auth interceptors; see ``_middleware.py``).

Every configuration drives the same unary load (64 calls in flight, one generated stub, the
same request) for the same time; rounds are interleaved in a shuffled order so machine drift
hits all of them alike, and every ratio is the median of per-round ratios. Client and server
CPU per call are measured around each round (``os.times`` and ``/proc/PID/stat``). Streaming
throughput (server-streaming and bidirectional messages/s on 8 concurrent streams) compares
``mesh x1`` with ``bare x1`` the same way.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import time
from collections.abc import AsyncIterator, Callable, Coroutine, Sequence
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


GOAL_FULL_10 = 0.80
GOAL_FULL_ALL = 0.70
GOAL_ALONE = 0.93
GOAL_PEER = 1.4

STACKED = (
    # label, stack, sample rate, access log
    ("mesh full, 10% traced", "full", 0.1, "sampled"),
    ("mesh full, all traced", "full", 1.0, "sampled"),
    ("mesh full, 10% traced, every call logged", "full", 0.1, "all"),
    ("mesh tracing alone (10%)", "tracing", 0.1, "sampled"),
    ("mesh logging alone", "logging", 0.1, "sampled"),
    ("mesh metrics alone", "metrics", 0.1, "sampled"),
    ("mesh auth alone", "auth", 0.1, "sampled"),
)
PEER = "peer full, 10% traced"

_TICK = os.sysconf("SC_CLK_TCK")


def proc_cpu(pids: Sequence[int]) -> float:
    """utime + stime of processes, in seconds."""
    total = 0
    for pid in pids:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])
    return total / _TICK


def middleware_available() -> bool:
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
    """One configuration's results over the rounds: rate, client and server CPU per round, latencies."""

    def __init__(self) -> None:
        self.rates: list[float] = []
        self.cpu_us: list[float] = []
        self.server_cpu_us: list[float] = []
        self.latencies: list[float] = []


Load = Callable[[], Coroutine[Any, Any, tuple[float, int, list[float]]]]


async def interleave(configs: dict[str, tuple[Load, Sequence[int]]], rounds: int, seed: int) -> dict[str, Sample]:
    """Run each config once per round, in a shuffled order.

    Each config is (load, server pids); the load returns (rate, operations, latencies). The
    client process's and the servers' CPU time per operation are measured around it, since
    on a shared machine CPU per call is far steadier than throughput.
    """
    results = {name: Sample() for name in configs}
    rng = random.Random(seed)
    for _ in range(rounds):
        order = list(configs)
        rng.shuffle(order)
        for name in order:
            load, pids = configs[name]
            cpu_before, server_before = sum(os.times()[:2]), proc_cpu(pids)
            rate, operations, latencies = await load()
            cpu, server_cpu = sum(os.times()[:2]) - cpu_before, proc_cpu(pids) - server_before
            results[name].rates.append(rate)
            results[name].cpu_us.append(cpu / max(operations, 1) * 1e6)
            results[name].server_cpu_us.append(server_cpu / max(operations, 1) * 1e6)
            results[name].latencies.extend(latencies)
    return results


def paired_ratio(results: dict[str, Sample], name: str, base: str) -> float:
    """Median over rounds of (rate / baseline's rate in the same round): drift cancels."""
    return median([a / b for a, b in zip(results[name].rates, results[base].rates, strict=True)])


async def start_server(started: list[Child], instance_id: str, loop: str, *extra: str) -> tuple[int, int]:
    """(port, pid) of a new echo server process."""
    child = await Child.start(
        f"echo {instance_id}", str(BENCH_DIR / "_echo_server.py"), "--instance-id", instance_id, "--loop", loop, *extra
    )
    started.append(child)
    message = await child.read(timeout=60)
    return int(message["port"]), child.pid


async def main(args: argparse.Namespace, report: Report) -> None:
    seconds = 0.3 if args.smoke else args.seconds
    rounds = 2 if args.smoke else args.rounds
    concurrency = 8 if args.smoke else args.concurrency
    messages = 20 if args.smoke else 200
    with_middleware = middleware_available()
    if not with_middleware:
        report.line("opentelemetry is not installed ([otel] extra): the middleware rows are skipped")
    import _middleware

    with_peer = with_middleware and _middleware.peer_available()
    if with_middleware and not with_peer:
        report.line("the peer packages are not installed ([bench] extra): the peer row is skipped")
    async with contextlib.AsyncExitStack() as stack:
        started = await stack.enter_async_context(children())
        servers = await asyncio.gather(*(start_server(started, f"echo-{c}", args.loop) for c in "abc"))
        ports, pids = [p for p, _ in servers], [pid for _, pid in servers]
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
        channels: dict[str, tuple[grpc.aio.Channel, Sequence[int]]] = {
            "bare x1": (bare1, pids[:1]),
            "mesh x1": (MeshChannel(registry, "echo-one"), pids[:1]),
            "bare x3": (bare3, pids),
            "mesh x3": (MeshChannel(registry, "echo-three"), pids),
        }
        if with_middleware:  # one after the other: forking while grpc's threads run needs care
            for k, (label, kind, rate, access_log) in enumerate(STACKED):
                service = f"echo-stack-{k}"
                port, pid = await start_server(
                    started, service, args.loop, "--stack", kind, "--sample-rate", str(rate), "--access-log", access_log
                )
                await registry.register(ServiceInstance(name=service, id=service, address="127.0.0.1", port=port))
                observer = _middleware.client_observer(kind, rate, access_log)
                channels[label] = (MeshChannel(registry, service, observer=observer), [pid])
        if with_peer:
            port, pid = await start_server(started, "echo-peer", args.loop, "--stack", "peer", "--sample-rate", "0.1")
            interceptors = _middleware.peer_client_interceptors(0.1)
            channels[PEER] = (grpc.aio.insecure_channel(f"127.0.0.1:{port}", interceptors=interceptors), [pid])
        for channel, _ in channels.values():
            stack.push_async_callback(channel.close)
        stubs = {name: (echo_pb2_grpc.EchoStub(channel), pids) for name, (channel, pids) in channels.items()}

        def unary(name: str) -> tuple[Load, Sequence[int]]:
            stub, server_pids = stubs[name]

            async def go() -> tuple[float, int, list[float]]:
                calls, latencies, elapsed = await unary_load(stub, seconds, concurrency)
                return calls / elapsed, calls, latencies

            return go, server_pids

        def streaming(name: str, kind: str) -> tuple[Load, Sequence[int]]:
            stub, server_pids = stubs[name]

            async def go() -> tuple[float, int, list[float]]:
                load = server_stream_load if kind == "server" else bidi_load
                received, elapsed = await load(stub, seconds / 2, messages)
                return received / elapsed, received, []

            return go, server_pids

        # Warm-up: connect everything, let the interpreter settle its caches (a short round each).
        warm_up, seconds = seconds, min(seconds, 0.3)
        await interleave({name: unary(name) for name in stubs}, 1, seed=0)
        seconds = warm_up
        unary_results = await interleave({name: unary(name) for name in stubs}, rounds, seed=1)
        stream_configs = {
            f"{name} {kind}": streaming(name, kind) for name in ("bare x1", "mesh x1") for kind in ("server", "bidi")
        }
        stream_results = await interleave(stream_configs, rounds, seed=2)

    report.line(
        f"### Call overhead: unary, {concurrency} calls in flight, {rounds} interleaved rounds of {seconds:g} s each"
    )
    report.line()
    report.line("Ratio = median over rounds of (calls/s / baseline's calls/s in the same round). CPU/call is the")
    report.line("process's CPU time (all threads) per call, client and server apart: steadier than throughput")
    report.line("on a shared machine.")
    report.line()
    report.table(
        [
            "configuration",
            "calls/s (median)",
            "ratio to baseline",
            "p50",
            "p99",
            "client CPU/call",
            "server CPU/call",
            "rounds (calls/s)",
        ],
        [
            [
                name,
                f"{median(sample.rates):.0f}",
                f"{paired_ratio(unary_results, name, baseline(name)):.3f}",
                f"{percentile(sample.latencies, 50) * 1000:.2f} ms",
                f"{percentile(sample.latencies, 99) * 1000:.2f} ms",
                f"{median(sample.cpu_us):.0f} µs",
                f"{median(sample.server_cpu_us):.0f} µs",
                ", ".join(f"{r:.0f}" for r in sample.rates),
            ]
            for name, sample in unary_results.items()
        ],
    )
    report.line(f"### Streaming throughput: {STREAMS} concurrent streams of {messages} messages, {rounds} rounds")
    report.line()
    report.table(
        ["configuration", "messages/s (median)", "ratio to bare", "client CPU/message", "server CPU/message", "rounds"],
        [
            [
                name,
                f"{median(sample.rates):.0f}",
                f"{paired_ratio(stream_results, name, name.replace('mesh', 'bare')):.3f}",
                f"{median(sample.cpu_us):.1f} µs",
                f"{median(sample.server_cpu_us):.1f} µs",
                ", ".join(f"{r:.0f}" for r in sample.rates),
            ]
            for name, sample in stream_results.items()
        ],
    )

    for name, sample in unary_results.items():
        if name.startswith("bare") or name == PEER:
            continue
        base = unary_results[baseline(name)]
        ratio = paired_ratio(unary_results, name, baseline(name))
        goal = goal_of(name)
        report.add(
            Row(
                figure=f"1. call overhead, unary, {name} vs {baseline(name)}",
                goal="(reported beside the default)" if goal is None else f">= {goal:.2f}x calls/s",
                measured=(
                    f"{ratio:.3f}x ({median(sample.rates):.0f} vs {median(base.rates):.0f} calls/s); "
                    f"p50 {msf(sample.latencies, 50)} vs {msf(base.latencies, 50)}; "
                    f"{cpu_pair(sample, base)}"
                ),
                met=None if goal is None else ratio >= goal,
                command=command(SCRIPT),
                details={"ratio": ratio, **cpu_details(sample, base)},
            )
        )
    full = "mesh full, 10% traced"
    if PEER in unary_results and full in unary_results:
        mesh, peer = unary_results[full], unary_results[PEER]
        ratio = paired_ratio(unary_results, full, PEER)
        report.add(
            Row(
                figure="1. call overhead, unary, mesh full stack vs the peer stack (both 10% traced)",
                goal=f">= {GOAL_PEER:.2f}x the peer's calls/s",
                measured=(
                    f"{ratio:.3f}x ({median(mesh.rates):.0f} vs {median(peer.rates):.0f} calls/s; peer "
                    f"{paired_ratio(unary_results, PEER, 'bare x1'):.3f}x bare); {cpu_pair(mesh, peer)}"
                ),
                met=ratio >= GOAL_PEER,
                command=command(SCRIPT),
                details={"ratio": ratio, **cpu_details(mesh, peer)},
            )
        )
    for kind in ("server", "bidi"):
        mesh_name, bare_name = f"mesh x1 {kind}", f"bare x1 {kind}"
        ratio = paired_ratio(stream_results, mesh_name, bare_name)
        mesh_s, bare_s = stream_results[mesh_name], stream_results[bare_name]
        report.add(
            Row(
                figure=f"1. call overhead, {kind}-streaming messages/s, mesh x1 vs bare x1",
                goal=f">= {GOAL_PLAIN:.2f}x messages/s",
                measured=(
                    f"{ratio:.3f}x ({median(mesh_s.rates):.0f} vs {median(bare_s.rates):.0f} messages/s); "
                    f"{cpu_pair(mesh_s, bare_s, 'message')}"
                ),
                met=ratio >= GOAL_PLAIN,
                command=command(SCRIPT),
                details={"ratio": ratio, **cpu_details(mesh_s, bare_s)},
            )
        )


def goal_of(name: str) -> float | None:
    """The issue's goal for a row; ``None`` for rows shown for comparison only."""
    if "every call logged" in name:
        return None
    if "full" in name:
        return GOAL_FULL_ALL if "all traced" in name else GOAL_FULL_10
    if "alone" in name:
        return GOAL_ALONE
    return GOAL_PLAIN


def cpu_pair(sample: Sample, base: Sample, unit: str = "call") -> str:
    client, server = median(sample.cpu_us), median(sample.server_cpu_us)
    base_client, base_server = median(base.cpu_us), median(base.server_cpu_us)
    return (
        f"CPU/{unit} client {client:.0f} vs {base_client:.0f} µs ({client / base_client:.2f}x), "
        f"server {server:.0f} vs {base_server:.0f} µs ({server / max(base_server, 1e-9):.2f}x)"
    )


def cpu_details(sample: Sample, base: Sample) -> dict[str, float]:
    return {
        "client_cpu_us": median(sample.cpu_us),
        "server_cpu_us": median(sample.server_cpu_us),
        "base_client_cpu_us": median(base.cpu_us),
        "base_server_cpu_us": median(base.server_cpu_us),
    }


def msf(latencies: list[float], q: float) -> str:
    return f"{percentile(latencies, q) * 1000:.2f} ms"


def baseline(name: str) -> str:
    return "bare x3" if "x3" in name else "bare x1"


if __name__ == "__main__":
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--seconds", type=float, default=1.0, help="length of one configuration's round")
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--concurrency", type=int, default=64, help="calls in flight")
    run(main, p.parse_args(), SCRIPT)
