"""Aggregate health of a service: ``grpc.health.v1`` Check on every registered instance.

This is the original Go design's ``HealthService.Check``: the service is SERVING only if it has instances
and every one of them answers SERVING. Unlike the registry's view (what instances *say*
about themselves when they register), this asks each instance now, over the network.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from grpcmesh.model import HealthStatus, ServiceInstance
from grpcmesh.registry import Registry

DEFAULT_TIMEOUT = 2.0


@dataclass(frozen=True)
class InstanceHealth:
    """One instance's answer (``error`` says why it is not SERVING when it did not answer)."""

    instance: ServiceInstance
    status: HealthStatus
    error: str | None = None


@dataclass(frozen=True)
class HealthReport:
    """A service's aggregate health; ``status`` is UNKNOWN when it has no instances."""

    name: str
    status: HealthStatus
    instances: tuple[InstanceHealth, ...]

    @property
    def serving(self) -> int:
        """How many instances answered SERVING."""
        return sum(1 for item in self.instances if item.status is HealthStatus.SERVING)


def _status(wire: int) -> HealthStatus:
    if wire == health_pb2.HealthCheckResponse.SERVING:
        return HealthStatus.SERVING
    if wire == health_pb2.HealthCheckResponse.NOT_SERVING:
        return HealthStatus.NOT_SERVING
    return HealthStatus.UNKNOWN


async def check_instance_health(
    instance: ServiceInstance,
    timeout: float = DEFAULT_TIMEOUT,
    *,
    service: str = "",
    credentials: grpc.ChannelCredentials | None = None,
) -> InstanceHealth:
    """Ask one instance for the health of ``service`` (``""``: the server as a whole)."""
    if credentials is not None:
        channel = grpc.aio.secure_channel(instance.target, credentials)
    else:
        channel = grpc.aio.insecure_channel(instance.target)
    try:
        stub = health_pb2_grpc.HealthStub(channel)
        reply = await stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=timeout)
        status = _status(reply.status)
        return InstanceHealth(instance, status, None if status is HealthStatus.SERVING else f"reported {status.value}")
    except grpc.aio.AioRpcError as exc:
        return InstanceHealth(instance, HealthStatus.NOT_SERVING, f"{exc.code().name}: {exc.details()}")
    finally:
        await channel.close(None)


async def check_service_health(
    registry: Registry,
    name: str,
    timeout: float = DEFAULT_TIMEOUT,
    *,
    credentials: grpc.ChannelCredentials | None = None,
) -> HealthReport:
    """Check every registered instance of ``name`` concurrently, each within ``timeout`` seconds."""
    instances = await registry.get_service(name)
    results: Sequence[InstanceHealth] = await asyncio.gather(
        *(check_instance_health(inst, timeout, credentials=credentials) for inst in instances)
    )
    if not results:
        status = HealthStatus.UNKNOWN
    elif all(item.status is HealthStatus.SERVING for item in results):
        status = HealthStatus.SERVING
    else:
        status = HealthStatus.NOT_SERVING
    return HealthReport(name, status, tuple(results))
