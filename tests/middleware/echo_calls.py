"""Real Echo servers and channels with interceptors, and one call of each RPC kind."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

import grpc

from grpcmesh.protos import echo_pb2, echo_pb2_grpc
from grpcmesh.testing import EchoServicer


@asynccontextmanager
async def echo_server(
    interceptors: Sequence[Any] = (),
    servicer: Any = None,
    credentials: grpc.ServerCredentials | None = None,
) -> AsyncIterator[int]:
    """An Echo server on 127.0.0.1 with ``interceptors``; yields its port, stops it afterwards."""
    server = grpc.aio.server(interceptors=list(interceptors))
    echo_pb2_grpc.add_EchoServicer_to_server(servicer or EchoServicer("echo-1"), server)
    if credentials is None:
        port = server.add_insecure_port("127.0.0.1:0")
    else:
        port = server.add_secure_port("127.0.0.1:0", credentials)
    await server.start()
    try:
        yield port
    finally:
        await server.stop(None)


@asynccontextmanager
async def echo_stub(
    port: int, interceptors: Sequence[Any] = (), credentials: grpc.ChannelCredentials | None = None
) -> AsyncIterator[echo_pb2_grpc.EchoStub]:
    target = f"127.0.0.1:{port}"
    if credentials is None:
        channel = grpc.aio.insecure_channel(target, interceptors=list(interceptors))
    else:
        channel = grpc.aio.secure_channel(target, credentials, interceptors=list(interceptors))
    async with channel:
        yield echo_pb2_grpc.EchoStub(channel)


def requests(*messages: str, fail_code: int = 0) -> AsyncIterator[echo_pb2.EchoRequest]:
    async def generate() -> AsyncIterator[echo_pb2.EchoRequest]:
        for message in messages:
            yield echo_pb2.EchoRequest(message=message, fail_code=fail_code)

    return generate()


async def call_kind(stub: echo_pb2_grpc.EchoStub, kind: str, fail_code: int = 0) -> grpc.StatusCode:
    """Make one call of ``kind`` (unary, server_stream, client_stream, bidi_stream); its status code.

    A failing streaming-request call writes one message and half-closes before it waits: when
    the server ends a call while the client is still writing, grpc.aio itself sometimes reports
    INTERNAL instead of the server's code (seen without any interceptor), which tests must not
    mistake for an interceptor bug.
    """
    if fail_code and kind in ("client_stream", "bidi_stream"):
        return await _failing_stream_call(stub, kind, fail_code)
    try:
        if kind == "unary":
            await stub.Unary(echo_pb2.EchoRequest(message="u", fail_code=fail_code))
        elif kind == "server_stream":
            replies = [r async for r in stub.ServerStream(echo_pb2.EchoRequest(count=2, fail_code=fail_code))]
            assert len(replies) == 2
        elif kind == "client_stream":
            reply = await stub.ClientStream(requests("a", "b", fail_code=fail_code))
            assert reply.message == "a,b"
        elif kind == "bidi_stream":
            replies = [r async for r in stub.BidiStream(requests("a", "b", fail_code=fail_code))]
            assert [r.message for r in replies] == ["a", "b"]
        else:
            raise ValueError(kind)
    except grpc.aio.AioRpcError as error:
        return error.code()
    return grpc.StatusCode.OK


async def _failing_stream_call(stub: echo_pb2_grpc.EchoStub, kind: str, fail_code: int) -> grpc.StatusCode:
    call: Any = stub.ClientStream() if kind == "client_stream" else stub.BidiStream()
    await call.write(echo_pb2.EchoRequest(message="a", fail_code=fail_code))
    await call.done_writing()
    try:
        if kind == "client_stream":
            await call
        else:
            async for _ in call:
                pass
    except grpc.aio.AioRpcError as error:
        return error.code()
    return await call.code()  # type: ignore[no-any-return]


KINDS = ["unary", "server_stream", "client_stream", "bidi_stream"]
METHOD_OF_KIND = {
    "unary": "Unary",
    "server_stream": "ServerStream",
    "client_stream": "ClientStream",
    "bidi_stream": "BidiStream",
}
