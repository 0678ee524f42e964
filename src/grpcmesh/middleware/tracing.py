"""OpenTelemetry tracing for gRPC calls: a span per call on each side, W3C ``traceparent`` in metadata.

We write these interceptors ourselves rather than use ``opentelemetry-instrumentation-grpc``:
its grpc.aio server interceptor fails every streaming handler written in the
``context.write`` style (upstream issue open-telemetry/opentelemetry-python-contrib#3066),
turning working RPCs into UNKNOWN errors. The shared call core in ``_calls`` already handles
both streaming styles and the final status code, so tracing is only span bookkeeping here.
Span names and attributes follow the OpenTelemetry RPC semantic conventions.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from urllib.parse import urlsplit

import grpc
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter
from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased
from opentelemetry.trace import SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from grpcmesh.errors import ConfigError
from grpcmesh.middleware._calls import (
    ClientCall,
    ClientFinish,
    ClientInterceptor,
    ServerCall,
    ServerInterceptor,
    ServerObservingInterceptor,
    client_interceptors,
    iter_metadata,
)
from grpcmesh.middleware.trace_ids import SERVER_ERROR_CODES

_PROPAGATOR = TraceContextTextMapPropagator()
"""W3C trace context, used explicitly so no global propagator configuration is needed."""

_INSTRUMENTATION = "grpcmesh.middleware.tracing"


JAEGER_COLLECTOR_PORT = 14268
OTLP_GRPC_PORT = 4317


def otlp_endpoint(endpoint: str) -> str:
    """Map the seed's Jaeger collector URL (``http://jaeger:14268/api/traces``) to OTLP/gRPC.

    Jaeger has accepted OTLP on port 4317 since 1.35, so only the port changes; any other
    URL (``http://collector:4317``, ``collector:4317``) is taken as an OTLP endpoint already.
    """
    text = endpoint.strip()
    if not text:
        raise ConfigError("tracing.jaeger_endpoint: empty; give a URL such as http://jaeger:4317")
    parts = urlsplit(text if "://" in text else f"http://{text}")
    if not parts.hostname:
        raise ConfigError(f"tracing.jaeger_endpoint: {endpoint!r} has no host; give a URL such as http://jaeger:4317")
    scheme = parts.scheme if parts.scheme in ("http", "https") else "http"
    port = parts.port
    if port is None or port == JAEGER_COLLECTOR_PORT or parts.path.rstrip("/") == "/api/traces":
        port = OTLP_GRPC_PORT
    return f"{scheme}://{parts.hostname}:{port}"


def setup_tracing(
    service_name: str,
    endpoint: str | None = None,
    sample_rate: float = 1.0,
    exporter: SpanExporter | None = None,
) -> TracerProvider:
    """A ``TracerProvider`` for one service; not installed globally (pass it to the interceptors).

    ``endpoint`` (OTLP/gRPC, or the seed's Jaeger collector URL) adds an OTLP exporter;
    ``exporter`` adds any other (e.g. ``InMemorySpanExporter`` in tests). ``sample_rate`` starts
    new traces with that probability and follows the caller's decision otherwise
    (``ParentBased(TraceIdRatioBased)``), so a trace is never cut in half between services.
    Call ``provider.shutdown()`` on exit to flush the last spans.
    """
    if not service_name:
        raise ConfigError("service.name: empty; tracing needs the service name")
    if not 0.0 <= sample_rate <= 1.0:
        raise ConfigError(f"tracing.sample_rate: {sample_rate} is outside 0..1; use e.g. 0.1 for 10%")
    provider = TracerProvider(
        resource=Resource.create({"service.name": service_name}),
        sampler=ParentBased(TraceIdRatioBased(sample_rate)),
    )
    if endpoint is not None:
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        url = otlp_endpoint(endpoint)
        provider.add_span_processor(
            BatchSpanProcessor(OTLPSpanExporter(endpoint=url, insecure=url.startswith("http:")))
        )
    if exporter is not None:
        provider.add_span_processor(BatchSpanProcessor(exporter))
    return provider


def _attributes(service: str, method: str) -> dict[str, str]:
    return {"rpc.system": "grpc", "rpc.service": service, "rpc.method": method}


def _carrier(metadata: Sequence[tuple[str, str | bytes]] | None) -> dict[str, str]:
    return {key: value for key, value in iter_metadata(metadata) if isinstance(value, str)}


def tracing_server_interceptor(tracer_provider: trace.TracerProvider) -> ServerInterceptor:
    """A server interceptor making a SERVER span per call, child of the caller's ``traceparent``.

    The span is current while the handler runs, so calls the handler makes are its children.
    """
    tracer = tracer_provider.get_tracer(_INSTRUMENTATION)

    @contextmanager
    def observe(call: ServerCall) -> Iterator[None]:
        # start_span + an explicit attach is what start_as_current_span does, without its two
        # generator-based context managers; the span is current (sampled or not) so the
        # handler's own calls carry the caller's sampling decision on.
        parent = _PROPAGATOR.extract(_carrier(call.metadata))
        attributes = {**_attributes(call.service, call.method), "network.peer.address": call.peer()}
        span = tracer.start_span(
            f"{call.service}/{call.method}", context=parent, kind=SpanKind.SERVER, attributes=attributes
        )
        token = otel_context.attach(trace.set_span_in_context(span))
        try:
            yield
        finally:
            otel_context.detach(token)
            if span.is_recording():  # an unsampled span records nothing: skip building it
                code = call.code or grpc.StatusCode.UNKNOWN
                span.set_attribute("rpc.grpc.status_code", code.value[0])
                if code in SERVER_ERROR_CODES:
                    span.set_status(Status(StatusCode.ERROR, code.name))
                if call.error is not None and not isinstance(call.error, grpc.aio.AbortError | asyncio.CancelledError):
                    span.record_exception(call.error)
            span.end()

    return ServerObservingInterceptor(observe)


def tracing_client_interceptors(tracer_provider: trace.TracerProvider) -> list[ClientInterceptor]:
    """Client interceptors making a CLIENT span per call and sending its ``traceparent`` in metadata."""
    tracer = tracer_provider.get_tracer(_INSTRUMENTATION)

    def observe(call: ClientCall) -> ClientFinish:
        span = tracer.start_span(
            f"{call.service}/{call.method}", kind=SpanKind.CLIENT, attributes=_attributes(call.service, call.method)
        )
        carrier: dict[str, str] = {}
        _PROPAGATOR.inject(carrier, context=trace.set_span_in_context(span))
        for key, value in carrier.items():
            call.metadata.set_all(key, [value])

        def finish(done: ClientCall) -> None:
            if span.is_recording():  # an unsampled span records nothing: skip building it
                code = done.code or grpc.StatusCode.UNKNOWN
                span.set_attribute("rpc.grpc.status_code", code.value[0])
                if code is not grpc.StatusCode.OK:
                    span.set_status(Status(StatusCode.ERROR, code.name))
            span.end()

        return finish

    return client_interceptors(observe)


def trace_id_of(metadata: Sequence[tuple[str, str | bytes]] | None) -> str | None:
    """The trace id in a ``traceparent`` metadata entry, as 32 hex digits (for logs)."""
    context = trace.get_current_span(_PROPAGATOR.extract(_carrier(metadata))).get_span_context()
    return format(context.trace_id, "032x") if context.is_valid else None


def current_trace_id() -> str | None:
    """The trace id of the current span, as 32 hex digits, or ``None`` outside a trace."""
    context = trace.get_current_span().get_span_context()
    return format(context.trace_id, "032x") if context.is_valid else None
