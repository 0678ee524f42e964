"""The vertical slice through the public API: a Mesh serves Echo, another Mesh calls it by name."""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest

import grpcmesh
from grpcmesh.protos import echo_pb2, echo_pb2_grpc
from grpcmesh.testing import EchoServicer


async def test_server_and_channel_through_the_public_api(tmp_path: Path) -> None:
    url = f"sqlite://{tmp_path}/mesh.db"
    async with grpcmesh.Mesh(url) as server_mesh, grpcmesh.Mesh(url) as client_mesh:
        servers = []
        for n in range(2):
            server = server_mesh.server("echo-service", version="v1", instance_id=f"e{n}", handle_signals=False)
            echo_pb2_grpc.add_EchoServicer_to_server(EchoServicer(f"e{n}"), server.grpc)
            await server.start()
            servers.append(server)
        stub = echo_pb2_grpc.EchoStub(client_mesh.channel("echo-service"))
        replies = [await stub.Unary(echo_pb2.EchoRequest(message=str(i)), timeout=5) for i in range(20)]
        assert [r.message for r in replies] == [str(i) for i in range(20)]
        assert {r.instance_id for r in replies} == {"e0", "e1"}
        assert client_mesh.channel("echo-service") is client_mesh.channel("echo-service")

        filtered = echo_pb2_grpc.EchoStub(client_mesh.channel("echo-service", version="v2"))
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await filtered.Unary(echo_pb2.EchoRequest(message="x"), timeout=1)
        assert err.value.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)
        assert "echo-service" in (err.value.details() or "")

    with pytest.raises(grpcmesh.ClosedError, match="closed"):
        client_mesh.channel("echo-service")
