"""The mesh's own span objects: what a handler does with the current span reaches the exporter, limits
apply, processors see every span, and any other provider still gets SDK spans."""

from __future__ import annotations

import logging
from typing import Any

import grpc
import pytest
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, SpanLimits, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from grpcmesh.middleware import setup_tracing, tracing_client_interceptors, tracing_server_interceptor
from grpcmesh.middleware.spans import MeshSpan, MeshSpans, MeshTracerProvider, remote_parent
from grpcmesh.middleware.tracing import MeshSampler
from grpcmesh.protos import echo_pb2
from grpcmesh.testing import EchoServicer
from tests.middleware.echo_calls import echo_server, echo_stub


class AnnotatingEcho(EchoServicer):
    """A handler that works with the current span the way user code does."""

    def __init__(self, tracer_provider: TracerProvider) -> None:
        super().__init__("annotating")
        self._tracer = tracer_provider.get_tracer("user-code")

    async def Unary(self, request: echo_pb2.EchoRequest, context: Any) -> echo_pb2.EchoReply:
        span = trace.get_current_span()
        span.set_attribute("app.user", "u-42")
        span.set_attribute("app.tags", ["a", "b"])
        span.add_event("cache miss", {"app.key": "k"})
        span.record_exception(ValueError("handled and logged"))
        span.set_status(StatusCode.ERROR, "degraded")
        with self._tracer.start_as_current_span("load-user"):
            pass
        return await super().Unary(request, context)


async def test_what_a_handler_records_on_the_current_span_reaches_the_exporter() -> None:
    exporter = InMemorySpanExporter()
    provider = setup_tracing("annotating-service", sample_rate=1.0, exporter=exporter)
    client_provider = setup_tracing("caller", sample_rate=1.0, exporter=InMemorySpanExporter())
    async with (
        echo_server([tracing_server_interceptor(provider)], servicer=AnnotatingEcho(provider)) as port,
        echo_stub(port, tracing_client_interceptors(client_provider)) as stub,
    ):
        await stub.Unary(echo_pb2.EchoRequest(message="hi"))
    provider.force_flush()
    spans = {span.name: span for span in exporter.get_finished_spans()}
    server = spans["grpcmesh.echo.v1.Echo/Unary"]
    assert isinstance(server, MeshSpan)
    assert server.kind is SpanKind.SERVER
    assert server.attributes["app.user"] == "u-42"
    assert server.attributes["app.tags"] == ("a", "b")
    assert server.attributes["rpc.grpc.status_code"] == 0
    assert [event.name for event in server.events] == ["cache miss", "exception"]
    assert server.events[1].attributes is not None
    assert server.events[1].attributes["exception.type"] == "ValueError"
    assert "handled and logged" in str(server.events[1].attributes["exception.stacktrace"])
    assert server.status.status_code is StatusCode.ERROR
    assert server.status.description == "degraded"
    child = spans["load-user"]
    assert not isinstance(child, MeshSpan)  # the user's own span is the SDK's
    assert child.parent is not None
    assert child.parent.span_id == server.context.span_id
    assert child.context.trace_id == server.context.trace_id
    assert server.resource.attributes["service.name"] == "annotating-service"
    assert server.instrumentation_scope is not None
    assert server.instrumentation_scope.name == "grpcmesh.middleware.tracing"
    encoded = encode_spans([server, child])  # what the OTLP exporter sends
    sent = encoded.resource_spans[0].scope_spans
    assert {span.name for scope in sent for span in scope.spans} == {"grpcmesh.echo.v1.Echo/Unary", "load-user"}
    provider.shutdown()
    client_provider.shutdown()


async def test_any_other_provider_gets_the_sdks_spans_and_the_trace_still_joins() -> None:
    exporter = InMemorySpanExporter()
    plain = TracerProvider(resource=Resource.create({"service.name": "plain"}), sampler=MeshSampler(1.0))
    plain.add_span_processor(SimpleSpanProcessor(exporter))
    caller_exporter = InMemorySpanExporter()
    caller = setup_tracing("caller", sample_rate=1.0, exporter=caller_exporter)
    async with (
        echo_server([tracing_server_interceptor(plain)]) as port,
        echo_stub(port, tracing_client_interceptors(caller)) as stub,
    ):
        await stub.Unary(echo_pb2.EchoRequest(message="hi"))
    caller.force_flush()
    (server,) = exporter.get_finished_spans()
    (client,) = caller_exporter.get_finished_spans()
    assert not isinstance(server, MeshSpan)
    assert isinstance(client, MeshSpan)
    assert server.parent is not None
    assert server.parent.span_id == client.context.span_id
    assert server.attributes is not None
    assert server.attributes["rpc.grpc.status_code"] == 0
    assert MeshSpans.of(plain, "x") is None
    caller.shutdown()
    plain.shutdown()


def _span(provider: MeshTracerProvider, **attributes: Any) -> MeshSpan:
    spans = MeshSpans.of(provider, "test")
    assert spans is not None
    return spans.start("op", SpanKind.INTERNAL, None, dict(attributes))


def _annotate(span: Any) -> None:
    span.set_attribute("second", 2)
    span.set_attribute("fourth", 4)  # past max_span_attributes: the SDK drops the oldest
    span.set_attribute("bad", object())  # not a valid attribute value
    span.set_attribute("tags", ["x", "y"])
    span.set_attribute("long", "abcdefgh")  # longer than the limit: cut to 4
    span.add_event("one", {"n": 1})
    span.add_event("two")  # past max_events
    span.end()


def test_span_limits_apply_to_what_user_code_adds_exactly_as_on_an_sdk_span() -> None:
    limits = SpanLimits(max_span_attributes=3, max_attribute_length=4, max_events=1)
    mesh_exporter, sdk_exporter = InMemorySpanExporter(), InMemorySpanExporter()
    provider = MeshTracerProvider(span_limits=limits)
    provider.add_span_processor(SimpleSpanProcessor(mesh_exporter))
    sdk = TracerProvider(span_limits=limits)
    sdk.add_span_processor(SimpleSpanProcessor(sdk_exporter))
    _annotate(_span(provider, first=1))
    _annotate(sdk.get_tracer("test").start_span("op", attributes={"first": 1}))
    (mesh,), (expected,) = mesh_exporter.get_finished_spans(), sdk_exporter.get_finished_spans()
    assert isinstance(mesh, MeshSpan)
    assert not isinstance(expected, MeshSpan)
    assert dict(mesh.attributes or {}) == dict(expected.attributes or {})
    assert len(mesh.attributes or {}) == 3
    assert (mesh.attributes or {})["long"] == "abcd"
    assert mesh.dropped_attributes == expected.dropped_attributes > 0
    assert [(e.name, dict(e.attributes or {})) for e in mesh.events] == [
        (e.name, dict(e.attributes or {})) for e in expected.events
    ]
    assert mesh.dropped_events == expected.dropped_events == 1
    provider.shutdown()
    sdk.shutdown()


def test_an_ended_span_ignores_writes_and_is_exported_once(caplog: pytest.LogCaptureFixture) -> None:
    exporter = InMemorySpanExporter()
    provider = MeshTracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    span = _span(provider, kept=True)
    assert span.is_recording()
    span.end()
    with caplog.at_level(logging.WARNING, "grpcmesh.tracing"):
        span.set_attribute("late", 1)
        span.update_name("renamed")
        span.set_status(StatusCode.ERROR)
        span.end()
    assert not span.is_recording()
    (ended,) = exporter.get_finished_spans()
    assert ended.name == "op"
    assert dict(ended.attributes or {}) == {"kept": True}
    assert ended.status.status_code is StatusCode.UNSET
    assert sum("ended span" in record.getMessage() for record in caplog.records) == 4
    provider.shutdown()


def test_status_ok_is_final_and_unset_is_ignored_as_in_the_sdk() -> None:
    provider = MeshTracerProvider()
    span = _span(provider)
    span.set_status(StatusCode.UNSET)
    assert span.status.status_code is StatusCode.UNSET
    span.set_status(StatusCode.OK)
    span.set_status(StatusCode.ERROR, "too late")
    assert span.status.status_code is StatusCode.OK
    span.end()


class Recording(SpanProcessor):
    def __init__(self) -> None:
        self.started: list[Any] = []
        self.ended: list[ReadableSpan] = []

    def on_start(self, span: Any, parent_context: Any = None) -> None:
        self.started.append((span.name, parent_context))

    def on_end(self, span: ReadableSpan) -> None:
        self.ended.append(span)


class Broken(SpanProcessor):
    def on_start(self, span: Any, parent_context: Any = None) -> None:
        raise RuntimeError("broken on start")

    def on_end(self, span: ReadableSpan) -> None:
        raise RuntimeError("broken on end")


def test_every_processor_sees_the_span_and_a_broken_one_stops_nothing(caplog: pytest.LogCaptureFixture) -> None:
    provider = MeshTracerProvider()
    broken, recording = Broken(), Recording()
    provider.add_span_processor(broken)
    provider.add_span_processor(recording)
    spans = MeshSpans.of(provider, "test")
    assert spans is not None
    parent = remote_parent("0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331", True, "vendor=1")
    with caplog.at_level(logging.ERROR, "grpcmesh.tracing"):
        span = spans.start("child", SpanKind.SERVER, parent, {})
        span.end()
    assert [name for name, _ in recording.started] == ["child"]
    parent_context = recording.started[0][1]
    assert trace.get_current_span(parent_context).get_span_context() == parent
    assert recording.ended == [span]
    assert span.context.trace_id == parent.trace_id
    assert span.parent == parent
    assert span.context.trace_state.get("vendor") == "1"
    assert span.context.trace_flags.sampled
    assert {record.getMessage().split(" failed")[0] for record in caplog.records} == {f"span processor {broken!r}"}
    provider.shutdown()


def test_a_disabled_sdk_makes_no_mesh_spans(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_SDK_DISABLED", "true")
    assert MeshSpans.of(MeshTracerProvider(), "test") is None


def test_spans_are_readable_spans_for_every_exporter() -> None:
    provider = MeshTracerProvider(resource=Resource.create({"service.name": "svc"}))
    span = _span(provider, **{"rpc.system": "grpc"})
    span.set_attribute("rpc.grpc.status_code", grpc.StatusCode.OK.value[0])
    span.end()
    assert isinstance(span, ReadableSpan)
    assert span.end_time is not None
    assert span.start_time is not None
    assert span.end_time >= span.start_time
    assert '"rpc.grpc.status_code": 0' in span.to_json()
    assert 'MeshSpan(name="op"' in repr(span)
