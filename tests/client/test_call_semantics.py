"""Call semantics across hops with real server processes (issue 15).

Deadline and request id across two hops; fail-fast on zero instances; hung (SIGSTOP) and slow
instances routed around; throttling and the retry budget. Time bounds here are generous on
purpose (the CI machine is shared): each states the margin against what the old code did.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import time
from collections.abc import AsyncIterator, Awaitable, Callable

import grpc
import pytest

from grpcmesh import Registry, ServiceInstance
from grpcmesh.client import MeshChannel
from grpcmesh.client.outlier import OutlierPolicy
from grpcmesh.client.retry_budget import RetryBudgetPolicy
from grpcmesh.client.settings import CallSettings, Keepalive
from grpcmesh.client.throttle import ThrottlePolicy
from grpcmesh.context import Propagation
from grpcmesh.errors import MeshRpcError
from grpcmesh.protos import echo_pb2, echo_pb2_grpc
from grpcmesh.testing import start_echo_server
from tests.client.conftest import SERVICE, Instance, StartInstance
from tests.client.util import wait_for_endpoints
from tests.helpers import read_line_with, start_python, stop_process

pytestmark = pytest.mark.slow

UNARY = "/grpcmesh.echo.v1.Echo/Unary"
StartHop = Callable[..., Awaitable[asyncio.subprocess.Process]]


@pytest.fixture
async def start_hop(registry_url: str) -> AsyncIterator[StartHop]:
    started: list[asyncio.subprocess.Process] = []

    async def start(name: str, *extra: str) -> asyncio.subprocess.Process:
        proc = await start_python("-m", "tests.client.hop_instance", registry_url, name, *extra)
        started.append(proc)
        await read_line_with(proc, "ready")
        return proc

    yield start
    await asyncio.gather(*(stop_process(p) for p in started))


async def test_deadline_and_request_id_cross_two_hops(registry: Registry, start_hop: StartHop) -> None:
    await start_hop("hop-b")
    await start_hop("hop-a", "--next", "hop-b")
    async with MeshChannel(registry, "hop-a") as channel:
        await wait_for_endpoints(channel, 1)
        stub = echo_pb2_grpc.EchoStub(channel)
        reply = await stub.Unary(echo_pb2.EchoRequest(), timeout=3.0, metadata=(("x-request-id", "req-42"),))
        seen = json.loads(reply.message)
        assert seen["request_id"] == "req-42"
        # B saw A's inherited deadline: what the client gave, less the first hop and the margin
        # (and not None, as it was before propagation).
        assert seen["remaining"] is not None
        assert 0.0 < seen["remaining"] < 3.0

        # Without an id the edge service (A) makes one, and B receives it.
        reply = await stub.Unary(echo_pb2.EchoRequest(), timeout=3.0)
        seen = json.loads(reply.message)
        assert isinstance(seen["request_id"], str)
        assert len(seen["request_id"]) == 32


async def test_a_spent_inherited_budget_fails_at_once_without_sending(registry: Registry) -> None:
    server, port = await start_echo_server("counted")
    instance = ServiceInstance(name="counted", id="counted", address="127.0.0.1", port=port)
    await registry.register(instance)
    try:
        async with MeshChannel(registry, "counted") as channel:
            await wait_for_endpoints(channel, 1)
            stub = echo_pb2_grpc.EchoStub(channel)
            await stub.Unary(echo_pb2.EchoRequest(), timeout=5)
            sent_before = channel.stats().per_endpoint[0].calls
            propagation = Propagation(margin=0.05)
            incoming = propagation.incoming([], time_remaining=0.01)
            with propagation.serving(incoming), pytest.raises(MeshRpcError) as info:
                await stub.Unary(echo_pb2.EchoRequest(), timeout=5)
            assert info.value.code() is grpc.StatusCode.DEADLINE_EXCEEDED
            assert channel.stats().per_endpoint[0].calls == sent_before  # nothing was sent
    finally:
        await registry.deregister(instance)
        await server.stop(None)


async def test_zero_instances_fail_fast_and_wait_for_ready_waits(registry: Registry) -> None:
    async with MeshChannel(registry, "nobody-home", version="v3") as channel:
        stub = echo_pb2_grpc.EchoStub(channel)
        started = time.monotonic()
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await stub.Unary(echo_pb2.EchoRequest(), timeout=10)
        elapsed = time.monotonic() - started
        assert info.value.code() is grpc.StatusCode.UNAVAILABLE
        assert "nobody-home" in (info.value.details() or "")
        assert "version='v3'" in (info.value.details() or "")
        # Before: the whole 5 s endpoint_wait. Now: as soon as the registry answers (a few ms);
        # 2 s leaves a wide margin for a loaded machine.
        assert elapsed < 2.0

        with pytest.raises(grpc.aio.AioRpcError) as waited:
            await stub.Unary(echo_pb2.EchoRequest(), timeout=0.3, wait_for_ready=True)
        assert waited.value.code() is grpc.StatusCode.DEADLINE_EXCEEDED


async def _load_until(
    stub: echo_pb2_grpc.EchoAsyncStub, workers: int, stop: asyncio.Event, timeout: float
) -> list[tuple[float, bool, str]]:
    """Calls from ``workers`` tasks until ``stop``: (end time, ok, instance or status) per call."""
    results: list[tuple[float, bool, str]] = []

    async def worker() -> None:
        while not stop.is_set():
            try:
                reply = await stub.Unary(echo_pb2.EchoRequest(), timeout=timeout)
                results.append((time.monotonic(), True, reply.instance_id))
            except grpc.aio.AioRpcError as exc:
                results.append((time.monotonic(), False, exc.code().name))
            await asyncio.sleep(0.005)

    await asyncio.gather(*(worker() for _ in range(workers)))
    return results


@contextlib.asynccontextmanager
async def frozen(instance: Instance) -> AsyncIterator[float]:
    """SIGSTOP ``instance`` for the block (always SIGCONT after); yields when it was stopped."""
    os.kill(instance.proc.pid, signal.SIGSTOP)
    try:
        yield time.monotonic()
    finally:
        os.kill(instance.proc.pid, signal.SIGCONT)


async def test_a_hung_instance_is_ejected_within_seconds(registry: Registry, start_instance: StartInstance) -> None:
    # A long TTL: the stopped instance stays registered, so only ejection can route around it.
    instances = [await start_instance(name, "--ttl", "60") for name in ("a", "b", "c")]
    async with MeshChannel(registry, SERVICE) as channel:
        await wait_for_endpoints(channel, 3)
        stub = echo_pb2_grpc.EchoStub(channel)
        stop = asyncio.Event()
        load = asyncio.create_task(_load_until(stub, workers=6, stop=stop, timeout=0.5))
        await asyncio.sleep(0.5)
        async with frozen(instances[0]) as stopped_at:
            await asyncio.sleep(6.0)
            stop.set()
            results = await load
        after = [(t - stopped_at, ok) for t, ok, _ in results if t >= stopped_at]
        early_failures = sum(1 for t, ok in after if not ok and t < 3.0)
        late = [ok for t, ok in after if t >= 3.0]
        late_failures = late.count(False)
        assert early_failures > 0, "the stopped instance was never called: the test proves nothing"
        # Before ejection on deadlines, about a third of all calls kept failing until the
        # registration expired. Now: the first seconds' failures, then at most single probes.
        assert late_failures <= 5, (early_failures, late_failures, len(late))
        assert len(late) > 50
        assert channel.stats().ejections_total >= 1


async def test_one_slow_instance_is_routed_around(registry: Registry, start_instance: StartInstance) -> None:
    await start_instance("fast1")
    await start_instance("fast2")
    await start_instance("slow", "--delay-ms", "1000")
    async with MeshChannel(registry, SERVICE) as channel:
        await wait_for_endpoints(channel, 3)
        stub = echo_pb2_grpc.EchoStub(channel)
        stop = asyncio.Event()
        load = asyncio.create_task(_load_until(stub, workers=6, stop=stop, timeout=0.3))
        await asyncio.sleep(4.0)
        stop.set()
        results = await load
        failures = [r for r in results if not r[1]]
        # round_robin without ejection failed a third of all calls (every call to "slow").
        assert len(results) > 100
        assert len(failures) < len(results) / 10, (len(failures), len(results))


async def test_throttling_rejects_locally_when_the_backend_keeps_failing(
    registry: Registry, start_instance: StartInstance
) -> None:
    await start_instance("broken")
    settings = CallSettings(throttle=ThrottlePolicy(k=1.5, minimum_requests=20))
    async with MeshChannel(registry, SERVICE, settings=settings) as channel:
        await wait_for_endpoints(channel, 1)
        stub = echo_pb2_grpc.EchoStub(channel)
        local = 0
        for _ in range(200):
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await stub.Unary(echo_pb2.EchoRequest(fail_code=grpc.StatusCode.INTERNAL.value[0]), timeout=5)
            assert info.value.code() in (grpc.StatusCode.INTERNAL, grpc.StatusCode.UNAVAILABLE)
            local += "client-side throttling" in (info.value.details() or "")
        stats = channel.stats()
        assert stats.throttled == local
        assert local > 50  # most calls never reached the failing backend
        # Locally rejected calls are not the endpoint's failures: it was never ejected for them.
        assert stats.per_endpoint[0].calls == 200 - local


async def test_retry_budget_limits_retries_of_a_failing_backend(
    registry: Registry, start_instance: StartInstance
) -> None:
    await start_instance("x")
    await start_instance("y")
    settings = CallSettings(
        throttle=ThrottlePolicy(enabled=False),
        retry_budget=RetryBudgetPolicy(ratio=0.2, minimum_per_second=0.0),
    )
    unavailable = grpc.StatusCode.UNAVAILABLE.value[0]
    async with MeshChannel(registry, SERVICE, settings=settings, retry_methods=[UNARY]) as channel:
        await wait_for_endpoints(channel, 2)
        stub = echo_pb2_grpc.EchoStub(channel)
        for _ in range(100):
            with pytest.raises(grpc.aio.AioRpcError):
                await stub.Unary(echo_pb2.EchoRequest(fail_code=unavailable), timeout=5)
        stats = channel.stats()
        assert stats.retries_total <= 20  # 20 % of 100 calls, instead of one retry per call
        assert stats.retries_denied >= 80
        assert sum(e.calls for e in stats.per_endpoint) <= 120


async def test_keepalive_drops_a_frozen_peer_before_the_deadline(
    registry: Registry, start_instance: StartInstance
) -> None:
    frozen_one = await start_instance("frozen", "--ttl", "60")
    settings = CallSettings(
        keepalive=Keepalive(time=1.0, timeout=1.0),
        outlier=OutlierPolicy(consecutive_failures=10**6, success_rate=None, latency_factor=None),
    )
    async with MeshChannel(registry, SERVICE, settings=settings) as channel:
        await wait_for_endpoints(channel, 1)
        stub = echo_pb2_grpc.EchoStub(channel)
        await stub.Unary(echo_pb2.EchoRequest(), timeout=5)
        async with frozen(frozen_one):
            started = time.monotonic()
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await stub.Unary(echo_pb2.EchoRequest(), timeout=30)
            elapsed = time.monotonic() - started
        # Without keepalive the call would hang until its 30 s deadline; the ping (1 s) and its
        # 1 s timeout end it after about 2 s (15 s leaves a wide margin for a loaded machine).
        assert info.value.code() is grpc.StatusCode.UNAVAILABLE, info.value.details()
        assert elapsed < 15.0
