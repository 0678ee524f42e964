"""Live updates and failover with real server processes: additions, removals, SIGKILL."""

from __future__ import annotations

import asyncio
import collections

import grpc
import pytest

from grpcmesh import Registry
from grpcmesh.client import MeshChannel
from grpcmesh.protos import echo_pb2, echo_pb2_grpc
from tests.client.conftest import SERVICE, StartInstance
from tests.client.util import wait_for_endpoints

pytestmark = pytest.mark.slow

UNARY = "/grpcmesh.echo.v1.Echo/Unary"


async def test_new_instance_gets_calls_soon_after_registering(
    registry: Registry, start_instance: StartInstance
) -> None:
    await start_instance("a")
    await start_instance("b")
    async with MeshChannel(registry, SERVICE) as channel:
        await wait_for_endpoints(channel, 2)
        stub = echo_pb2_grpc.EchoStub(channel)
        await stub.Unary(echo_pb2.EchoRequest(), timeout=5)
        await start_instance("c")  # returns once "c" is registered

        async def until_c_answers() -> int:
            calls = 0
            while True:
                calls += 1
                if (await stub.Unary(echo_pb2.EchoRequest(), timeout=5)).instance_id == "c":
                    return calls
                await asyncio.sleep(0.005)

        # Typically well under a second (the registry's change feed); 10 s is only a bound
        # for a heavily loaded shared machine, not the expected time.
        calls = await asyncio.wait_for(until_c_answers(), 10)
        assert calls < 2000


async def _load(
    stub: echo_pb2_grpc.EchoAsyncStub, tasks: int, calls_per_task: int
) -> tuple[collections.Counter[str], list[BaseException]]:
    served: collections.Counter[str] = collections.Counter()
    failures: list[BaseException] = []

    async def worker() -> None:
        for _ in range(calls_per_task):
            try:
                reply = await stub.Unary(echo_pb2.EchoRequest(delay_ms=2), timeout=10)
                served[reply.instance_id] += 1
            except grpc.aio.AioRpcError as exc:
                failures.append(exc)

    await asyncio.gather(*(worker() for _ in range(tasks)))
    return served, failures


async def test_removing_an_instance_fails_no_call(registry: Registry, start_instance: StartInstance) -> None:
    instances = [await start_instance(name) for name in ("a", "b", "c")]
    async with MeshChannel(registry, SERVICE) as channel:
        await wait_for_endpoints(channel, 3)
        stub = echo_pb2_grpc.EchoStub(channel)
        load = asyncio.create_task(_load(stub, tasks=10, calls_per_task=100))
        await asyncio.sleep(0.3)
        await instances[1].stop()  # SIGTERM: deregister, linger, stop (running calls finish)
        served, failures = await load
        assert failures == []
        assert sum(served.values()) == 1000
        assert len(channel.endpoints) == 2


async def test_sigkill_of_one_instance_during_2000_calls_fails_none(
    registry: Registry, start_instance: StartInstance
) -> None:
    instances = [await start_instance(name) for name in ("a", "b", "c")]
    # Echo.Unary is idempotent, so calls cut off mid-flight by the kill may be re-sent (opt-in).
    async with MeshChannel(registry, SERVICE, retry_methods=[UNARY]) as channel:
        await wait_for_endpoints(channel, 3)
        stub = echo_pb2_grpc.EchoStub(channel)
        load = asyncio.create_task(_load(stub, tasks=20, calls_per_task=100))
        await asyncio.sleep(0.4)
        await instances[0].kill()
        served, failures = await load
        stats = channel.stats()
    assert failures == [], [f"{f.code()}: {f.details()}" for f in failures[:5]]  # type: ignore[attr-defined]
    assert sum(served.values()) == 2000
    assert served["a"] > 0
    assert served["b"] > 0
    assert served["c"] > 0
    assert stats.retries_total > 0  # the kill really hit calls, and they were moved


async def test_refused_connections_are_retried_and_the_endpoint_ejected(
    registry: Registry, start_instance: StartInstance
) -> None:
    """Calls to a dead endpoint (nothing sent) move to a live one, even without opt-in."""
    dead = await start_instance("dead", "--ttl", "30")
    await start_instance("alive")
    async with MeshChannel(registry, SERVICE) as channel:
        await wait_for_endpoints(channel, 2)
        await dead.kill()  # its registration outlives it (ttl 30 s): the channel still sees it
        stub = echo_pb2_grpc.EchoStub(channel)
        replies = [await stub.Unary(echo_pb2.EchoRequest(), timeout=5) for _ in range(20)]
        stats = channel.stats()
    assert {r.instance_id for r in replies} == {"alive"}
    assert len(stats.per_endpoint) == 2
    dead_stats = next(e for e in stats.per_endpoint if e.id == "dead")
    assert dead_stats.ejected
    assert dead_stats.ejections == 1
    assert stats.ejected == 1
    assert dead_stats.calls <= 4  # ejected after 3 consecutive connection failures


async def test_deregistered_endpoint_does_not_cancel_running_call(
    registry: Registry, start_instance: StartInstance
) -> None:
    only = await start_instance("only", "--linger", "3")
    async with MeshChannel(registry, SERVICE) as channel:
        await wait_for_endpoints(channel, 1)
        stub = echo_pb2_grpc.EchoStub(channel)
        slow = asyncio.ensure_future(stub.Unary(echo_pb2.EchoRequest(delay_ms=1500), timeout=10))
        await asyncio.sleep(0.3)
        only.proc.terminate()  # deregisters at once, keeps serving for 3 s
        await wait_for_endpoints(channel, 0)
        assert channel.stats().draining == 1
        reply = await slow
        assert reply.instance_id == "only"

        async def drained() -> None:  # closed once its last call ended
            while channel.stats().draining:
                await asyncio.sleep(0.02)

        await asyncio.wait_for(drained(), 10)
        await only.proc.wait()
