"""Fixtures for the xDS tests: Echo stubs for an outside client, a registry with Echo servers."""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest

from grpcmesh import Registry, ServiceInstance, open_registry
from grpcmesh.testing import start_echo_server
from tests.helpers import ROOT

SERVICE = "echo-service"


@pytest.fixture(scope="session")
def client_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory with the plain xDS client script and Echo stubs generated from echo.proto.

    The stubs are compiled here, outside the grpcmesh package, as a service written
    elsewhere would compile them: the client imports ``echo_pb2``, never ``grpcmesh``.
    """
    out = tmp_path_factory.mktemp("xds-client")
    shutil.copy(ROOT / "src" / "grpcmesh" / "protos" / "echo.proto", out / "echo.proto")
    shutil.copy(Path(__file__).with_name("xds_client.py"), out / "xds_client.py")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "grpc_tools.protoc",
            f"-I{out}",
            f"--python_out={out}",
            f"--grpc_python_out={out}",
            "echo.proto",
        ],
        check=True,
    )
    return out


class EchoFleet:
    """Real Echo servers registered by hand in a registry (what a grpcmesh service would do)."""

    def __init__(self, registry: Registry) -> None:
        self.registry = registry
        self.servers: dict[str, grpc.aio.Server] = {}
        self.instances: dict[str, ServiceInstance] = {}

    async def add(self, instance_id: str, **fields: object) -> ServiceInstance:
        server, port = await start_echo_server(instance_id)
        self.servers[instance_id] = server
        instance = ServiceInstance(name=SERVICE, id=instance_id, address="127.0.0.1", port=port, **fields)
        await self.registry.register(instance)
        self.instances[instance_id] = instance
        return instance

    async def remove(self, instance_id: str) -> None:
        await self.registry.deregister(self.instances.pop(instance_id))

    async def stop_server(self, instance_id: str) -> None:
        await self.servers.pop(instance_id).stop(1.0)

    async def close(self) -> None:
        for server in self.servers.values():
            await server.stop(None)
        self.servers.clear()


@pytest.fixture
def registry_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'registry.db'}"


@pytest.fixture
async def fleet(registry_url: str) -> AsyncIterator[EchoFleet]:
    registry = open_registry(registry_url)
    fleet = EchoFleet(registry)
    try:
        yield fleet
    finally:
        await fleet.close()
        await registry.close()
