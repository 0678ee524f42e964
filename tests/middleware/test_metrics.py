"""Metrics interceptors against a real Echo server: counts and codes for all four RPC kinds."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import grpc
import pytest
from prometheus_client import CollectorRegistry

from grpcmesh.client.channel import ChannelStats
from grpcmesh.middleware import (
    ChannelStatsCollector,
    MetricsServer,
    metrics_client_interceptors,
    metrics_server_interceptor,
)
from grpcmesh.protos import echo_pb2
from grpcmesh.testing import EchoServicer
from tests.middleware.echo_calls import KINDS, METHOD_OF_KIND, call_kind, echo_server, echo_stub

SERVICE = "grpcmesh.echo.v1.Echo"

PLAIN_CHANNEL = {"caller": "", "callee": ""}
"""Client series name the calling and called mesh services; on a plain grpc channel both are empty."""


def sample(registry: CollectorRegistry, name: str, **labels: str) -> float:
    return registry.get_sample_value(name, labels) or 0.0


async def eventually(check: Any, timeout: float = 5.0) -> None:
    """Client streaming calls are recorded when grpc reports them done, a moment after the last reply."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        try:
            check()
            return
        except AssertionError:
            if asyncio.get_running_loop().time() > deadline:
                raise
            await asyncio.sleep(0.02)


@pytest.mark.parametrize("kind", KINDS)
async def test_server_and_client_count_ok_and_failed_calls_of_every_kind(kind: str) -> None:
    registry = CollectorRegistry()
    method = METHOD_OF_KIND[kind]
    async with (
        echo_server([metrics_server_interceptor(registry, service_name="echo-service")]) as port,
        echo_stub(port, metrics_client_interceptors(registry)) as stub,
    ):
        assert await call_kind(stub, kind) == grpc.StatusCode.OK
        assert await call_kind(stub, kind, fail_code=grpc.StatusCode.NOT_FOUND.value[0]) == grpc.StatusCode.NOT_FOUND

    labels = {"grpc_service": SERVICE, "grpc_method": method, "grpc_type": kind}
    assert sample(registry, "grpc_server_started_total", **labels) == 2
    assert sample(registry, "grpc_server_handled_total", **labels, grpc_code="OK") == 1
    assert sample(registry, "grpc_server_handled_total", **labels, grpc_code="NOT_FOUND") == 1
    assert sample(registry, "grpc_server_handling_seconds_count", **labels) == 2
    full = f"/{SERVICE}/{method}"
    assert sample(registry, "grpc_service_requests_total", service="echo-service", method=full, status="OK") == 1
    assert sample(registry, "grpc_service_requests_total", service="echo-service", method=full, status="NOT_FOUND") == 1
    assert sample(registry, "grpc_service_latency_seconds_count", service="echo-service", method=full) == 2

    def client_recorded() -> None:
        assert sample(registry, "grpc_client_started_total", **labels, **PLAIN_CHANNEL) == 2
        assert sample(registry, "grpc_client_handled_total", **labels, **PLAIN_CHANNEL, grpc_code="OK") == 1
        assert sample(registry, "grpc_client_handled_total", **labels, **PLAIN_CHANNEL, grpc_code="NOT_FOUND") == 1
        assert sample(registry, "grpc_client_handling_seconds_count", **labels, **PLAIN_CHANNEL) == 2

    await eventually(client_recorded)


class TroubledEcho(EchoServicer):
    """Raises an unexpected exception from Unary, and streams with ``context.write`` (the other aio style)."""

    async def Unary(self, request: echo_pb2.EchoRequest, context: Any) -> echo_pb2.EchoReply:
        raise RuntimeError("boom")

    async def ServerStream(self, request: echo_pb2.EchoRequest, context: Any) -> None:  # type: ignore[override]
        for index in range(max(request.count, 1)):
            await context.write(self._reply(request.message, index))


async def test_exceptions_count_as_unknown_and_write_style_streams_work() -> None:
    registry = CollectorRegistry()
    async with (
        echo_server([metrics_server_interceptor(registry)], servicer=TroubledEcho("t")) as port,
        echo_stub(port) as stub,
    ):
        assert await call_kind(stub, "unary") == grpc.StatusCode.UNKNOWN
        assert await call_kind(stub, "server_stream") == grpc.StatusCode.OK

    base = {"grpc_service": SERVICE}
    assert (
        sample(
            registry, "grpc_server_handled_total", **base, grpc_method="Unary", grpc_type="unary", grpc_code="UNKNOWN"
        )
        == 1
    )
    assert (
        sample(
            registry,
            "grpc_server_handled_total",
            **base,
            grpc_method="ServerStream",
            grpc_type="server_stream",
            grpc_code="OK",
        )
        == 1
    )


async def test_deadline_exceeded_is_recorded_on_both_sides() -> None:
    registry = CollectorRegistry()
    async with (
        echo_server([metrics_server_interceptor(registry)]) as port,
        echo_stub(port, metrics_client_interceptors(registry)) as stub,
    ):
        with pytest.raises(grpc.aio.AioRpcError) as failure:
            await stub.Unary(echo_pb2.EchoRequest(delay_ms=2000), timeout=0.2)
        assert failure.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        labels = {"grpc_service": SERVICE, "grpc_method": "Unary", "grpc_type": "unary"}
        assert (
            sample(registry, "grpc_client_handled_total", **labels, **PLAIN_CHANNEL, grpc_code="DEADLINE_EXCEEDED") == 1
        )

        def server_recorded() -> None:
            assert sample(registry, "grpc_server_handled_total", **labels, grpc_code="DEADLINE_EXCEEDED") == 1

        await eventually(server_recorded)


async def test_unimplemented_methods_are_not_recorded() -> None:
    registry = CollectorRegistry()
    async with (
        echo_server([metrics_server_interceptor(registry)]) as port,
        grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel,
    ):
        bogus = channel.unary_unary("/no.Such/Method", request_serializer=bytes, response_deserializer=bytes)
        with pytest.raises(grpc.aio.AioRpcError) as failure:
            await bogus(b"")
        assert failure.value.code() == grpc.StatusCode.UNIMPLEMENTED
    assert (
        sample(registry, "grpc_server_started_total", grpc_service="no.Such", grpc_method="Method", grpc_type="unary")
        == 0
    )


def _stats(service: str, endpoints: int, ejected: int, ejections: int, retries: int, watch_errors: int) -> ChannelStats:
    return ChannelStats(
        service=service,
        filter="any",
        policy="round_robin",
        endpoints=endpoints,
        ejected=ejected,
        ejections_total=ejections,
        retries_total=retries,
        no_endpoint_errors=0,
        draining=0,
        per_endpoint=(),
        watch_errors=watch_errors,
    )


async def test_channel_stats_and_metrics_endpoint_serve_one_registry() -> None:
    registry = CollectorRegistry()
    current = [_stats("order-service", 3, 1, 2, 5, 1), _stats("order-service", 1, 0, 1, 0, 0)]
    registry.register(ChannelStatsCollector(lambda: current))
    async with MetricsServer(registry, port=0) as server, aiohttp.ClientSession() as session:
        assert server.port
        url = f"http://127.0.0.1:{server.port}/metrics"
        async with session.get(url) as response:
            assert response.status == 200
            assert response.headers["Content-Type"].startswith("text/plain")
            text = await response.text()
        assert 'grpcmesh_endpoints{service="order-service"} 4.0' in text
        assert 'grpcmesh_ejected_endpoints{service="order-service"} 1.0' in text
        assert 'grpcmesh_ejections_total{service="order-service"} 3.0' in text
        assert 'grpcmesh_client_retries_total{service="order-service"} 5.0' in text
        assert 'grpcmesh_registry_watch_errors_total{service="order-service"} 1.0' in text
        current[:] = [_stats("order-service", 2, 0, 3, 5, 1)]  # read at scrape time
        async with session.get(url) as response:
            text = await response.text()
        assert 'grpcmesh_endpoints{service="order-service"} 2.0' in text


async def test_registries_are_independent() -> None:
    first, second = CollectorRegistry(), CollectorRegistry()
    async with echo_server([metrics_server_interceptor(first)]) as port, echo_stub(port) as stub:
        await call_kind(stub, "unary")
    labels = {"grpc_service": SERVICE, "grpc_method": "Unary", "grpc_type": "unary"}
    assert sample(first, "grpc_server_started_total", **labels) == 1
    assert sample(second, "grpc_server_started_total", **labels) == 0
