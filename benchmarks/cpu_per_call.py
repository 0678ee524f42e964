"""CPU time per unary call, client process and server process, for the call-overhead configurations.

Throughput on this shared 2-core machine swings by ±30% between seconds; CPU time per call
does not, so this is the number to compare before/after a change to the hot path. Each
configuration makes ``--calls`` calls (64 in flight) per round, rounds interleaved; the
server's CPU is read from ``/proc/PID/stat`` (its own process, so only its work counts).

    .venv/bin/python benchmarks/cpu_per_call.py [--calls 3000] [--rounds 3] [--alone auth,logging]

``--alone`` adds, per named concern (tracing, logging, metrics, auth), a mesh channel running
only that concern against a ``MeshServer`` running only its server half (tracing at 10%).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import time
from statistics import median

import grpc
from _harness import BENCH_DIR, Child

from grpcmesh import ServiceInstance, open_registry
from grpcmesh.client import MeshChannel
from grpcmesh.protos import echo_pb2, echo_pb2_grpc

_TICK = os.sysconf("SC_CLK_TCK")


def proc_cpu(pid: int) -> float:
    """utime + stime of a process, in seconds."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICK


async def load(stub: echo_pb2_grpc.EchoStub, calls: int, concurrency: int = 64) -> None:
    request = echo_pb2.EchoRequest(message="x" * 32)
    left = calls

    async def caller() -> None:
        nonlocal left
        while left > 0:
            left -= 1
            await stub.Unary(request)

    await asyncio.gather(*(caller() for _ in range(concurrency)))


async def main(args: argparse.Namespace) -> None:
    import _middleware

    children: list[Child] = []
    try:

        async def server(instance_id: str, *extra: str) -> tuple[int, int]:
            script = str(BENCH_DIR / "_echo_server.py")
            child = await Child.start(instance_id, script, "--instance-id", instance_id, *extra)
            children.append(child)
            return int((await child.read())["port"]), child.pid

        plain = await server("echo-plain")
        mw100 = await server("echo-mw-100", "--stack", "full", "--sample-rate", "1.0")
        mw10 = await server("echo-mw-10", "--stack", "full", "--sample-rate", "0.1")
        registry = open_registry("memory://cpu-per-call")
        for name, (port, _) in (("plain", plain), ("mw100", mw100), ("mw10", mw10)):
            await registry.register(ServiceInstance(name=name, id=name, address="127.0.0.1", port=port))
        configs = {
            "bare -> plain server": (grpc.aio.insecure_channel(f"127.0.0.1:{plain[0]}"), plain[1]),
            "mesh -> plain server": (MeshChannel(registry, "plain"), plain[1]),
            "mesh + middleware -> middleware server (all traced)": (
                MeshChannel(registry, "mw100", observer=_middleware.client_observer("full", 1.0)),
                mw100[1],
            ),
            "mesh + middleware -> middleware server (10% traced)": (
                MeshChannel(registry, "mw10", observer=_middleware.client_observer("full", 0.1)),
                mw10[1],
            ),
        }
        for concern in filter(None, args.alone.split(",")):
            port, pid = await server(f"echo-{concern}", "--stack", concern, "--sample-rate", "0.1")
            await registry.register(ServiceInstance(name=concern, id=concern, address="127.0.0.1", port=port))
            observer = _middleware.client_observer(concern, 0.1)
            configs[f"mesh + {concern} alone -> {concern} server"] = (
                MeshChannel(registry, concern, observer=observer),
                pid,
            )
        results: dict[str, tuple[list[float], list[float]]] = {name: ([], []) for name in configs}
        for channel, _ in configs.values():
            await load(echo_pb2_grpc.EchoStub(channel), 300)  # warm up: connect, fill caches
        for _ in range(args.rounds):
            for name, (channel, pid) in configs.items():
                stub = echo_pb2_grpc.EchoStub(channel)
                c0, s0 = time.process_time(), proc_cpu(pid)
                await load(stub, args.calls)
                c1, s1 = time.process_time(), proc_cpu(pid)
                results[name][0].append((c1 - c0) / args.calls * 1e6)
                results[name][1].append((s1 - s0) / args.calls * 1e6)
        print("| configuration | client CPU/call | server CPU/call | client + server |")
        print("|---|---|---|---|")
        for name, (client, server_cpu) in results.items():
            c, s = median(client), median(server_cpu)
            print(f"| {name} | {c:.0f} µs | {s:.0f} µs | {c + s:.0f} µs |")
        for channel, _ in configs.values():
            await channel.close()
        await registry.close()
    finally:
        for child in children:
            with contextlib.suppress(Exception):
                await child.stop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--alone", default="", help="comma-separated concerns to add alone: tracing,logging,metrics,auth"
    )
    asyncio.run(main(parser.parse_args()))
