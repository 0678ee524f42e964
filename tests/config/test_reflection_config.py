"""Reflection as configured, end to end with real servers: off, behind the shared key, or public."""

from __future__ import annotations

import itertools
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from grpcmesh import Mesh
from grpcmesh.middleware.auth import SERVICE_KEY_HEADER
from grpcmesh.protos import echo_pb2_grpc
from grpcmesh.testing import EchoServicer

ECHO = "grpcmesh.echo.v1.Echo"
KEY = "reflection-test-key-0123456789"
_registries = itertools.count()


def config_file(tmp_path: Path, *, reflection: bool, key: bool, public: bool = False) -> Path:
    text = (
        "service:\n  name: refl\n  port: 0\n  propagation_delay: 0s\n"
        f"  reflection: {str(reflection).lower()}\n"
        f"registry:\n  type: memory\n  address: reflection-config-{next(_registries)}\n"
        "logging:\n  enabled: false\n"
    )
    if key:
        text += f"security:\n  service_auth_key: {KEY}\n  public_reflection: {str(public).lower()}\n"
    path = tmp_path / "svc.yaml"
    path.write_text(text)
    return path


async def reflect(target: str, metadata: tuple[tuple[str, str], ...] = ()) -> reflection_pb2.ServerReflectionResponse:
    async with grpc.aio.insecure_channel(target) as channel:
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        request = reflection_pb2.ServerReflectionRequest(file_containing_symbol=ECHO)
        call = stub.ServerReflectionInfo(iter([request]), metadata=metadata, timeout=10)
        [reply] = [reply async for reply in call]
        return reply


async def health(target: str) -> int:
    async with grpc.aio.insecure_channel(target) as channel:
        reply = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=10)
        return int(reply.status)


async def serve(path: Path) -> tuple[Mesh, str]:
    mesh = Mesh.from_config(path, env={})
    server = mesh.server()
    echo_pb2_grpc.add_EchoServicer_to_server(EchoServicer("refl"), server.grpc)
    await server.start()
    return mesh, server.target


async def test_reflection_off_in_the_config_is_unimplemented(tmp_path: Path) -> None:
    mesh, target = await serve(config_file(tmp_path, reflection=False, key=False))
    async with mesh:
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await reflect(target)
        assert info.value.code() == grpc.StatusCode.UNIMPLEMENTED
        assert await health(target) == health_pb2.HealthCheckResponse.SERVING


async def test_reflection_without_auth_returns_full_schemas(tmp_path: Path) -> None:
    mesh, target = await serve(config_file(tmp_path, reflection=True, key=False))
    async with mesh:
        reply = await reflect(target)
        assert reply.file_descriptor_response.file_descriptor_proto


async def test_reflection_needs_the_key_when_auth_is_on(tmp_path: Path) -> None:
    mesh, target = await serve(config_file(tmp_path, reflection=True, key=True))
    async with mesh:
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await reflect(target)
        assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
        reply = await reflect(target, ((SERVICE_KEY_HEADER, KEY),))
        assert reply.file_descriptor_response.file_descriptor_proto
        # Health stays open for probes and load balancers.
        assert await health(target) == health_pb2.HealthCheckResponse.SERVING


async def test_public_reflection_opens_it_without_the_key(tmp_path: Path) -> None:
    mesh, target = await serve(config_file(tmp_path, reflection=True, key=True, public=True))
    async with mesh:
        reply = await reflect(target)
        assert reply.file_descriptor_response.file_descriptor_proto
