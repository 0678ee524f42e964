"""The server interceptors build their wrapped handler once per method, not on every call.

The wrapped handler serves every call of its method, so what varies per call (metadata,
auth outcome, trace parent) must still be read per call: checked here with different keys
and trace parents on the same cached handler.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import grpc
import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client import CollectorRegistry

from grpcmesh.middleware import (
    auth_client_interceptors,
    auth_server_interceptor,
    logging_server_interceptor,
    metrics_server_interceptor,
    setup_tracing,
    tracing_client_interceptors,
    tracing_server_interceptor,
)
from grpcmesh.middleware.recovery import RecoveryInterceptor
from grpcmesh.protos import echo_pb2
from tests.middleware.echo_calls import echo_server, echo_stub

KEY = "handler-cache-test-key-0123456789"


class HandlerRecorder(grpc.aio.ServerInterceptor):  # type: ignore[type-arg]
    """Outermost interceptor: remembers the handler the rest of the chain returned for each call."""

    def __init__(self) -> None:
        self.handlers: list[Any] = []

    async def intercept_service(
        self, continuation: Callable[[Any], Awaitable[Any]], handler_call_details: grpc.HandlerCallDetails
    ) -> Any:
        handler = await continuation(handler_call_details)
        self.handlers.append(handler)
        return handler


async def test_each_method_gets_one_wrapped_handler_and_per_call_data_stays_per_call() -> None:
    recorder = HandlerRecorder()
    exporter = InMemorySpanExporter()
    provider = setup_tracing("cache-test", exporter=exporter)
    interceptors = [
        recorder,
        RecoveryInterceptor(),
        tracing_server_interceptor(provider),
        logging_server_interceptor("cache-test"),
        metrics_server_interceptor(CollectorRegistry(), "cache-test"),
        auth_server_interceptor(KEY),
    ]
    async with echo_server(interceptors) as port:
        async with echo_stub(port, auth_client_interceptors(KEY)) as good:
            for _ in range(3):
                assert (await good.Unary(echo_pb2.EchoRequest(message="hi"))).message == "hi"
        async with echo_stub(port, auth_client_interceptors("a-wrong-key-of-some-length")) as bad:
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await bad.Unary(echo_pb2.EchoRequest(message="hi"))
            assert refused.value.code() is grpc.StatusCode.UNAUTHENTICATED
        traced = [*tracing_client_interceptors(provider), *auth_client_interceptors(KEY)]
        async with echo_stub(port, traced) as child:
            await child.Unary(echo_pb2.EchoRequest(message="traced"))
    provider.force_flush()
    assert len(recorder.handlers) == 5
    assert all(handler is recorder.handlers[0] for handler in recorder.handlers)
    spans = exporter.get_finished_spans()
    client_span = next(s for s in spans if s.kind.name == "CLIENT")
    server_spans = [s for s in spans if s.kind.name == "SERVER"]
    assert len(server_spans) == 5
    # Only the last call sent a traceparent: its server span (alone) is the client span's child.
    children = [s for s in server_spans if s.parent is not None]
    assert [s.parent.span_id for s in children if s.parent] == [client_span.context.span_id]
    provider.shutdown()
