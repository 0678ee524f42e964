"""MeshChannel as a drop-in ``grpc.aio.Channel``: all four RPC kinds, errors, deadlines, metadata."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest

from grpcmesh import NoEndpointsError, Registry, ServiceInstance
from grpcmesh.client import ClientManager, MeshChannel
from grpcmesh.protos import echo_pb2, echo_pb2_grpc
from grpcmesh.testing import EchoServicer
from tests.client.conftest import SERVICE, StartInstance


async def test_generated_stub_works_for_all_four_rpc_kinds(registry: Registry, start_instance: StartInstance) -> None:
    await start_instance("a")
    await start_instance("b")
    async with MeshChannel(registry, SERVICE) as channel:
        stub = echo_pb2_grpc.EchoStub(channel)

        reply = await stub.Unary(echo_pb2.EchoRequest(message="one"), timeout=5)
        assert reply.message == "one"
        assert reply.instance_id in {"a", "b"}

        streamed = [r async for r in stub.ServerStream(echo_pb2.EchoRequest(message="s", count=3), timeout=5)]
        assert [r.index for r in streamed] == [0, 1, 2]
        assert len({r.instance_id for r in streamed}) == 1

        call = stub.ServerStream(echo_pb2.EchoRequest(message="r", count=2), timeout=5)
        assert (await call.read()).index == 0
        assert (await call.read()).index == 1
        assert await call.read() is grpc.aio.EOF  # type: ignore[attr-defined]
        assert await call.code() is grpc.StatusCode.OK

        async def requests() -> AsyncIterator[echo_pb2.EchoRequest]:
            for word in ("x", "y", "z"):
                yield echo_pb2.EchoRequest(message=word)

        joined = await stub.ClientStream(requests(), timeout=5)
        assert joined.message == "x,y,z"
        assert joined.index == 3

        writer = stub.ClientStream(timeout=5)
        await writer.write(echo_pb2.EchoRequest(message="p"))
        await writer.write(echo_pb2.EchoRequest(message="q"))
        await writer.done_writing()
        assert (await writer).message == "p,q"

        bidi = [r.message async for r in stub.BidiStream(requests(), timeout=5)]
        assert bidi == ["x", "y", "z"]

        chat = stub.BidiStream(timeout=5)
        await chat.write(echo_pb2.EchoRequest(message="ping"))
        assert (await chat.read()).message == "ping"
        await chat.done_writing()
        assert await chat.read() is grpc.aio.EOF  # type: ignore[attr-defined]
        assert await chat.code() is grpc.StatusCode.OK

        stats = channel.stats()
        assert sum(e.calls for e in stats.per_endpoint) == 7
        assert all(e.outstanding == 0 for e in stats.per_endpoint)


async def test_no_endpoints_is_unavailable_naming_service_and_filter(registry: Registry) -> None:
    async with MeshChannel(registry, "missing-service", version="v9", endpoint_wait=0.3) as channel:
        stub = echo_pb2_grpc.EchoStub(channel)
        started = time.monotonic()
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await stub.Unary(echo_pb2.EchoRequest(), timeout=10)
        # Fails fast once the registry answers (milliseconds); 3 s is a margin for a loaded machine.
        assert time.monotonic() - started < 3.0
        assert info.value.code() is grpc.StatusCode.UNAVAILABLE
        assert "missing-service" in (info.value.details() or "")
        assert "version='v9'" in (info.value.details() or "")
        assert isinstance(info.value, NoEndpointsError)

        call = stub.ServerStream(echo_pb2.EchoRequest(), timeout=10)
        with pytest.raises(grpc.aio.AioRpcError):
            await call.read()
        assert await call.code() is grpc.StatusCode.UNAVAILABLE
        assert "missing-service" in await call.details()
        assert channel.stats().no_endpoint_errors == 2


async def test_wait_for_ready_awaits_the_first_endpoint(registry: Registry, start_instance: StartInstance) -> None:
    async with MeshChannel(registry, SERVICE, endpoint_wait=20) as channel:
        stub = echo_pb2_grpc.EchoStub(channel)
        pending = asyncio.ensure_future(
            stub.Unary(echo_pb2.EchoRequest(message="early"), timeout=20, wait_for_ready=True)
        )
        await asyncio.sleep(0.2)
        assert not pending.done()
        await start_instance("late")
        reply = await asyncio.wait_for(pending, 10)
        assert reply.instance_id == "late"


class RecordingEcho(EchoServicer):
    """Echo that records what each call's context saw."""

    def __init__(self, instance_id: str) -> None:
        super().__init__(instance_id)
        self.seen: list[tuple[dict[str, Any], float | None]] = []

    async def Unary(self, request: echo_pb2.EchoRequest, context: grpc.aio.ServicerContext) -> echo_pb2.EchoReply:  # type: ignore[type-arg]
        metadata = {k: v for k, v in (context.invocation_metadata() or ())}
        self.seen.append((metadata, context.time_remaining()))
        return await super().Unary(request, context)


@pytest.fixture
async def recording_server(registry: Registry) -> AsyncIterator[RecordingEcho]:
    server = grpc.aio.server()
    servicer = RecordingEcho("rec")
    echo_pb2_grpc.add_EchoServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    instance = ServiceInstance(name="recording", id="rec", address="127.0.0.1", port=port)
    await registry.register(instance)
    yield servicer
    await registry.deregister(instance)
    await server.stop(None)


async def test_deadline_and_metadata_pass_through(registry: Registry, recording_server: RecordingEcho) -> None:
    async with MeshChannel(registry, "recording") as channel:
        stub = echo_pb2_grpc.EchoStub(channel)
        await stub.Unary(echo_pb2.EchoRequest(), timeout=3.0, metadata=(("x-trace", "abc"), ("x-user", "u1")))
        metadata, remaining = recording_server.seen[-1]
        assert metadata["x-trace"] == "abc"
        assert metadata["x-user"] == "u1"
        assert remaining is not None
        assert remaining <= 3.0  # never more than the caller gave
        assert remaining > 1.0  # the server saw the caller's deadline (2 s of margin for a loaded machine)

        started = time.monotonic()
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await stub.Unary(echo_pb2.EchoRequest(delay_ms=3000), timeout=0.3)
        assert info.value.code() is grpc.StatusCode.DEADLINE_EXCEEDED
        # The 0.3 s deadline ended the call, not the server's 3 s delay (2.5 s of margin).
        assert time.monotonic() - started < 2.8


class CountingInterceptor(grpc.aio.UnaryUnaryClientInterceptor):  # type: ignore[misc]
    """Adds a header to every unary call, so the server can prove the interceptor ran."""

    def __init__(self) -> None:
        self.calls = 0

    async def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        self.calls += 1
        metadata = [*list(details.metadata or ()), ("x-intercepted", "yes")]
        new_details = grpc.aio.ClientCallDetails(
            details.method, details.timeout, metadata, details.credentials, details.wait_for_ready
        )
        return await continuation(new_details, request)


async def test_client_manager_shares_channels_with_interceptors(
    registry: Registry, recording_server: RecordingEcho
) -> None:
    interceptor = CountingInterceptor()
    manager = ClientManager(registry, interceptors=[interceptor], default_policy="p2c")
    first = manager.channel("recording")
    assert manager.channel("recording") is first
    assert manager.channel("recording", policy="p2c") is first
    assert manager.channel("recording", version="v1") is not first
    assert manager.channel("recording", policy="round_robin") is not first
    assert first.policy == "p2c"

    reply = await echo_pb2_grpc.EchoStub(first).Unary(echo_pb2.EchoRequest(message="m"), timeout=5)
    assert reply.instance_id == "rec"
    assert interceptor.calls == 1
    assert recording_server.seen[-1][0]["x-intercepted"] == "yes"
    assert [s.service for s in manager.stats()] == ["recording"] * 3

    await manager.close()
    assert first.get_state() is grpc.ChannelConnectivity.SHUTDOWN
    with pytest.raises(grpc.aio.UsageError):
        await echo_pb2_grpc.EchoStub(first).Unary(echo_pb2.EchoRequest(), timeout=5)


class AddingInPlaceInterceptor(grpc.aio.UnaryUnaryClientInterceptor):  # type: ignore[misc]
    """Adds a numbered header to the metadata object it is given, in place (grpc.aio allows it)."""

    def __init__(self) -> None:
        self.calls = 0
        self.found: list[list[Any]] = []
        """The ``x-call`` values each call's metadata already held when it got here."""

    async def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        self.calls += 1
        self.found.append(details.metadata.get_all("x-call"))
        details.metadata.add("x-call", str(self.calls))
        return await continuation(details, request)


async def test_the_same_metadata_tuple_is_sent_whole_on_every_call(
    registry: Registry, recording_server: RecordingEcho
) -> None:
    """A tuple sent call after call is handed to grpc.aio as one reused Metadata object (see
    ``CallHost.sendable``): every call still carries it, and a later different tuple replaces it."""
    fixed = (("x-tenant", "t1"), ("x-tenant", "t2"), ("x-bin", b"\x00\x01"))
    async with MeshChannel(registry, "recording") as channel:
        stub = echo_pb2_grpc.EchoStub(channel)
        sent = channel._host.sendable(fixed)
        assert isinstance(sent, grpc.aio.Metadata)
        assert channel._host.sendable(fixed) is sent  # turned once, then reused
        # No timeout: a timeout adds its own header, making a new tuple per call (bounded by wait_for).
        for _ in range(3):
            await asyncio.wait_for(stub.Unary(echo_pb2.EchoRequest(), metadata=fixed), 5)
        await asyncio.wait_for(stub.Unary(echo_pb2.EchoRequest(), metadata=(("x-tenant", "other"),)), 5)
        await asyncio.wait_for(stub.Unary(echo_pb2.EchoRequest()), 5)
    seen = [metadata for metadata, _ in recording_server.seen]
    assert [m.get("x-tenant") for m in seen] == ["t2", "t2", "t2", "other", None]  # dict(): the last value
    assert all(m.get("x-bin") == b"\x00\x01" for m in seen[:3])
    assert all("x-bin" not in m for m in seen[3:])
    assert len(seen) == 5


async def test_metadata_is_not_reused_under_interceptors_that_change_it_in_place(registry: Registry) -> None:
    servicer = RecordingEcho("rec")
    server = grpc.aio.server()
    echo_pb2_grpc.add_EchoServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    instance = ServiceInstance(name="in-place", id="rec", address="127.0.0.1", port=port)
    await registry.register(instance)
    interceptor = AddingInPlaceInterceptor()
    fixed = (("x-tenant", "t1"),)
    try:
        async with MeshChannel(registry, "in-place", interceptors=[interceptor]) as channel:
            stub = echo_pb2_grpc.EchoStub(channel)
            for _ in range(3):  # no timeout, whose header would make a new tuple per call
                await asyncio.wait_for(stub.Unary(echo_pb2.EchoRequest(), metadata=fixed), 5)
    finally:
        await registry.deregister(instance)
        await server.stop(None)
    assert interceptor.calls == 3
    # No earlier call's addition leaked into a later call through a shared metadata object.
    assert interceptor.found == [[], [], []]
    assert [m.get("x-call") for m, _ in servicer.seen] == ["1", "2", "3"]
    assert fixed == (("x-tenant", "t1"),)


async def test_channel_ready_and_state(registry: Registry, recording_server: RecordingEcho) -> None:
    async with MeshChannel(registry, "recording") as channel:
        await asyncio.wait_for(channel.channel_ready(), 10)
        assert channel.get_state() is grpc.ChannelConnectivity.READY
    assert channel.get_state() is grpc.ChannelConnectivity.SHUTDOWN


async def test_cancel_stops_the_call_and_frees_the_endpoint(
    registry: Registry, recording_server: RecordingEcho
) -> None:
    async with MeshChannel(registry, "recording") as channel:
        stub = echo_pb2_grpc.EchoStub(channel)
        call = stub.Unary(echo_pb2.EchoRequest(delay_ms=3000), timeout=10)
        await asyncio.sleep(0.3)
        assert not call.done()
        assert call.cancel()
        with pytest.raises(asyncio.CancelledError):
            await call
        assert call.cancelled()
        assert call.done()
        assert [e.outstanding for e in channel.stats().per_endpoint] == [0]


async def _until(check: Any, timeout: float = 10.0) -> None:
    """Poll ``check()`` (state settles on the loop, not at a known time) until true; fail after ``timeout``."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not check():
        assert asyncio.get_running_loop().time() < deadline, "condition never became true"
        await asyncio.sleep(0.02)


async def test_ejections_total_never_decreases_when_an_ejected_endpoint_leaves(registry: Registry) -> None:
    from grpcmesh.client import OutlierPolicy
    from tests.helpers import free_port

    dead = ServiceInstance(name="gone", id="dead-1", address="127.0.0.1", port=free_port())  # nothing listens
    await registry.register(dead)
    outlier = OutlierPolicy(consecutive_failures=1, max_ejection_percent=100)  # a lone endpoint may be ejected
    async with MeshChannel(registry, "gone", outlier=outlier, drain_grace=0.0, connect_timeout=0.5) as channel:
        stub = echo_pb2_grpc.EchoStub(channel)
        await _until(lambda: channel.stats().endpoints == 1)
        with pytest.raises(grpc.aio.AioRpcError):
            await stub.Unary(echo_pb2.EchoRequest(message="x"), timeout=5)
        assert channel.stats().ejections_total == 1
        await registry.deregister(dead)
        await _until(lambda: channel.stats().endpoints == 0 and channel.stats().draining == 0)
        assert channel.stats().ejections_total == 1  # counted before: a counter must not go down


async def test_mesh_observation_runs_once_per_call_and_names_caller_and_callee(
    registry: Registry, recording_server: RecordingEcho
) -> None:
    from prometheus_client import CollectorRegistry

    from grpcmesh.middleware.client_side import ClientCall, ClientObservation
    from grpcmesh.middleware.metrics import GrpcMetrics

    metrics_registry = CollectorRegistry()
    seen: list[tuple[str, str, str, grpc.StatusCode | None]] = []

    def header(call: ClientCall) -> Any:
        call.metadata.set_all("x-added", ["by-observer"])

        def finish(done: ClientCall) -> None:
            seen.append((done.caller, done.callee, done.full_method, done.code))

        return finish

    observation = ClientObservation([header, GrpcMetrics.of(metrics_registry).observe_client], caller="orders")
    async with MeshChannel(registry, "recording", observer=observation) as channel:
        stub = echo_pb2_grpc.EchoStub(channel)
        caller_metadata = (("x-mine", "kept"),)
        await stub.Unary(echo_pb2.EchoRequest(message="a"), metadata=caller_metadata, timeout=5)
        assert [r.index async for r in stub.ServerStream(echo_pb2.EchoRequest(count=2), timeout=5)] == [0, 1]
        with pytest.raises(grpc.aio.AioRpcError):
            await stub.Unary(echo_pb2.EchoRequest(fail_code=grpc.StatusCode.NOT_FOUND.value[0]), timeout=5)
        await _until(lambda: len(seen) == 3)
    assert caller_metadata == (("x-mine", "kept"),)  # the caller's own metadata is never modified
    first_unary, failed_unary = recording_server.seen[0][0], recording_server.seen[-1][0]
    assert (first_unary.get("x-added"), first_unary.get("x-mine")) == ("by-observer", "kept")
    assert failed_unary.get("x-added") == "by-observer"
    assert [(caller, callee, code) for caller, callee, _, code in seen] == [
        ("orders", "recording", grpc.StatusCode.OK),
        ("orders", "recording", grpc.StatusCode.OK),
        ("orders", "recording", grpc.StatusCode.NOT_FOUND),
    ]
    labels = {
        "grpc_service": "grpcmesh.echo.v1.Echo",
        "grpc_method": "Unary",
        "grpc_type": "unary",
        "caller": "orders",
        "callee": "recording",
    }
    assert metrics_registry.get_sample_value("grpc_client_started_total", labels) == 2
    assert metrics_registry.get_sample_value("grpc_client_handled_total", {**labels, "grpc_code": "NOT_FOUND"}) == 1


async def test_observation_learns_the_status_of_streams_left_unread(
    registry: Registry, recording_server: RecordingEcho
) -> None:
    """The observation records what the caller would see from ``code()``, read to the end or not."""
    from grpcmesh.middleware.client_side import ClientCall, ClientObservation

    codes: list[grpc.StatusCode | None] = []

    def observe(call: ClientCall) -> Any:
        return lambda done: codes.append(done.code)

    async with MeshChannel(registry, "recording", observer=ClientObservation([observe])) as channel:
        stub = echo_pb2_grpc.EchoStub(channel)
        cancelled = stub.ServerStream(echo_pb2.EchoRequest(count=3), timeout=5)
        assert (await cancelled.read()).index == 0
        cancelled.cancel()  # the caller gives up after one message
        await _until(lambda: len(codes) == 1)
        # Left unread, a stream ends only at its deadline (grpc delivers the status after the
        # messages): 0.5 s, a floor for the status, not a bound on anything measured.
        unread = stub.ServerStream(echo_pb2.EchoRequest(count=2), timeout=0.5)
        assert (await unread.read()).index == 0
        await _until(lambda: len(codes) == 2)
        complete = stub.ServerStream(echo_pb2.EchoRequest(count=2), timeout=5)
        assert [r.index async for r in complete] == [0, 1]
        await _until(lambda: len(codes) == 3)
        assert codes == [grpc.StatusCode.CANCELLED, await unread.code(), await complete.code()]
    assert codes[1:] == [grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.OK]


async def test_observation_of_a_refused_client_stream_matches_what_the_caller_gets(
    registry: Registry, recording_server: RecordingEcho
) -> None:
    from grpcmesh.middleware.client_side import ClientCall, ClientObservation

    codes: list[grpc.StatusCode | None] = []

    def observe(call: ClientCall) -> Any:
        return lambda done: codes.append(done.code)

    async with MeshChannel(registry, "recording", observer=ClientObservation([observe])) as channel:
        stub = echo_pb2_grpc.EchoStub(channel)
        for attempt in range(5):
            upload: Any = stub.ClientStream(timeout=5)
            await upload.write(echo_pb2.EchoRequest(message="a", fail_code=grpc.StatusCode.NOT_FOUND.value[0]))
            await upload.done_writing()
            with pytest.raises(grpc.aio.AioRpcError) as failure:
                await upload
            await _until(lambda attempt=attempt: len(codes) == attempt + 1)  # type: ignore[misc]
            assert codes[-1] is failure.value.code()
