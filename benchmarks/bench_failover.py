"""Figure 3, failover: failed calls and p99 while instances die or restart, under steady load.

Three Echo instances run as real processes (``MeshServer``, registered in a SQLite registry,
3 s TTL), each on a fixed port. Three clients in this process send the same steady load
(paced callers, 2 s deadline per call), side by side:

* ``bare round_robin`` (baseline): one grpc.aio channel over the three fixed addresses with
  grpc's own ``round_robin`` policy: no registry, no health, what plain gRPC gives;
* ``mesh``: a ``MeshChannel`` with default settings;
* ``mesh + retry``: a ``MeshChannel`` told the Echo Unary method is idempotent
  (``retry_methods``), so a call cut off by a dying server is retried once elsewhere.

Phases: (a) one instance is SIGKILLed (no goodbye: its registration lingers until its TTL),
then started again on its port; (b) rolling restart: each instance in turn gets SIGTERM
(graceful: NOT_SERVING, deregister, drain) and is started again. Goal: 0 failed calls.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import tempfile
import time
from collections import Counter
from pathlib import Path

import grpc
from _harness import BENCH_DIR, Child, Report, Row, children, command, ms, parser, percentile, run

from grpcmesh import open_registry
from grpcmesh.client import MeshChannel
from grpcmesh.protos import echo_pb2, echo_pb2_grpc
from tests.helpers import free_port

SCRIPT = "bench_failover.py"
SERVICE = "echo-failover"
UNARY = "/grpcmesh.echo.v1.Echo/Unary"


class Load:
    """Paced callers on one channel; counts outcomes per phase."""

    def __init__(self, name: str, channel: grpc.aio.Channel, callers: int, pause: float) -> None:
        self.name = name
        self.stub = echo_pb2_grpc.EchoStub(channel)
        self.callers = callers
        self.pause = pause
        self.phase = "warm-up"
        self.latencies: dict[str, list[float]] = {}
        self.failures: dict[str, Counter[str]] = {}
        self.stopping = False
        self.tasks: list[asyncio.Task[None]] = []

    async def caller(self) -> None:
        request = echo_pb2.EchoRequest(message="failover")
        while not self.stopping:
            phase = self.phase
            started = time.perf_counter()
            try:
                await self.stub.Unary(request, timeout=2.0)
                self.latencies.setdefault(phase, []).append(time.perf_counter() - started)
            except grpc.aio.AioRpcError as exc:
                self.failures.setdefault(phase, Counter())[f"{exc.code().name}: {(exc.details() or '')[:60]}"] += 1
                self.latencies.setdefault(phase, []).append(time.perf_counter() - started)
            await asyncio.sleep(self.pause)

    def start(self) -> None:
        self.tasks = [asyncio.get_running_loop().create_task(self.caller()) for _ in range(self.callers)]

    async def stop(self) -> None:
        self.stopping = True
        await asyncio.gather(*self.tasks, return_exceptions=True)

    def failed(self, phase: str) -> int:
        return sum(self.failures.get(phase, Counter()).values())


class Instances:
    """The three server processes, each on a fixed port."""

    def __init__(self, started: list[Child], url: str, ports: list[int]) -> None:
        self.started = started
        self.url = url
        self.ports = ports
        self.procs: dict[int, Child] = {}

    async def start(self, k: int) -> None:
        child = await Child.start(
            f"instance {k}",
            str(BENCH_DIR / "_echo_server.py"),
            "--mode",
            "mesh",
            "--registry",
            self.url,
            "--name",
            SERVICE,
            "--instance-id",
            f"inst-{k}",
            "--port",
            str(self.ports[k]),
            "--ttl",
            "3",
            "--propagation-delay",
            "0.5",
        )
        self.started.append(child)
        self.procs[k] = child
        await child.read(timeout=60)

    async def kill(self, k: int) -> None:
        child = self.procs.pop(k)
        child.kill()
        await child.proc.wait()

    async def terminate(self, k: int) -> None:
        child = self.procs.pop(k)
        await child.stop(timeout=20)


async def main(args: argparse.Namespace, report: Report) -> None:
    pause = 0.02
    callers = 4 if args.smoke else args.callers
    settle = 0.5 if args.smoke else args.settle
    async with contextlib.AsyncExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="grpcmesh-bench-failover-")))
        url = f"sqlite://{tmp}/registry.db"
        started = await stack.enter_async_context(children())
        ports = [free_port() for _ in range(3)]
        instances = Instances(started, url, ports)
        await asyncio.gather(*(instances.start(k) for k in range(3)))

        registry = open_registry(url)
        stack.push_async_callback(registry.close)
        bare = grpc.aio.insecure_channel(
            "ipv4:" + ",".join(f"127.0.0.1:{p}" for p in ports), options=[("grpc.lb_policy_name", "round_robin")]
        )
        mesh = MeshChannel(registry, SERVICE)
        mesh_retry = MeshChannel(registry, SERVICE, retry_methods=[UNARY])
        loads = [
            Load("bare round_robin", bare, callers, pause),
            Load("mesh", mesh, callers, pause),
            Load("mesh + retry", mesh_retry, callers, pause),
        ]
        for channel in (bare, mesh, mesh_retry):
            stack.push_async_callback(channel.close)
        for channel in (bare, mesh, mesh_retry):
            await asyncio.wait_for(channel.channel_ready(), 20)
        for load in loads:
            load.start()
        stack.push_async_callback(lambda: asyncio.gather(*(load.stop() for load in loads)))

        def phase(name: str) -> None:
            for load in loads:
                load.phase = name

        await asyncio.sleep(settle)
        phase("steady")
        await asyncio.sleep(settle * 2)

        phase("SIGKILL one of three")
        await instances.kill(1)
        await asyncio.sleep(3.0 + settle * 2)  # past the dead instance's TTL
        await instances.start(1)
        await asyncio.sleep(settle * 2)

        phase("rolling restart")
        for k in range(3):
            await instances.terminate(k)
            await instances.start(k)
            await asyncio.sleep(settle * 2)
        phase("after")
        await asyncio.sleep(settle)
        for load in loads:
            await load.stop()

    phases = ["steady", "SIGKILL one of three", "rolling restart"]
    report.line(f"### Failover: 3 instances (real processes), {callers} paced callers per client, 2 s deadline")
    report.line()
    rows = []
    for load in loads:
        for name in phases:
            lat = load.latencies.get(name, [])
            errors = load.failures.get(name, Counter())
            rows.append(
                [
                    load.name,
                    name,
                    len(lat),
                    load.failed(name),
                    ms(percentile(lat, 50)),
                    ms(percentile(lat, 99)),
                    "; ".join(f"{n}x {e}" for e, n in errors.most_common(3)) or "-",
                ]
            )
    report.table(["client", "phase", "calls", "failed", "p50", "p99", "errors"], rows)
    base = loads[0]
    for load in loads[1:]:
        for name in phases[1:]:
            failed = load.failed(name)
            total = len(load.latencies.get(name, []))
            report.add(
                Row(
                    figure=f"3. failover, {name}, {load.name}",
                    goal="0 failed calls",
                    measured=(
                        f"{failed} failed of {total}, p99 {ms(percentile(load.latencies.get(name, []), 99))} "
                        f"(bare round_robin: {base.failed(name)} failed, "
                        f"p99 {ms(percentile(base.latencies.get(name, []), 99))})"
                    ),
                    met=failed == 0 and total > 0,
                    command=command(SCRIPT),
                    details={"failed": failed, "calls": total},
                )
            )


if __name__ == "__main__":
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--callers", type=int, default=8, help="paced callers per client (each pauses 20 ms between calls)")
    p.add_argument("--settle", type=float, default=1.0, help="seconds of load between events")
    run(main, p.parse_args(), SCRIPT)
