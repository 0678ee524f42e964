"""Child process for call-semantics tests: a mesh server in a chain of Echo services.

Usage: python -m tests.client.hop_instance URL NAME [--next NAME]
With ``--next``, ``Echo.Unary`` calls the next service's ``Echo.Unary`` through
``mesh.channel(NEXT)`` (passing no timeout and no metadata of its own) and returns its
reply; without, it answers with JSON of what it saw: ``time_remaining()`` and
``x-request-id``. Prints "ready PORT" once registered; SIGTERM stops it gracefully.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json

import grpc

from grpcmesh import Mesh
from grpcmesh.protos import echo_pb2, echo_pb2_grpc
from grpcmesh.testing import EchoServicer


class HopEcho(EchoServicer):
    def __init__(self, mesh: Mesh, instance_id: str, next_service: str | None) -> None:
        super().__init__(instance_id)
        self.mesh = mesh
        self.next_service = next_service

    async def Unary(self, request: echo_pb2.EchoRequest, context: grpc.aio.ServicerContext) -> echo_pb2.EchoReply:  # type: ignore[type-arg]
        if self.next_service is not None:
            stub = echo_pb2_grpc.EchoStub(self.mesh.channel(self.next_service))
            reply = await stub.Unary(echo_pb2.EchoRequest(message=request.message))
            return echo_pb2.EchoReply(message=reply.message, instance_id=self.instance_id)
        metadata = {key: value for key, value in context.invocation_metadata() or ()}
        seen = {"remaining": context.time_remaining(), "request_id": metadata.get("x-request-id")}
        return echo_pb2.EchoReply(message=json.dumps(seen), instance_id=self.instance_id)


async def main(args: argparse.Namespace) -> None:
    async with Mesh(args.url) as mesh:
        server = mesh.server(args.name, host="127.0.0.1", port=0, propagation_delay=0.1, shutdown_grace=2.0)
        echo_pb2_grpc.add_EchoServicer_to_server(HopEcho(mesh, args.name, args.next), server.grpc)
        await server.start()
        print(f"ready {server.port}", flush=True)
        await server.serve()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("url")
    parser.add_argument("name")
    parser.add_argument("--next", default=None)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(main(parser.parse_args()))
