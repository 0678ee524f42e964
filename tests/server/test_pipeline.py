"""MeshServer's one wrapper per method: built once, concerns in order, recovery seen by observers,
a broken concern never fails a call, user interceptors still run, public grpcio API only."""

from __future__ import annotations

import ast
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import grpc
import pytest

import grpcmesh
from grpcmesh import Mesh, Registry
from grpcmesh.middleware.server_side import ServerCall, ServerConcern, ServerFinish
from grpcmesh.protos import echo_pb2, echo_pb2_grpc
from grpcmesh.server import MeshServer, ServerSettings
from grpcmesh.testing import EchoServicer
from tests.middleware.echo_calls import KINDS, call_kind

SRC = Path(grpcmesh.__file__).parent


class Recorder:
    """A concern that records what it sees, and how often it was asked whether it applies."""

    def __init__(self, label: str, seen: list[str]) -> None:
        self.label, self.seen = label, seen
        self.asked: list[str] = []
        self.codes: list[grpc.StatusCode | None] = []

    def applies(self, method: str) -> bool:
        self.asked.append(method)
        return True

    def observe(self, call: ServerCall) -> ServerFinish:
        self.seen.append(f"{self.label} start")

        def finish(done: ServerCall) -> None:
            self.seen.append(f"{self.label} end")
            self.codes.append(done.code)

        return finish

    def concern(self) -> ServerConcern:
        return ServerConcern(self.label, observe=self.observe, applies=self.applies)


class Crashing(EchoServicer):
    async def Unary(self, request: echo_pb2.EchoRequest, context: Any) -> echo_pb2.EchoReply:
        if request.message == "crash":
            raise ValueError("secret internals")
        return await super().Unary(request, context)


def serve(registry: Registry, concerns: list[ServerConcern], **kwargs: Any) -> MeshServer:
    settings = ServerSettings(name="echo", host="127.0.0.1", port=0, handle_signals=False, propagation_delay=0.0)
    server = MeshServer(registry, settings, concerns=concerns, **kwargs)
    echo_pb2_grpc.add_EchoServicer_to_server(Crashing("e1"), server.grpc)
    return server  # started by ``async with``


async def test_wrapper_is_built_once_per_method_and_runs_concerns_in_order(registry: Registry) -> None:
    seen: list[str] = []
    first, second = Recorder("first", seen), Recorder("second", seen)
    server = serve(registry, [first.concern(), second.concern()])
    async with server, grpc.aio.insecure_channel(server.target) as channel:
        stub = echo_pb2_grpc.EchoStub(channel)
        for kind in KINDS:
            for _ in range(3):
                assert await call_kind(stub, kind) is grpc.StatusCode.OK
    echo = [m for m in first.asked if m.startswith("/grpcmesh.echo.v1.Echo/")]
    assert sorted(echo) == sorted(set(echo))  # asked once per method, not per call
    assert len(set(echo)) == 4
    assert seen[:4] == ["first start", "second start", "second end", "first end"]
    assert len(first.codes) == 12
    assert set(first.codes) == {grpc.StatusCode.OK}


async def test_observers_see_the_internal_status_recovery_answers(registry: Registry) -> None:
    recorder = Recorder("metrics", [])
    server = serve(registry, [recorder.concern()])
    async with server, grpc.aio.insecure_channel(server.target) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await echo_pb2_grpc.EchoStub(channel).Unary(echo_pb2.EchoRequest(message="crash"), timeout=5)
    assert info.value.code() is grpc.StatusCode.INTERNAL
    assert "secret internals" not in (info.value.details() or "")
    assert recorder.codes == [grpc.StatusCode.INTERNAL]


async def test_a_broken_concern_is_logged_and_never_fails_the_call(
    registry: Registry, caplog: pytest.LogCaptureFixture
) -> None:
    def bad_start(call: ServerCall) -> ServerFinish:
        raise RuntimeError("observer bug at start")

    def bad_end(call: ServerCall) -> ServerFinish:
        def finish(done: ServerCall) -> None:
            raise RuntimeError("observer bug at end")

        return finish

    good = Recorder("good", [])
    concerns = [ServerConcern("a", observe=bad_start), ServerConcern("b", observe=bad_end), good.concern()]
    server = serve(registry, concerns)
    with caplog.at_level(logging.ERROR, logger="grpcmesh.middleware"):
        async with server, grpc.aio.insecure_channel(server.target) as channel:
            reply = await echo_pb2_grpc.EchoStub(channel).Unary(echo_pb2.EchoRequest(message="hi"), timeout=5)
    assert reply.message == "hi"
    assert good.codes == [grpc.StatusCode.OK]
    assert "observer bug at start" in caplog.text
    assert "observer bug at end" in caplog.text


async def test_a_guard_refuses_before_the_handler_runs(registry: Registry) -> None:
    async def refuse(call: ServerCall) -> None:
        await call.context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, "shed")

    recorder = Recorder("metrics", [])
    server = serve(registry, [recorder.concern(), ServerConcern("shed", guard=refuse)])
    async with server, grpc.aio.insecure_channel(server.target) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await echo_pb2_grpc.EchoStub(channel).Unary(echo_pb2.EchoRequest(message="x"), timeout=5)
    assert info.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
    assert recorder.codes == [grpc.StatusCode.RESOURCE_EXHAUSTED]


Continuation = Callable[[grpc.HandlerCallDetails], Awaitable[Any]]


class Outer(grpc.aio.ServerInterceptor):  # type: ignore[type-arg]
    """A user interceptor wrapping the handler it gets: runs outside the mesh's wrapper."""

    def __init__(self, seen: list[str]) -> None:
        self.seen = seen

    async def intercept_service(self, continuation: Continuation, details: grpc.HandlerCallDetails) -> Any:
        handler = await continuation(details)
        if handler is None or handler.unary_unary is None:
            return handler
        inner, seen = handler.unary_unary, self.seen

        async def wrapped(request: Any, context: Any) -> Any:
            seen.append("user start")
            try:
                return await inner(request, context)
            finally:
                seen.append("user end")

        return grpc.unary_unary_rpc_method_handler(wrapped, handler.request_deserializer, handler.response_serializer)


async def test_user_interceptors_run_outside_the_mesh_wrapper(registry: Registry) -> None:
    seen: list[str] = []
    server = serve(registry, [Recorder("mesh", seen).concern()], interceptors=[Outer(seen)])
    async with server, grpc.aio.insecure_channel(server.target) as channel:
        await echo_pb2_grpc.EchoStub(channel).Unary(echo_pb2.EchoRequest(message="x"), timeout=5)
    assert seen == ["user start", "mesh start", "mesh end", "user end"]


async def test_mesh_server_is_a_public_grpc_aio_server(mesh: Mesh) -> None:
    server = mesh.server("echo", handle_signals=False, propagation_delay=0.0)
    assert isinstance(server.grpc, grpc.aio.Server)


GRPC_PACKAGES = ("grpc", "grpc_health", "grpc_reflection")


def _dotted(node: ast.expr) -> str | None:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        base = _dotted(node.value)
        return None if base is None else f"{base}.{node.attr}"
    return None


def _private_grpc_uses(path: Path) -> list[str]:
    """Imports or attribute chains reaching an underscored part of grpcio, and ``_method_handlers``."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom) and node.module:
            names = [f"{node.module}.{alias.name}" for alias in node.names]
        elif isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.Attribute):
            names = [_dotted(node) or ""]
            if node.attr == "_method_handlers":
                found.append(f"{path.relative_to(SRC)}: {node.attr}")
        else:
            continue
        for name in names:
            parts = name.split(".")
            if parts[0] in GRPC_PACKAGES and any(
                part.startswith("_") and not part.startswith("__") for part in parts[1:]
            ):
                found.append(f"{path.relative_to(SRC)}: {name}")
    return found


def test_no_private_grpcio_api_in_the_package() -> None:
    uses = [use for path in sorted(SRC.rglob("*.py")) if "_pb2" not in path.name for use in _private_grpc_uses(path)]
    assert uses == []


class CatchAll(grpc.GenericRpcHandler):  # type: ignore[misc]
    """A generic handler answering every method it is asked about with ``label``."""

    def __init__(self, label: str) -> None:
        self.label = label

    def service(self, handler_call_details: grpc.HandlerCallDetails) -> Any:
        async def answer(request: bytes, context: Any) -> bytes:
            return self.label.encode()

        return grpc.unary_unary_rpc_method_handler(answer)


async def test_registered_methods_win_over_generic_handlers_and_the_first_servicer_keeps_a_method(
    registry: Registry,
) -> None:
    """The method table (one dict for every registered method) keeps grpc's documented precedence:
    a registered handler beats a generic one added before it, a second servicer for the same
    service does not replace the first, and unknown methods still reach generic handlers."""
    settings = ServerSettings(name="echo", host="127.0.0.1", port=0, handle_signals=False, propagation_delay=0.0)
    server = MeshServer(registry, settings)
    server.grpc.add_generic_rpc_handlers((CatchAll("catch-all"),))
    echo_pb2_grpc.add_EchoServicer_to_server(EchoServicer("first"), server.grpc)
    echo_pb2_grpc.add_EchoServicer_to_server(EchoServicer("second"), server.grpc)
    async with server, grpc.aio.insecure_channel(server.target) as channel:
        reply = await echo_pb2_grpc.EchoStub(channel).Unary(echo_pb2.EchoRequest(message="hi"), timeout=5)
        other = await channel.unary_unary("/some.Other/Method")(b"", timeout=5)
    assert reply.instance_id == "first"
    assert other == b"catch-all"
