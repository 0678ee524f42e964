"""MeshServer in-process: health, reflection, registration, interceptor chain, recovery, graceful stop."""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from grpcmesh import HealthStatus, Mesh, Registry, ServerError, ServiceInstance, check_service_health
from grpcmesh.protos import echo_pb2, echo_pb2_grpc
from grpcmesh.server import MeshServer
from grpcmesh.testing import EchoServicer
from tests.helpers import next_matching

ECHO = "grpcmesh.echo.v1.Echo"
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


async def check(target: str, service: str = "") -> int:
    async with grpc.aio.insecure_channel(target) as channel:
        reply = await health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service=service), timeout=5
        )
        return int(reply.status)


async def echo_server(mesh: Mesh, name: str = "echo", **kwargs: Any) -> MeshServer:
    kwargs.setdefault("propagation_delay", 0.05)
    server = mesh.server(name, **kwargs)
    echo_pb2_grpc.add_EchoServicer_to_server(EchoServicer(name), server.grpc)
    return server


async def test_serves_health_and_registers_bound_port(mesh: Mesh, registry: Registry) -> None:
    async with await echo_server(mesh, version="v1", metadata={"zone": "a"}) as server:
        assert server.port > 0
        assert await check(server.target) == SERVING
        assert await check(server.target, ECHO) == SERVING
        [instance] = await registry.get_service("echo")
        assert instance == server.instance
        assert (instance.address, instance.port, instance.version) == ("127.0.0.1", server.port, "v1")
        assert instance.endpoints == ("Unary", "ServerStream", "ClientStream", "BidiStream")
        assert instance.metadata == {"grpc.services": ECHO, "zone": "a"}
        assert instance.health is HealthStatus.SERVING
    assert await registry.get_service("echo") == []


async def test_reflection_lists_the_services(mesh: Mesh) -> None:
    async with await echo_server(mesh) as server, grpc.aio.insecure_channel(server.target) as channel:
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        call = stub.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]))
        replies = [reply async for reply in call]
        names = {svc.name for svc in replies[0].list_services_response.service}
        assert names == {ECHO, "grpc.health.v1.Health", "grpc.reflection.v1alpha.ServerReflection"}
        call = stub.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(file_containing_symbol=ECHO)]))
        [reply] = [r async for r in call]
        assert reply.file_descriptor_response.file_descriptor_proto


async def test_reflection_can_be_switched_off(mesh: Mesh) -> None:
    async with await echo_server(mesh, reflection=False) as server, grpc.aio.insecure_channel(server.target) as ch:
        call = reflection_pb2_grpc.ServerReflectionStub(ch).ServerReflectionInfo(
            iter([reflection_pb2.ServerReflectionRequest(list_services="")])
        )
        with pytest.raises(grpc.aio.AioRpcError) as info:
            _ = [r async for r in call]
        assert info.value.code() is grpc.StatusCode.UNIMPLEMENTED


class FaultyEcho(EchoServicer):
    """Echo whose handlers raise on request, for every RPC kind."""

    async def Unary(self, request: echo_pb2.EchoRequest, context: Any) -> echo_pb2.EchoReply:
        if request.message == "raise":
            raise RuntimeError("handler bug")
        return await super().Unary(request, context)

    async def ServerStream(self, request: echo_pb2.EchoRequest, context: Any) -> AsyncIterator[echo_pb2.EchoReply]:
        yield self._reply("first")
        raise KeyError("stream bug")

    async def ClientStream(self, request_iterator: Any, context: Any) -> echo_pb2.EchoReply:
        async for _ in request_iterator:
            raise ValueError("client stream bug")
        return self._reply("none")

    async def BidiStream(self, request_iterator: Any, context: Any) -> AsyncIterator[echo_pb2.EchoReply]:
        async for request in request_iterator:
            yield self._reply(request.message)
            raise ZeroDivisionError("bidi bug")


async def test_recovery_turns_exceptions_into_internal_and_keeps_serving(
    mesh: Mesh, caplog: pytest.LogCaptureFixture
) -> None:
    server = mesh.server("faulty", propagation_delay=0)
    echo_pb2_grpc.add_EchoServicer_to_server(FaultyEcho("f"), server.grpc)
    request = echo_pb2.EchoRequest(message="raise")
    async with server, grpc.aio.insecure_channel(server.target) as channel:
        stub = echo_pb2_grpc.EchoStub(channel)
        with caplog.at_level(logging.ERROR, logger="grpcmesh.recovery"):
            with pytest.raises(grpc.aio.AioRpcError) as unary:
                await stub.Unary(request, timeout=5)
            stream = stub.ServerStream(request, timeout=5)
            got = [(await stream.read()).message]
            with pytest.raises(grpc.aio.AioRpcError) as server_stream:
                await stream.read()
            with pytest.raises(grpc.aio.AioRpcError) as client_stream:
                await stub.ClientStream(iter([request]), timeout=5)
            with pytest.raises(grpc.aio.AioRpcError) as bidi:
                _ = [r async for r in stub.BidiStream(iter([request, request]), timeout=5)]
        for info in (unary, server_stream, client_stream, bidi):
            assert info.value.code() is grpc.StatusCode.INTERNAL
            assert "internal error in /grpcmesh.echo.v1.Echo/" in (info.value.details() or "")
            assert "bug" not in (info.value.details() or "")  # the exception text stays in the server's log
        assert got == ["first"]
        logged = "\n".join(r.getMessage() + (r.exc_text or "") for r in caplog.records)
        for bug in ("handler bug", "stream bug", "client stream bug", "bidi bug"):
            assert bug in logged
        reference = (unary.value.details() or "").rsplit("ref ", 1)[1].rstrip(")")
        assert reference in logged
        # Deliberate statuses pass through, and the server keeps serving.
        with pytest.raises(grpc.aio.AioRpcError) as aborted:
            await stub.Unary(echo_pb2.EchoRequest(message="x", fail_code=grpc.StatusCode.NOT_FOUND.value[0]))
        assert aborted.value.code() is grpc.StatusCode.NOT_FOUND
        assert (await stub.Unary(echo_pb2.EchoRequest(message="still here"), timeout=5)).message == "still here"
        assert await check(server.target) == SERVING


Continuation = Callable[[grpc.HandlerCallDetails], Awaitable[Any]]


class Recording(grpc.aio.ServerInterceptor):  # type: ignore[type-arg]
    def __init__(self, label: str, seen: list[str], fail: bool = False) -> None:
        self.label, self.seen, self.fail = label, seen, fail

    async def intercept_service(self, continuation: Continuation, details: grpc.HandlerCallDetails) -> Any:
        if details.method.startswith("/grpcmesh."):
            self.seen.append(self.label)
            if self.fail:
                raise RuntimeError(f"interceptor {self.label} bug")
        return await continuation(details)


async def test_interceptors_run_in_order_mesh_then_server(registry: Registry) -> None:
    seen: list[str] = []
    mesh = Mesh(registry, server_interceptors=[Recording("mesh-1", seen), Recording("mesh-2", seen)])
    server = await echo_server(mesh, interceptors=[Recording("server", seen)])
    async with mesh, server, grpc.aio.insecure_channel(server.target) as channel:
        await echo_pb2_grpc.EchoStub(channel).Unary(echo_pb2.EchoRequest(message="hi"), timeout=5)
    assert seen == ["mesh-1", "mesh-2", "server"]


async def test_a_failing_interceptor_is_recovered_too(mesh: Mesh) -> None:
    server = await echo_server(mesh, interceptors=[Recording("bad", [], fail=True)])
    async with server, grpc.aio.insecure_channel(server.target) as channel:
        stub = echo_pb2_grpc.EchoStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await stub.Unary(echo_pb2.EchoRequest(message="hi"), timeout=5)
        assert info.value.code() is grpc.StatusCode.INTERNAL
        assert await check(server.target) == SERVING


async def test_graceful_stop_finishes_in_flight_calls(mesh: Mesh, registry: Registry) -> None:
    server = await echo_server(mesh, propagation_delay=0.3, shutdown_grace=30)
    await server.start()
    async with grpc.aio.insecure_channel(server.target) as channel:
        stub = echo_pb2_grpc.EchoStub(channel)
        watch = health_pb2_grpc.HealthStub(channel).Watch(health_pb2.HealthCheckRequest(service=""))
        assert (await watch.read()).status == SERVING
        slow = asyncio.ensure_future(stub.Unary(echo_pb2.EchoRequest(message="slow", delay_ms=1000), timeout=10))
        streaming = stub.ServerStream(echo_pb2.EchoRequest(message="s", count=3, delay_ms=800), timeout=10)
        await asyncio.sleep(0.2)  # both calls are running in the server
        stopping = asyncio.ensure_future(server.stop())
        assert (await watch.read()).status == NOT_SERVING
        gone = await next_matching(registry.watch("echo"), lambda snapshot: snapshot == [], timeout=5)
        assert gone == []
        assert not stopping.done()  # still draining
        assert (await slow).message == "slow"
        assert [r.index async for r in streaming] == [0, 1, 2]
        # The open health Watch stream must not hold the drain for the whole 30 s grace.
        await asyncio.wait_for(stopping, 15)
        assert await watch.read() is grpc.aio.EOF
        assert await watch.code() is grpc.StatusCode.OK
    assert not server.running
    with socket.socket() as sock:
        assert sock.connect_ex(("127.0.0.1", server.port)) != 0  # the listener is closed


async def test_lifecycle_misuse_is_reported(mesh: Mesh) -> None:
    server = await echo_server(mesh)
    with pytest.raises(ServerError, match="not started"):
        _ = server.port
    await server.start()
    with pytest.raises(ServerError, match="called once"):
        await server.start()
    await asyncio.gather(server.stop(), server.stop())  # concurrent stops are one stop
    await server.stop()
    never_started = await echo_server(mesh, "other")
    await never_started.stop()
    await asyncio.wait_for(never_started.wait_stopped(), 1)


async def test_busy_port_is_a_server_error(mesh: Mesh, registry: Registry) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        server = await echo_server(mesh, port=sock.getsockname()[1])
        with pytest.raises(ServerError, match=r"cannot listen on 127\.0\.0\.1"):
            await server.start()
    assert await registry.get_service("echo") == []


async def test_serve_stops_on_stop_call(mesh: Mesh, registry: Registry) -> None:
    server = await echo_server(mesh, handle_signals=False)
    serving = asyncio.ensure_future(server.serve())
    await next_matching(registry.watch("echo"), lambda snapshot: len(snapshot) == 1, timeout=5)
    assert not serving.done()
    await server.stop()
    await asyncio.wait_for(serving, 5)


async def test_mesh_close_stops_its_servers(registry: Registry) -> None:
    mesh = Mesh(registry)
    server = await echo_server(mesh)
    await server.start()
    assert len(await registry.get_service("echo")) == 1
    await mesh.close()
    assert not server.running
    assert await registry.get_service("echo") == []
    assert await registry.list_services() == []  # the caller's registry is still open


async def test_aggregate_health(mesh: Mesh, registry: Registry) -> None:
    assert (await check_service_health(registry, "echo")).status is HealthStatus.UNKNOWN
    async with await echo_server(mesh) as first, await echo_server(mesh) as second:
        report = await check_service_health(registry, "echo", timeout=5)
        assert report.status is HealthStatus.SERVING
        assert {item.instance.id for item in report.instances} == {first.instance.id, second.instance.id}
        assert report.serving == 2
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            dead_port = sock.getsockname()[1]
        dead = ServiceInstance(name="echo", address="127.0.0.1", port=dead_port, id="dead")
        await registry.register(dead)
        report = await check_service_health(registry, "echo", timeout=2)
        assert report.status is HealthStatus.NOT_SERVING
        assert report.serving == 2
        [failed] = [item for item in report.instances if item.instance.id == "dead"]
        assert failed.status is HealthStatus.NOT_SERVING
        assert failed.error is not None
        assert failed.error.startswith("UNAVAILABLE")
