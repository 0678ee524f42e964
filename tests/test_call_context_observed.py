"""The incoming call's request id reaches the access log and the server span; Mesh applies
per-dependency client settings from the configuration."""

from __future__ import annotations

import asyncio
import io
import json
import time
import uuid
from collections.abc import Iterator
from typing import cast

import grpc
import pytest
import structlog
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from grpcmesh import Mesh, ServiceInstance
from grpcmesh.config.models import MeshConfig
from grpcmesh.context import Propagation
from grpcmesh.middleware import configure_logging, logging_server_interceptor, setup_tracing, tracing_server_interceptor
from grpcmesh.middleware.server_side import ServerObservingInterceptor, ServerPipeline
from grpcmesh.middleware.tracing import REQUEST_ID_ATTRIBUTE
from grpcmesh.protos import echo_pb2, echo_pb2_grpc
from grpcmesh.server.call_context import call_context_concerns
from grpcmesh.testing import start_echo_server
from tests.middleware.echo_calls import echo_server, echo_stub


@pytest.fixture
def log_stream() -> Iterator[io.StringIO]:
    stream = io.StringIO()
    configure_logging(json=True, level="INFO", stream=stream)
    yield stream
    structlog.reset_defaults()


async def test_request_id_in_access_log_and_span(log_stream: io.StringIO) -> None:
    exporter = InMemorySpanExporter()
    provider = setup_tracing("echo-service", exporter=exporter)
    chain = [
        ServerObservingInterceptor(ServerPipeline(call_context_concerns(Propagation()))),
        tracing_server_interceptor(provider),
        logging_server_interceptor("echo-service"),
    ]
    async with echo_server(chain) as port, echo_stub(port) as sync_typed:
        stub = cast("echo_pb2_grpc.EchoAsyncStub", sync_typed)
        await stub.Unary(echo_pb2.EchoRequest(), metadata=(("x-request-id", "rid-7"),), timeout=5)
        await stub.Unary(echo_pb2.EchoRequest(), timeout=5)  # no id: the server makes one
    records = [json.loads(line) for line in log_stream.getvalue().splitlines() if line.strip()]
    assert records[0]["request_id"] == "rid-7"
    generated = records[1]["request_id"]
    assert isinstance(generated, str)
    assert len(generated) == 32
    provider.force_flush()
    spans = exporter.get_finished_spans()
    assert sorted(str((s.attributes or {}).get(REQUEST_ID_ATTRIBUTE)) for s in spans) == sorted(["rid-7", generated])


async def test_mesh_channel_takes_its_dependency_settings_from_the_config() -> None:
    config = MeshConfig.model_validate(
        {
            "client": {"timeout": "10s"},
            "dependencies": [{"name": "slow-service", "required": False, "balancing": "p2c", "timeout": "300ms"}],
        }
    )
    server, port = await start_echo_server("slow")
    async with Mesh(f"memory://{uuid.uuid4().hex}", config=config) as mesh:
        await mesh.registry.register(ServiceInstance(name="slow-service", id="slow", address="127.0.0.1", port=port))
        try:
            channel = mesh.channel("slow-service")
            assert channel.policy == "p2c"
            assert mesh.channel("other-service").policy == "round_robin"
            stub = echo_pb2_grpc.EchoStub(channel)
            await asyncio.wait_for(channel.channel_ready(), 10)
            started = time.monotonic()
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await stub.Unary(echo_pb2.EchoRequest(delay_ms=3000))  # no timeout: the dependency's 300 ms
            assert info.value.code() is grpc.StatusCode.DEADLINE_EXCEEDED
            assert time.monotonic() - started < 2.5  # 300 ms, with a wide margin; not the 3 s reply
        finally:
            await server.stop(None)
