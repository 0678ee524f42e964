"""Dependency readiness in-process: required dependencies gate health, optional ones never do."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from grpcmesh import Dependency, HealthStatus, Mesh, Registry, ServiceInstance
from grpcmesh.registry.memory import MemoryRegistry
from grpcmesh.server import version_matches
from grpcmesh.server.readiness import DependencyReadiness
from tests.helpers import next_matching
from tests.server.test_server import NOT_SERVING, SERVING, check, echo_server


def backend(version: str = "v1", health: HealthStatus = HealthStatus.SERVING, iid: str = "b1") -> ServiceInstance:
    return ServiceInstance(name="backend", version=version, address="127.0.0.1", port=9, id=iid, health=health)


async def test_required_dependency_gates_health(mesh: Mesh, registry: Registry) -> None:
    server = await echo_server(mesh, "frontend", dependencies=[Dependency("backend", "v1")], readiness_timeout=2)
    async with server, grpc.aio.insecure_channel(server.target) as channel:
        assert await check(server.target) == NOT_SERVING
        assert await check(server.target, "grpcmesh.echo.v1.Echo") == NOT_SERVING
        assert server.instance.health is HealthStatus.NOT_SERVING
        assert server.instance.dependencies == ("backend",)
        watch = health_pb2_grpc.HealthStub(channel).Watch(health_pb2.HealthCheckRequest(service=""))
        assert (await watch.read()).status == NOT_SERVING
        frontends = registry.watch("frontend")

        await registry.register(backend(version="v2", iid="wrong-version"))
        await registry.register(backend(health=HealthStatus.NOT_SERVING, iid="unhealthy"))
        await asyncio.sleep(0.3)
        assert await check(server.target) == NOT_SERVING  # neither instance counts

        await registry.register(backend(version="v1.4.2"))
        assert (await asyncio.wait_for(watch.read(), 5)).status == SERVING
        [me] = await next_matching(frontends, lambda s: s[0].health is HealthStatus.SERVING)
        assert me.id == server.instance.id

        await registry.deregister(backend())
        assert (await asyncio.wait_for(watch.read(), 5)).status == NOT_SERVING
        await next_matching(frontends, lambda s: s[0].health is HealthStatus.NOT_SERVING)
        watch.cancel()


async def test_optional_dependency_never_gates(mesh: Mesh) -> None:
    server = await echo_server(mesh, "frontend", dependencies=[Dependency("audit", required=False)])
    async with server:
        assert server.ready
        assert await check(server.target) == SERVING
        assert server.instance.health is HealthStatus.SERVING


async def test_available_dependency_is_serving_from_the_start(mesh: Mesh, registry: Registry) -> None:
    await registry.register(backend())
    async with await echo_server(mesh, "frontend", dependencies=["backend"]) as server:
        assert server.instance.health is HealthStatus.SERVING
        assert await check(server.target) == SERVING


def test_version_matching() -> None:
    assert version_matches("", "anything")
    assert version_matches("v1", "v1")
    assert version_matches("v1", "v1.0.0")
    assert not version_matches("v1", "v10")
    assert not version_matches("v1.2", "v1.3.0")
    assert not version_matches("v2", "")


class _BuggyWatchRegistry(MemoryRegistry):
    """A registry whose first watches of each name fail with errors no backend anticipates."""

    def __init__(self, failures: list[BaseException]) -> None:
        super().__init__()
        self.failures = failures

    def watch(self, name: str) -> AsyncIterator[list[ServiceInstance]]:
        if self.failures:
            failure = self.failures.pop(0)

            async def broken() -> AsyncIterator[list[ServiceInstance]]:
                raise failure
                yield []  # an async generator

            return broken()
        return super().watch(name)


async def test_readiness_survives_any_exception_from_a_watch(caplog: pytest.LogCaptureFixture) -> None:
    registry = _BuggyWatchRegistry([TypeError("bug in a backend"), RecursionError("deep record"), KeyError("x")])
    changes: list[bool] = []

    async def on_change(ready: bool) -> None:
        changes.append(ready)

    readiness = DependencyReadiness(
        registry, [Dependency("backend")], on_change, service_name="frontend", retry_delay=0.05
    )
    try:
        with caplog.at_level(logging.WARNING):
            assert await readiness.start(first_snapshot_timeout=0.01) is False
            await registry.register(backend())
            for _ in range(200):  # the watch is reopened after each failure (bounded wait, 10 s)
                if changes:
                    break
                await asyncio.sleep(0.05)
        assert changes == [True]
        assert readiness.ready
        failures = [r for r in caplog.records if "watching dependency backend failed" in r.getMessage()]
        assert len(failures) == 1  # once per failing streak, naming the service and the dependency
        assert "frontend" in failures[0].getMessage()
    finally:
        await readiness.close()
        await registry.close()


async def test_readiness_stops_quietly_when_the_registry_closes() -> None:
    registry = MemoryRegistry()
    changes: list[bool] = []

    async def on_change(ready: bool) -> None:
        changes.append(ready)

    readiness = DependencyReadiness(registry, [Dependency("backend")], on_change, retry_delay=0.05)
    await readiness.start(first_snapshot_timeout=1)
    await registry.close()
    await asyncio.sleep(0.2)
    assert all(task.done() for task in readiness._tasks)
    await readiness.close()
