"""grpc.aio's ``call.write()`` API keeps working behind every client interceptor we ship.

grpc.aio makes ``write()`` wait until the interceptors return the call, so an interceptor
that waits for a streaming-request call to finish before returning it deadlocks this API.
"""

from __future__ import annotations

import asyncio
from typing import Any

from prometheus_client import CollectorRegistry

from grpcmesh.middleware import (
    auth_client_interceptors,
    auth_server_interceptor,
    logging_client_interceptors,
    metrics_client_interceptors,
    setup_tracing,
    tracing_client_interceptors,
)
from grpcmesh.protos import echo_pb2
from tests.middleware.echo_calls import echo_server, echo_stub


def full_client_chain() -> list[Any]:
    return [
        *tracing_client_interceptors(setup_tracing("caller")),
        *logging_client_interceptors(),
        *metrics_client_interceptors(CollectorRegistry()),
        *auth_client_interceptors("k3y", caller="caller"),
    ]


async def test_write_api_for_client_and_bidi_streams() -> None:
    async with (
        echo_server([auth_server_interceptor("k3y", policy={"caller": ["*"]})]) as port,
        echo_stub(port, full_client_chain()) as stub,
    ):
        upload: Any = stub.ClientStream()
        for message in ("a", "b"):
            await asyncio.wait_for(upload.write(echo_pb2.EchoRequest(message=message)), 5)
        await asyncio.wait_for(upload.done_writing(), 5)
        assert (await asyncio.wait_for(upload, 5)).message == "a,b"

        chat: Any = stub.BidiStream()
        await asyncio.wait_for(chat.write(echo_pb2.EchoRequest(message="x")), 5)
        assert (await asyncio.wait_for(chat.read(), 5)).message == "x"
        await chat.done_writing()
        assert [reply.message async for reply in chat] == []
