"""A real implementation of the bundled ``grpcmesh.echo.v1.Echo`` service (all four RPC kinds).

Each reply names the instance that served it, so tests and benchmarks can see where the
balancer sent a call; requests can ask for a delay or a failure status.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import grpc

from grpcmesh.protos import echo_pb2, echo_pb2_grpc


class EchoServicer(echo_pb2_grpc.EchoServicer):
    """Echoes messages back, tagged with ``instance_id``; counts the calls it served."""

    def __init__(self, instance_id: str) -> None:
        self.instance_id = instance_id
        self.calls = 0

    async def _apply(self, request: echo_pb2.EchoRequest, context: grpc.aio.ServicerContext) -> None:  # type: ignore[type-arg]
        self.calls += 1
        if request.delay_ms > 0:
            await asyncio.sleep(request.delay_ms / 1000)
        if request.fail_code:
            code = grpc.StatusCode(_status_code(request.fail_code))
            await context.abort(code, f"asked to fail by {self.instance_id}")

    def _reply(self, message: str, index: int = 0) -> echo_pb2.EchoReply:
        return echo_pb2.EchoReply(message=message, instance_id=self.instance_id, index=index)

    async def Unary(self, request: echo_pb2.EchoRequest, context: grpc.aio.ServicerContext) -> echo_pb2.EchoReply:  # type: ignore[type-arg]
        await self._apply(request, context)
        return self._reply(request.message)

    async def ServerStream(
        self,
        request: echo_pb2.EchoRequest,
        context: grpc.aio.ServicerContext,  # type: ignore[type-arg]
    ) -> AsyncIterator[echo_pb2.EchoReply]:
        await self._apply(request, context)
        for index in range(max(request.count, 1)):
            yield self._reply(request.message, index)

    async def ClientStream(
        self,
        request_iterator: AsyncIterator[echo_pb2.EchoRequest],
        context: grpc.aio.ServicerContext,  # type: ignore[type-arg]
    ) -> echo_pb2.EchoReply:
        parts = []
        async for request in request_iterator:
            await self._apply(request, context)
            parts.append(request.message)
        return self._reply(",".join(parts), len(parts))

    async def BidiStream(
        self,
        request_iterator: AsyncIterator[echo_pb2.EchoRequest],
        context: grpc.aio.ServicerContext,  # type: ignore[type-arg]
    ) -> AsyncIterator[echo_pb2.EchoReply]:
        index = 0
        async for request in request_iterator:
            await self._apply(request, context)
            yield self._reply(request.message, index)
            index += 1


def _status_code(value: int) -> tuple[int, str]:
    for code in grpc.StatusCode:
        if code.value[0] == value:
            return code.value  # type: ignore[no-any-return]
    return grpc.StatusCode.UNKNOWN.value  # type: ignore[no-any-return]


async def start_echo_server(instance_id: str, host: str = "127.0.0.1", port: int = 0) -> tuple[grpc.aio.Server, int]:
    """Start a plain ``grpc.aio`` server with only the Echo service; returns it and its port."""
    server = grpc.aio.server()
    echo_pb2_grpc.add_EchoServicer_to_server(EchoServicer(instance_id), server)
    bound = server.add_insecure_port(f"{host}:{port}")
    await server.start()
    return server, bound
