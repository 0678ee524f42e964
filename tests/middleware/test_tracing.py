"""Tracing across three Echo services (A → B → C), each with its own provider and in-memory exporter."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack
from typing import Any

import grpc
import pytest
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from grpcmesh.errors import ConfigError
from grpcmesh.middleware import setup_tracing, tracing_client_interceptors, tracing_server_interceptor
from grpcmesh.protos import echo_pb2, echo_pb2_grpc
from grpcmesh.testing import EchoServicer
from tests.middleware.echo_calls import KINDS, METHOD_OF_KIND, call_kind, echo_server, echo_stub


class RelayEcho(EchoServicer):
    """Serves each RPC kind by first making the same kind of call to the next hop."""

    def __init__(self, instance_id: str, next_hop: Callable[[], echo_pb2_grpc.EchoStub]) -> None:
        super().__init__(instance_id)
        self._next = next_hop

    async def Unary(self, request: echo_pb2.EchoRequest, context: Any) -> echo_pb2.EchoReply:
        await self._next().Unary(request)
        return await super().Unary(request, context)

    async def ServerStream(self, request: echo_pb2.EchoRequest, context: Any) -> AsyncIterator[echo_pb2.EchoReply]:
        async for _ in self._next().ServerStream(request):
            pass
        async for reply in super().ServerStream(request, context):
            yield reply

    async def ClientStream(self, request_iterator: Any, context: Any) -> echo_pb2.EchoReply:
        received = [request async for request in request_iterator]
        await self._next().ClientStream(iter(received))
        return self._reply(",".join(r.message for r in received), len(received))

    async def BidiStream(self, request_iterator: Any, context: Any) -> AsyncIterator[echo_pb2.EchoReply]:
        downstream: Any = self._next().BidiStream()  # one relayed call, message by message
        index = 0
        async for request in request_iterator:
            await downstream.write(request)
            await downstream.read()
            yield self._reply(request.message, index)
            index += 1
        await downstream.done_writing()
        assert await downstream.read() is grpc.aio.EOF


Provider = tuple[TracerProvider, InMemorySpanExporter]


def provider(name: str, sample_rate: float = 1.0) -> Provider:
    exporter = InMemorySpanExporter()
    return setup_tracing(name, sample_rate=sample_rate, exporter=exporter), exporter


async def run_chain(
    kind: str, rates: dict[str, float], call: Callable[[echo_pb2_grpc.EchoStub], Awaitable[object]] | None = None
) -> dict[str, list[ReadableSpan]]:
    """Client → A → B → C; returns each party's finished spans."""
    providers = {name: provider(name, rate) for name, rate in rates.items()}
    async with AsyncExitStack() as stack:
        c_port = await stack.enter_async_context(
            echo_server([tracing_server_interceptor(providers["c"][0])], servicer=EchoServicer("c"))
        )
        c_stub = await stack.enter_async_context(echo_stub(c_port, tracing_client_interceptors(providers["b"][0])))
        b_port = await stack.enter_async_context(
            echo_server([tracing_server_interceptor(providers["b"][0])], servicer=RelayEcho("b", lambda: c_stub))
        )
        b_stub = await stack.enter_async_context(echo_stub(b_port, tracing_client_interceptors(providers["a"][0])))
        a_port = await stack.enter_async_context(
            echo_server([tracing_server_interceptor(providers["a"][0])], servicer=RelayEcho("a", lambda: b_stub))
        )
        a_stub = await stack.enter_async_context(echo_stub(a_port, tracing_client_interceptors(providers["client"][0])))
        if call is None:
            assert await call_kind(a_stub, kind) == grpc.StatusCode.OK
        else:
            await call(a_stub)
        await asyncio.sleep(0.2)  # streaming client spans end when grpc reports the call done
    spans = {}
    for name, (tracer_provider, exporter) in providers.items():
        tracer_provider.force_flush()
        spans[name] = list(exporter.get_finished_spans())
        tracer_provider.shutdown()
    return spans


def only(spans: list[ReadableSpan], kind: SpanKind) -> ReadableSpan:
    matching = [span for span in spans if span.kind == kind]
    assert len(matching) == 1, matching
    return matching[0]


@pytest.mark.parametrize("kind", KINDS)
async def test_three_hop_call_is_one_trace_with_correct_parents(kind: str) -> None:
    spans = await run_chain(kind, {"client": 1.0, "a": 1.0, "b": 1.0, "c": 1.0})
    root = only(spans["client"], SpanKind.CLIENT)
    a_server, a_client = only(spans["a"], SpanKind.SERVER), only(spans["a"], SpanKind.CLIENT)
    b_server, b_client = only(spans["b"], SpanKind.SERVER), only(spans["b"], SpanKind.CLIENT)
    c_server = only(spans["c"], SpanKind.SERVER)
    chain = [root, a_server, a_client, b_server, b_client, c_server]

    assert {span.context.trace_id for span in chain} == {root.context.trace_id}
    assert root.parent is None
    for parent, child in itertools.pairwise(chain):
        assert child.parent is not None
        assert child.parent.span_id == parent.context.span_id, (parent.name, child.name)
    name = f"grpcmesh.echo.v1.Echo/{METHOD_OF_KIND[kind]}"
    assert {span.name for span in chain} == {name}
    assert c_server.resource.attributes["service.name"] == "c"
    assert all(span.attributes is not None and span.attributes["rpc.grpc.status_code"] == 0 for span in chain)


async def test_failed_calls_mark_spans_as_errors_with_their_codes() -> None:
    async def failing(stub: echo_pb2_grpc.EchoStub) -> None:
        with pytest.raises(grpc.aio.AioRpcError):
            await stub.Unary(echo_pb2.EchoRequest(fail_code=grpc.StatusCode.INTERNAL.value[0]))

    spans = await run_chain("unary", {"client": 1.0, "a": 1.0, "b": 1.0, "c": 1.0}, failing)
    # C aborts with INTERNAL; the relays A and B do not catch the error, so grpc answers UNKNOWN.
    expected = {"client": grpc.StatusCode.UNKNOWN, "a": grpc.StatusCode.UNKNOWN, "b": grpc.StatusCode.INTERNAL}
    for name, code in expected.items():
        client_span = only(spans[name], SpanKind.CLIENT)
        assert client_span.status.status_code == StatusCode.ERROR
        assert client_span.attributes is not None
        assert client_span.attributes["rpc.grpc.status_code"] == code.value[0]
    c_server = only(spans["c"], SpanKind.SERVER)
    assert c_server.status.status_code == StatusCode.ERROR
    assert not c_server.events  # an abort is a status, not an exception
    b_server = only(spans["b"], SpanKind.SERVER)
    assert [event.name for event in b_server.events] == ["exception"]


async def test_sampling_follows_the_callers_decision() -> None:
    kept = await run_chain("unary", {"client": 1.0, "a": 0.0, "b": 0.0, "c": 0.0})
    assert [len(kept[name]) for name in ("client", "a", "b", "c")] == [1, 2, 2, 1]
    dropped = await run_chain("unary", {"client": 0.0, "a": 1.0, "b": 1.0, "c": 1.0})
    assert [len(dropped[name]) for name in ("client", "a", "b", "c")] == [0, 0, 0, 0]


def test_sample_rate_outside_range_names_the_field() -> None:
    with pytest.raises(ConfigError, match=r"tracing\.sample_rate"):
        setup_tracing("svc", sample_rate=1.5)


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("http://jaeger:14268/api/traces", "http://jaeger:4317"),
        ("http://collector:4317", "http://collector:4317"),
        ("collector:4317", "http://collector:4317"),
        ("https://otel.example.com", "https://otel.example.com:4317"),
    ],
)
def test_jaeger_endpoint_maps_to_otlp(given: str, expected: str) -> None:
    from grpcmesh.middleware.tracing import otlp_endpoint

    assert otlp_endpoint(given) == expected


class Collector(trace_service_pb2_grpc.TraceServiceServicer):
    """A real OTLP/gRPC trace receiver that keeps what it is sent."""

    def __init__(self) -> None:
        self.requests: list[trace_service_pb2.ExportTraceServiceRequest] = []

    async def Export(self, request: Any, context: Any) -> trace_service_pb2.ExportTraceServiceResponse:
        self.requests.append(request)
        return trace_service_pb2.ExportTraceServiceResponse()


async def test_spans_reach_a_real_otlp_receiver() -> None:
    collector = Collector()
    receiver = grpc.aio.server()
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(collector, receiver)
    otlp_port = receiver.add_insecure_port("127.0.0.1:0")
    await receiver.start()
    try:
        tracer_provider = setup_tracing("echo-service", endpoint=f"http://127.0.0.1:{otlp_port}")
        async with echo_server([tracing_server_interceptor(tracer_provider)]) as port, echo_stub(port) as stub:
            assert await call_kind(stub, "unary") == grpc.StatusCode.OK
        # The exporter talks to the receiver on this loop: flush from a thread, not the loop.
        assert await asyncio.to_thread(tracer_provider.force_flush, 10_000)
        await asyncio.to_thread(tracer_provider.shutdown)
    finally:
        await receiver.stop(None)
    resource_spans = [rs for request in collector.requests for rs in request.resource_spans]
    assert resource_spans
    service_names = {
        attribute.value.string_value
        for rs in resource_spans
        for attribute in rs.resource.attributes
        if attribute.key == "service.name"
    }
    assert service_names == {"echo-service"}
    names = {span.name for rs in resource_spans for scope in rs.scope_spans for span in scope.spans}
    assert names == {"grpcmesh.echo.v1.Echo/Unary"}
