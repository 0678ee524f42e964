"""Hostile or careless xDS clients cannot exhaust the control plane, forge its logs or stop its watches."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest

from grpcmesh import ServiceInstance, open_registry
from grpcmesh.registry import Registry
from grpcmesh.xds import AggregatedDiscoveryServicer, XdsServer
from grpcmesh.xds.policy import Limits, XdsPolicies
from grpcmesh.xds.resources import ENDPOINT_TYPE, LISTENER_TYPE
from grpcmesh.xds.watches import RegistryWatches
from tests.xds import messages
from tests.xds.test_ads_server import AdsStream, ports_of

LIMITS = Limits(max_names_per_stream=3000, max_streams_per_client=3, max_queued_requests=4)


@pytest.fixture
async def registry() -> AsyncIterator[Registry]:
    registry = open_registry("memory://")
    try:
        yield registry
    finally:
        await registry.close()


@pytest.fixture
async def xds(registry: Registry) -> AsyncIterator[XdsServer]:
    async with XdsServer(registry, policies=XdsPolicies(limits=LIMITS)) as server:
        yield server


@pytest.fixture
async def channel(xds: XdsServer) -> AsyncIterator[grpc.aio.Channel]:
    async with grpc.aio.insecure_channel(xds.address) as channel:
        yield channel


def instance(service: str, port: int) -> ServiceInstance:
    return ServiceInstance(name=service, id=f"{service}-1", address="127.0.0.1", port=port)


async def until(predicate: Any, timeout: float = 10.0) -> None:
    for _ in range(int(timeout / 0.02)):
        if predicate():
            return
        await asyncio.sleep(0.02)
    raise AssertionError("condition not reached")


async def test_too_many_names_end_the_stream_with_a_clear_error(channel: grpc.aio.Channel) -> None:
    stream = AdsStream(channel, "greedy")
    stream.send(LISTENER_TYPE, *(f"svc-{i}" for i in range(LIMITS.max_names_per_stream + 1)))
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await stream.receive()
    assert raised.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "max_names_per_stream" in (raised.value.details() or "")


async def test_streams_per_client_are_capped_and_freed_on_close(xds: XdsServer, channel: grpc.aio.Channel) -> None:
    servicer = xds.servicer
    assert servicer is not None
    streams = [AdsStream(channel, f"n{i}") for i in range(LIMITS.max_streams_per_client)]
    for stream in streams:
        stream.send(LISTENER_TYPE, "echo-service")
        await stream.receive()
    extra = AdsStream(channel, "one-too-many")
    extra.send(LISTENER_TYPE, "echo-service")
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await extra.receive()
    assert raised.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "max_streams_per_client" in (raised.value.details() or "")

    streams[0].call.cancel()
    await until(lambda: servicer.active_streams == LIMITS.max_streams_per_client - 1)
    again = AdsStream(channel, "after-close")
    again.send(LISTENER_TYPE, "echo-service")
    assert (await again.receive()).type_url == LISTENER_TYPE
    for stream in (*streams[1:], again):
        stream.call.cancel()


class PeerOnly:
    """The one part of a servicer context this test needs: the peer address."""

    def peer(self) -> str:
        return "ipv4:127.0.0.1:5000"

    async def abort(self, code: grpc.StatusCode, details: str) -> None:
        raise AssertionError(f"unexpected abort {code}: {details}")


async def test_a_stream_whose_responses_are_not_taken_reads_only_a_bounded_number_of_requests(
    registry: Registry,
) -> None:
    """The handler is suspended at its first response (as when a client stops reading) while
    the client keeps sending: the server must stop reading, not buffer every request."""
    watches = RegistryWatches(registry)
    servicer = AggregatedDiscoveryServicer(watches, XdsPolicies(limits=LIMITS))
    sent = 0

    async def requests() -> AsyncIterator[Any]:
        nonlocal sent
        yield messages.request(LISTENER_TYPE, "echo-service")
        for _ in range(3000):
            sent += 1
            yield messages.request("type.googleapis.com/unsupported", "x")

    stream = servicer.StreamAggregatedResources(requests(), PeerOnly())  # type: ignore[arg-type]
    first = await anext(stream)
    assert first.type_url == LISTENER_TYPE
    await asyncio.sleep(0.5)  # the client keeps sending; nobody takes the next response
    assert sent <= LIMITS.max_queued_requests + 2
    await stream.aclose()
    await watches.close()
    assert servicer.active_streams == 0


async def test_an_endpoint_change_rebuilds_and_sends_only_its_service(
    registry: Registry, xds: XdsServer, channel: grpc.aio.Channel
) -> None:
    services = [f"svc-{i}" for i in range(2000)]
    for port, service in enumerate(services[:3], start=7001):
        await registry.register(instance(service, port))
    stream = AdsStream(channel, "many-names")
    responses: asyncio.Queue[Any] = asyncio.Queue()

    async def read_all() -> None:
        async for response in stream.call:
            responses.put_nowait(response)
            stream.send(ENDPOINT_TYPE, *services, ack_of=response)

    reader = asyncio.get_running_loop().create_task(read_all())
    stream.send(ENDPOINT_TYPE, *services)
    watches = xds.watches
    assert watches is not None
    await until(lambda: watches.watched == set(services))
    await asyncio.sleep(1)  # let every first snapshot arrive and be answered
    while not responses.empty():
        responses.get_nowait()
    builds = watches.builds
    await registry.register(instance("svc-1500", 7500))
    pushed = await asyncio.wait_for(responses.get(), 10)
    assert len(pushed.resources) == 1
    assert ports_of(pushed) == [7500]
    assert watches.builds - builds == 1

    stream.call.cancel()
    reader.cancel()
    await asyncio.gather(reader, return_exceptions=True)
    await until(lambda: not watches.watched)
    assert watches.cached_assignments() == 0


async def test_newlines_from_a_client_cannot_forge_log_lines(
    registry: Registry, xds: XdsServer, channel: grpc.aio.Channel, caplog: pytest.LogCaptureFixture
) -> None:
    await registry.register(instance("echo-service", 7001))
    stream = AdsStream(channel, "evil\nERROR grpcmesh forged line")
    stream.send(ENDPOINT_TYPE, "echo-service")
    sent = await stream.receive()
    with caplog.at_level(logging.INFO, logger="grpcmesh.xds"):
        stream.send(ENDPOINT_TYPE, "echo-service", ack_of=sent, error="bad\r\nWARNING forged too")
        stream.send("type.googleapis.com/x\nforged", "a")
        await asyncio.sleep(0.5)
        stream.call.cancel()
        await asyncio.sleep(0.5)
    messages_logged = [record.getMessage() for record in caplog.records]
    assert any("NACK" in message for message in messages_logged)
    assert all("\n" not in message and "\r" not in message for message in messages_logged)
    assert any("evil\\nERROR" in message for message in messages_logged)


class FlakyRegistry:
    """A real memory registry whose first watches fail with an unexpected error (a stand-in for a bug)."""

    def __init__(self, inner: Registry, failures: int) -> None:
        self.inner = inner
        self.failures = failures

    def watch(self, name: str) -> AsyncIterator[list[ServiceInstance]]:
        if self.failures > 0:
            self.failures -= 1
            raise TypeError("unexpected failure inside the registry")
        return self.inner.watch(name)


async def test_a_watch_survives_any_exception_and_logs_it_once(
    registry: Registry, caplog: pytest.LogCaptureFixture
) -> None:
    await registry.register(instance("echo-service", 7001))
    flaky = FlakyRegistry(registry, failures=3)
    watches = RegistryWatches(flaky)  # type: ignore[arg-type]
    seen = asyncio.Event()
    with caplog.at_level(logging.DEBUG, logger="grpcmesh.xds"):
        watches.subscribe("echo-service", lambda _service: seen.set())
        await asyncio.wait_for(seen.wait(), 10)
    await watches.close()
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert sum("failed" in m for m in warnings) == 1
    assert any("echo-service" in m and "TypeError" in m for m in warnings)
    assert any("recovered" in m for m in warnings)


def test_request_helper_builds_a_nack() -> None:
    nack = messages.request(ENDPOINT_TYPE, "a", nonce="1", error="boom")
    assert nack.error_detail.message == "boom"


async def test_an_assignment_that_cannot_be_built_is_logged_once_and_skipped(
    registry: Registry, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    await registry.register(instance("echo-service", 7001))
    watches = RegistryWatches(registry)
    seen = asyncio.Event()
    watches.subscribe("echo-service", lambda _service: seen.set())
    await asyncio.wait_for(seen.wait(), 10)

    def broken(*_args: object) -> None:
        raise ValueError("a record no builder expected")

    monkeypatch.setattr("grpcmesh.xds.resources.cluster_load_assignment", broken)
    with caplog.at_level(logging.ERROR, logger="grpcmesh.xds"):
        assert watches.assignment("echo-service") is None
        assert watches.assignment("echo-service") is None
    assert len([r for r in caplog.records if "cannot build" in r.getMessage()]) == 1
    monkeypatch.undo()
    seen.clear()
    await registry.register(instance("echo-service", 7002))  # the next snapshot is built normally
    await asyncio.wait_for(seen.wait(), 10)
    assert watches.assignment("echo-service") is not None
    await watches.close()
