"""``grpcmesh register``: servers that know nothing of grpcmesh (plain grpcio, Go) join the mesh.

Each target is followed within 5 s (SERVING, NOT_SERVING, stopped), called through
``mesh.channel`` and through ``xds:///`` by a plain grpcio client, and removed when the
agent gets SIGTERM.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from grpcmesh import Mesh, open_registry
from grpcmesh.model import HealthStatus, ServiceInstance
from grpcmesh.protos import echo_pb2, echo_pb2_grpc
from grpcmesh.registry import Registry
from grpcmesh.xds import XdsServer
from tests.helpers import python_env, read_line_with, start_python, stop_process

pytestmark = pytest.mark.slow

FOLLOW_WITHIN = 5.0
HERE = Path(__file__).parent


class Target:
    """A server in a child process whose health is set over its stdin."""

    def __init__(self, proc: asyncio.subprocess.Process, port: int) -> None:
        self.proc = proc
        self.port = port

    @classmethod
    async def start(cls, *command: str, cwd: Path, env: dict[str, str] | None = None) -> Target:
        proc = await asyncio.create_subprocess_exec(
            *command, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, cwd=cwd, env=env
        )
        line = await read_line_with(proc, "PORT")
        return cls(proc, int(line.split()[1]))

    async def set(self, status: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(f"{status}\n".encode())
        await self.proc.stdin.drain()
        await read_line_with(self.proc, "OK")

    async def stop(self) -> None:
        await stop_process(self.proc)


@pytest.fixture
def registry_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'registry.db'}"


@pytest.fixture
async def registry(registry_url: str) -> AsyncIterator[Registry]:
    async with open_registry(registry_url) as registry:
        yield registry


async def start_agent(registry_url: str, name: str, port: int) -> asyncio.subprocess.Process:
    proc = await start_python(
        "-c",
        "from grpcmesh.cli import main; main()",
        "register",
        name,
        f"127.0.0.1:{port}",
        "--registry",
        registry_url,
        "--version",
        "v1",
        "--metadata",
        "zone=z1",
        "--ttl",
        "3",
        "--check-interval",
        "0.5",
    )
    await read_line_with(proc, "registered")
    return proc


async def health_within(registry: Registry, name: str, status: HealthStatus | None) -> float:
    """Seconds until the registry shows ``name`` with ``status`` (None: no instance at all)."""
    started = time.monotonic()
    while time.monotonic() - started < FOLLOW_WITHIN:
        found = await registry.get_service(name)
        if (status is None and not found) or (found and found[0].health is status):
            return time.monotonic() - started
        await asyncio.sleep(0.05)
    raise AssertionError(f"{name} did not become {status} within {FOLLOW_WITHIN}s: {found}")


async def check_through_xds(registry: Registry, name: str, tmp_path: Path) -> str:
    """A plain grpcio client's Health/Check through xds:///NAME (a child process)."""
    async with XdsServer(registry) as xds:
        bootstrap = tmp_path / "bootstrap.json"
        bootstrap.write_text(xds.bootstrap_json(node_id="agent-test"))
        env = {k: v for k, v in os.environ.items() if not k.startswith("GRPC_XDS")}
        env["GRPC_XDS_BOOTSTRAP"] = str(bootstrap)
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            str(HERE / "xds_health_client.py"),
            f"xds:///{name}",
            stdout=asyncio.subprocess.PIPE,
            env=env,
        )
        try:
            line = await read_line_with(proc, "STATUS", timeout=40)
        finally:
            await stop_process(proc)
    return line.split()[1]


async def follow_and_remove(registry: Registry, registry_url: str, name: str, target: Target) -> None:
    agent = await start_agent(registry_url, name, target.port)
    try:
        print("SERVING after", await health_within(registry, name, HealthStatus.SERVING))
        (instance,) = await registry.get_service(name)
        assert (instance.version, instance.metadata, instance.port) == ("v1", {"zone": "z1"}, target.port)
        await target.set("NOT_SERVING")
        print("NOT_SERVING after", await health_within(registry, name, HealthStatus.NOT_SERVING))
        await target.set("SERVING")
        await health_within(registry, name, HealthStatus.SERVING)
        await target.stop()
        print("stopped target seen after", await health_within(registry, name, HealthStatus.NOT_SERVING))
        agent.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(agent.wait(), 10) == 0
        print("removed after", await health_within(registry, name, None))
    finally:
        await stop_process(agent)
        await target.stop()


async def test_plain_grpcio_server_is_followed_called_and_removed(
    registry: Registry, registry_url: str, plain_dir: Path, tmp_path: Path
) -> None:
    env = {k: v for k, v in python_env().items() if k != "PYTHONPATH"}
    target = await Target.start(sys.executable, "plain_server.py", "plain-1", cwd=plain_dir, env=env)
    agent = await start_agent(registry_url, "plain-echo", target.port)
    try:
        await health_within(registry, "plain-echo", HealthStatus.SERVING)
        async with Mesh(registry) as mesh:
            reply = await echo_pb2_grpc.EchoStub(mesh.channel("plain-echo")).Unary(
                echo_pb2.EchoRequest(message="hi"), timeout=10
            )
        assert reply.instance_id == "plain-1"
        assert await check_through_xds(registry, "plain-echo", tmp_path) == "SERVING"
    finally:
        await stop_process(agent)
    await follow_and_remove(registry, registry_url, "plain-echo", target)


async def test_go_server_is_followed_called_and_removed(
    registry: Registry, registry_url: str, go_server: Path, tmp_path: Path
) -> None:
    target = await Target.start(str(go_server), cwd=tmp_path)
    agent = await start_agent(registry_url, "go-health", target.port)
    try:
        await health_within(registry, "go-health", HealthStatus.SERVING)
        async with Mesh(registry) as mesh:
            reply = await health_pb2_grpc.HealthStub(mesh.channel("go-health")).Check(
                health_pb2.HealthCheckRequest(), timeout=10
            )
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
        assert await check_through_xds(registry, "go-health", tmp_path) == "SERVING"
    finally:
        await stop_process(agent)
    await follow_and_remove(registry, registry_url, "go-health", target)


async def test_agent_falls_back_to_check_when_watch_is_unimplemented(registry: Registry) -> None:
    """A health service with only Check (some frameworks) is polled instead."""
    from grpcmesh.agent import RegistrationAgent

    class CheckOnly(health_pb2_grpc.HealthServicer):  # type: ignore[misc]
        status = health_pb2.HealthCheckResponse.SERVING

        async def Check(self, request: object, context: object) -> health_pb2.HealthCheckResponse:
            return health_pb2.HealthCheckResponse(status=self.status)

    servicer = CheckOnly()
    server = grpc.aio.server()
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    instance = ServiceInstance(name="check-only", id="check-only-1", address="127.0.0.1", port=port)
    try:
        async with RegistrationAgent(registry, instance, check_interval=0.2) as agent:
            await agent.wait_for(HealthStatus.SERVING, FOLLOW_WITHIN)
            servicer.status = health_pb2.HealthCheckResponse.NOT_SERVING
            await agent.wait_for(HealthStatus.NOT_SERVING, FOLLOW_WITHIN)
            (registered,) = await registry.get_service("check-only")
            assert registered.health is HealthStatus.NOT_SERVING
        assert await registry.get_service("check-only") == []
    finally:
        await server.stop(None)
