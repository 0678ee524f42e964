"""OpenTelemetry tracing for gRPC calls: a span per sampled call on each side, W3C ``traceparent`` in metadata.

The sampling decision comes first. A call whose trace is not sampled (the caller said so in
its ``traceparent``, or a new trace lost the ``sample_rate`` draw) creates no span at all: its
``traceparent`` is carried on unchanged in a context variable, so the calls the handler makes
continue the same trace with the same "not sampled" decision, and the access log still gets
the trace id. Only sampled calls pay for OpenTelemetry's span objects, ids and processors.

We write this ourselves rather than use ``opentelemetry-instrumentation-grpc``: its grpc.aio
server interceptor fails every streaming handler written in the ``context.write`` style
(upstream issue open-telemetry/opentelemetry-python-contrib#3066), and it creates a span
object for every call whether sampled or not. Span names and attributes follow the
OpenTelemetry RPC semantic conventions.
"""

from __future__ import annotations

import asyncio
import contextvars
import random
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit

import grpc
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter
from opentelemetry.sdk.trace.sampling import (
    Decision,
    ParentBased,
    Sampler,
    SamplingResult,
    TraceIdRatioBased,
)
from opentelemetry.trace import NonRecordingSpan, SpanKind, Status, StatusCode

from grpcmesh.context import REQUEST_ID_HEADER, current_request_id
from grpcmesh.errors import ConfigError
from grpcmesh.middleware.client_side import ClientCall, ClientFinish, ClientInterceptor, client_interceptors
from grpcmesh.middleware.server_side import (
    SERVER_ERROR_CODES,
    ServerCall,
    ServerConcern,
    ServerFinish,
    ServerObservingInterceptor,
    ServerPipeline,
)
from grpcmesh.middleware.spans import MeshSpans, MeshTracerProvider, remote_parent
from grpcmesh.middleware.trace_context import (
    TRACEPARENT,
    carried,
    carried_traceparent,
    current_trace_id,
    match_unsampled,
    parse_traceparent,
    trace_id_of,
    unsampled_traceparent,
)

_INSTRUMENTATION = "grpcmesh.middleware.tracing"

JAEGER_COLLECTOR_PORT = 14268
OTLP_GRPC_PORT = 4317


def otlp_endpoint(endpoint: str) -> str:
    """Map the original Go design's Jaeger collector URL (``http://jaeger:14268/api/traces``) to OTLP/gRPC.

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

    ``endpoint`` (OTLP/gRPC, or a Jaeger collector URL) adds an OTLP exporter;
    ``exporter`` adds any other (e.g. ``InMemorySpanExporter`` in tests). ``sample_rate`` starts
    new traces with that probability and follows the caller's decision otherwise
    (``ParentBased(TraceIdRatioBased)``), so a trace is never cut in half between services.
    Call ``provider.shutdown()`` on exit to flush the last spans.
    """
    if not service_name:
        raise ConfigError("service.name: empty; tracing needs the service name")
    if not 0.0 <= sample_rate <= 1.0:
        raise ConfigError(f"tracing.sample_rate: {sample_rate} is outside 0..1; use e.g. 0.1 for 10%")
    provider = MeshTracerProvider(
        resource=Resource.create({"service.name": service_name}),
        sampler=MeshSampler(sample_rate),
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


class MeshSampler(Sampler):
    """``ParentBased(TraceIdRatioBased(rate))`` whose root decision the mesh can make *before* a span exists.

    The mesh draws a new trace's decision itself (``random() < rate``); only when it says
    "sample" does it start a span, and then this sampler confirms it. Spans started by anyone
    else get the plain parent-based ratio decision.
    """

    def __init__(self, rate: float) -> None:
        self.rate = rate
        self._delegate = ParentBased(TraceIdRatioBased(rate))

    def should_sample(
        self,
        parent_context: otel_context.Context | None,
        trace_id: int,
        name: str,
        kind: SpanKind | None = None,
        attributes: Any = None,
        links: Sequence[trace.Link] | None = None,
        trace_state: trace.TraceState | None = None,
    ) -> SamplingResult:
        if _root_decided.get():
            return SamplingResult(Decision.RECORD_AND_SAMPLE, attributes, trace_state)
        return self._delegate.should_sample(parent_context, trace_id, name, kind, attributes, links, trace_state)

    def get_description(self) -> str:
        return f"MeshSampler{{ParentBased{{TraceIdRatioBased{{{self.rate}}}}}}}"


_root_decided: contextvars.ContextVar[bool] = contextvars.ContextVar("grpcmesh_root_sampled", default=False)
"""True only while the mesh starts a span for a new trace it has decided to sample."""


REQUEST_ID_ATTRIBUTE = "grpcmesh.request_id"
"""Span attribute holding the call's ``x-request-id`` (see :mod:`grpcmesh.context`)."""


def _client_attributes(call: ClientCall) -> dict[str, Any]:
    attributes = _attributes(call.service, call.method)
    value = call.header(REQUEST_ID_HEADER)
    if value is not None:
        attributes[REQUEST_ID_ATTRIBUTE] = value if isinstance(value, str) else value.decode("utf-8", "replace")
    return attributes


def _attributes(service: str, method: str) -> dict[str, Any]:
    return {"rpc.system": "grpc", "rpc.service": service, "rpc.method": method}


TRACESTATE = "tracestate"


class Tracing:
    """Tracing's server observer and client observer for one ``TracerProvider``."""

    def __init__(self, tracer_provider: trace.TracerProvider) -> None:
        self._tracer = tracer_provider.get_tracer(_INSTRUMENTATION)
        sampler = getattr(tracer_provider, "sampler", None)
        self._sampler = sampler if isinstance(sampler, MeshSampler) else None
        # The mesh makes its own spans when it also makes the sampling decisions (setup_tracing's
        # provider); with any other provider or sampler, the SDK's start_span does.
        self._spans = MeshSpans.of(tracer_provider, _INSTRUMENTATION) if self._sampler is not None else None

    def _start(self, name: str, kind: SpanKind, parent: otel_context.Context | None, forced: bool, **kw: Any) -> Any:
        if not forced:
            return self._tracer.start_span(name, context=parent, kind=kind, **kw)
        token = _root_decided.set(True)
        try:
            return self._tracer.start_span(name, context=parent, kind=kind, **kw)
        finally:
            _root_decided.reset(token)

    def server_concern(self) -> ServerConcern:
        return ServerConcern("tracing", observe=self.observe_server)

    def observe_server(self, call: ServerCall) -> ServerFinish | None:
        header = call.header(TRACEPARENT)
        if header is not None and match_unsampled(header) is not None:
            forwarded = header  # the usual call: a caller's unsampled trace, carried on as it came
        else:
            parsed = parse_traceparent(header)
            # A new trace's decision (None: the provider's own sampler decides, with a span).
            sampler = self._sampler
            decision = parsed[2] if parsed is not None else None if sampler is None else random.random() < sampler.rate
            if decision is not False:
                return self._sampled_server(call, parsed, decision)
            forwarded = header if parsed is not None and header is not None else unsampled_traceparent()
        # Not sampled: no span; carry the context on for the handler's calls.
        call.trace_id = forwarded[3:35]
        incoming = call.incoming
        if incoming is not None:  # a mesh server: the call context it bound carries it
            incoming.traceparent = forwarded
            return None
        carried_token = carried.set(forwarded)
        return lambda _call: carried.reset(carried_token)

    def _sampled_server(
        self, call: ServerCall, parsed: tuple[str, str, bool] | None, decision: bool | None
    ) -> ServerFinish:
        """The SERVER span of a sampled call (``decision`` None: the provider's sampler decides)."""
        parent = remote_parent(*parsed, call.header(TRACESTATE)) if parsed is not None else None
        attributes: dict[str, Any] = {
            "rpc.system": "grpc",
            "rpc.service": call.service,
            "rpc.method": call.method,
            "network.peer.address": call.peer(),
        }
        request_id = current_request_id() or call.header(REQUEST_ID_HEADER)
        if request_id is not None:
            attributes[REQUEST_ID_ATTRIBUTE] = request_id
        name = f"{call.service}/{call.method}"
        span: Any
        if self._spans is not None:
            span = self._spans.start(name, SpanKind.SERVER, parent, attributes)
        else:
            # start_span + an explicit attach is what start_as_current_span does, without its two
            # generator-based context managers.
            span = self._start(
                name,
                SpanKind.SERVER,
                trace.set_span_in_context(NonRecordingSpan(parent)) if parent is not None else otel_context.Context(),
                parsed is None and decision is True,
                attributes=attributes,
            )
        if parsed is not None:
            call.trace_id = parsed[0]
        else:
            context = span.get_span_context()
            call.trace_id = format(context.trace_id, "032x") if context.is_valid else None
        token = otel_context.attach(trace.set_span_in_context(span))

        def finish(done: ServerCall) -> None:
            otel_context.detach(token)
            if span.is_recording():  # an unsampled span records nothing: skip building it
                code = done.code or grpc.StatusCode.UNKNOWN
                span.set_attribute("rpc.grpc.status_code", code.value[0])
                if code in SERVER_ERROR_CODES:
                    span.set_status(Status(StatusCode.ERROR, code.name))
                if done.error is not None and not isinstance(
                    done.error, grpc.aio.AbortError | asyncio.CancelledError | GeneratorExit
                ):
                    span.record_exception(done.error)
            span.end()

        return finish

    def observe_client(self, call: ClientCall) -> ClientFinish | None:
        active = otel_context.get_current()  # empty (the common case): no span to look for in it
        current = trace.get_current_span(active).get_span_context() if active else None
        forced = False
        if current is not None and current.is_valid:
            decision: bool | None = current.trace_flags.sampled
            header = None if decision else f"00-{current.trace_id:032x}-{current.span_id:016x}-00"
        else:
            current = None
            header = carried_traceparent()
            if header is not None:
                decision = False
            else:
                sampler = self._sampler  # as on the server: drawn here, or None for the provider's sampler
                decision = None if sampler is None else random.random() < sampler.rate
                forced = decision is True
                header = unsampled_traceparent() if decision is False else None
        if header is not None:  # not sampled: pass the trace on, make no span
            call.put_headers(((TRACEPARENT, header),))
            call.trace_id = header[3:35]
            return None
        span: Any
        if self._spans is not None:
            span = self._spans.start(
                f"{call.service}/{call.method}",
                SpanKind.CLIENT,
                current,
                _client_attributes(call),
            )
        else:
            span = self._start(
                f"{call.service}/{call.method}",
                SpanKind.CLIENT,
                None,
                forced,
                attributes=_client_attributes(call),
            )
        context = span.get_span_context()
        if context.is_valid:  # what the W3C propagator writes, without its carrier round trip
            trace_id = format(context.trace_id, "032x")
            traceparent = f"00-{trace_id}-{context.span_id:016x}-{context.trace_flags:02x}"
            if context.trace_state:
                call.put_headers(((TRACEPARENT, traceparent), (TRACESTATE, context.trace_state.to_header())))
            else:
                call.put_headers(((TRACEPARENT, traceparent),))
            call.trace_id = trace_id

        def finish(done: ClientCall) -> None:
            if span.is_recording():  # an unsampled span records nothing: skip building it
                code = done.code or grpc.StatusCode.UNKNOWN
                span.set_attribute("rpc.grpc.status_code", code.value[0])
                if code is not grpc.StatusCode.OK:
                    span.set_status(Status(StatusCode.ERROR, code.name))
            span.end()

        return finish


def tracing_server_interceptor(tracer_provider: trace.TracerProvider) -> ServerObservingInterceptor:
    """A server interceptor making a SERVER span per sampled call, child of the caller's ``traceparent``.

    The span (or, unsampled, the caller's trace context) is current while the handler runs,
    so calls the handler makes continue the trace. ``MeshServer`` runs the same code without
    an interceptor (see :class:`grpcmesh.middleware.server_side.ServerPipeline`).
    """
    return ServerObservingInterceptor(ServerPipeline([Tracing(tracer_provider).server_concern()]))


def tracing_client_interceptors(tracer_provider: trace.TracerProvider) -> list[ClientInterceptor]:
    """Client interceptors making a CLIENT span per sampled call and sending ``traceparent`` in metadata."""
    return client_interceptors(Tracing(tracer_provider).observe_client)


__all__ = [
    "SERVER_ERROR_CODES",
    "MeshSampler",
    "Tracing",
    "current_trace_id",
    "otlp_endpoint",
    "setup_tracing",
    "trace_id_of",
    "tracing_client_interceptors",
    "tracing_server_interceptor",
]
