"""Shared parts of the call-semantics benchmarks: server processes and paced client loads."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from dataclasses import dataclass, field

import grpc
from _harness import BENCH_DIR, Child

from grpcmesh.protos import echo_pb2, echo_pb2_grpc


async def start_server(started: list[Child], url: str, name: str, instance_id: str, *extra: str) -> Child:
    """A ``_semantics_server.py`` process registered as ``name``; returns once it serves."""
    child = await Child.start(
        instance_id,
        str(BENCH_DIR / "_semantics_server.py"),
        "--registry",
        url,
        "--name",
        name,
        "--instance-id",
        instance_id,
        *extra,
    )
    started.append(child)
    await child.read(timeout=60)
    return child


@dataclass
class Outcome:
    """One call: when it ended (relative to the load's start), whether it succeeded, how long it took."""

    ended: float
    ok: bool
    latency: float
    detail: str


@dataclass
class PacedLoad:
    """``callers`` tasks, each calling then pausing ``pause`` s, with ``timeout`` per call."""

    name: str
    channel: grpc.aio.Channel
    callers: int
    pause: float
    timeout: float
    outcomes: list[Outcome] = field(default_factory=list)
    _stopping: bool = False
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)
    started: float = 0.0

    async def _caller(self) -> None:
        stub = echo_pb2_grpc.EchoStub(self.channel)
        request = echo_pb2.EchoRequest(message="bench")
        while not self._stopping:
            began = time.monotonic()
            try:
                await stub.Unary(request, timeout=self.timeout)
                self.outcomes.append(Outcome(time.monotonic() - self.started, True, time.monotonic() - began, "OK"))
            except grpc.aio.AioRpcError as exc:
                self.outcomes.append(
                    Outcome(time.monotonic() - self.started, False, time.monotonic() - began, exc.code().name)
                )
            await asyncio.sleep(self.pause)

    def start(self, at: float) -> None:
        self.started = at
        self._tasks = [asyncio.get_running_loop().create_task(self._caller()) for _ in range(self.callers)]

    async def stop(self) -> None:
        self._stopping = True
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def failures(self, since: float = 0.0, until: float = float("inf")) -> int:
        return sum(1 for o in self.outcomes if not o.ok and since <= o.ended < until)

    def calls(self, since: float = 0.0, until: float = float("inf")) -> int:
        return sum(1 for o in self.outcomes if since <= o.ended < until)

    def errors(self) -> Counter[str]:
        return Counter(o.detail for o in self.outcomes if not o.ok)
