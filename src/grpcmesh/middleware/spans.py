"""The mesh's own RPC spans: real OpenTelemetry spans without the SDK's per-span machinery.

For a sampled call the mesh has already decided everything the SDK's ``Tracer.start_span``
works out per span: the sampling decision (see :class:`~grpcmesh.middleware.tracing.MeshSampler`),
the parent (the caller's ``traceparent``, or the current span) and attributes whose values are
known to be valid. Going through ``start_span`` anyway cost about 30 µs of the 43 µs a sampled
server span took in a tight loop (sampler, attribute cleaning into ``BoundedAttributes``, a lock,
the ended-span copy), and two or three times that under load; :class:`MeshSpan` costs a few µs.

A :class:`MeshSpan` is a complete ``opentelemetry.trace.Span`` — a handler may set attributes,
add events or links, record exceptions and set the status on ``trace.get_current_span()``, with
the provider's span limits applied — and an SDK ``ReadableSpan``: when it ends it goes to the
provider's span processors exactly as an SDK span does, so every exporter (OTLP, in-memory,
console) receives it unchanged. Spans the handler starts itself are ordinary SDK spans, children
of this one.

The fast path needs a :class:`MeshTracerProvider` (what :func:`~grpcmesh.middleware.tracing.setup_tracing`
makes): an SDK ``TracerProvider`` that also remembers its span processors in order, through its
public ``add_span_processor``. With any other provider the mesh uses the SDK's ``start_span``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from types import TracebackType
from typing import Any

from opentelemetry import trace
from opentelemetry.attributes import BoundedAttributes
from opentelemetry.context import Context
from opentelemetry.sdk.trace import (
    Event,
    ReadableSpan,
    SpanLimits,
    SpanProcessor,
    Tracer,
    TracerProvider,
)
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor
from opentelemetry.sdk.util import BoundedList
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import Link, SpanContext, SpanKind, Status, StatusCode, TraceFlags, TraceState
from opentelemetry.util import types

log = logging.getLogger("grpcmesh.tracing")

_SAMPLED = TraceFlags(TraceFlags.SAMPLED)
_SCALARS = (str, bool, int, float)
_QUIET_ON_START = (BatchSpanProcessor, SimpleSpanProcessor)
"""Processors known to do nothing on start: a span need not be shown to them until it ends."""


class MeshTracerProvider(TracerProvider):
    """An SDK ``TracerProvider`` that keeps its span processors in order, for :class:`MeshSpan`.

    Everything else (``get_tracer``, ``shutdown``, ``force_flush``) is the SDK's own.
    """

    def __init__(self, *, span_limits: SpanLimits | None = None, **kwargs: Any) -> None:
        self.span_limits = span_limits or SpanLimits()
        """The limits applied to attributes, events and links (the SDK reads its env variables once)."""
        self.span_processors: tuple[SpanProcessor, ...] = ()
        """Every processor added with :meth:`add_span_processor`, in order: each gets every ended span."""
        self.starting_processors: tuple[SpanProcessor, ...] = ()
        """The ones that also want to see a span when it starts."""
        super().__init__(span_limits=self.span_limits, **kwargs)

    def add_span_processor(self, span_processor: SpanProcessor) -> None:
        super().add_span_processor(span_processor)
        self.span_processors = (*self.span_processors, span_processor)
        if not isinstance(span_processor, _QUIET_ON_START):
            self.starting_processors = (*self.starting_processors, span_processor)


class MeshSpan(trace.Span, ReadableSpan):
    """A recording span made by the mesh; ends into its provider's span processors (see the module docstring).

    Attributes the mesh sets are plain values kept in a dict; the first value that is not a plain
    scalar, or the first beyond the attribute limit, moves them into the SDK's ``BoundedAttributes``,
    which then applies the limits as the SDK does. Writes to an ended span are ignored with a warning.
    """

    def __init__(
        self,
        name: str,
        context: SpanContext,
        parent: SpanContext | None,
        kind: SpanKind,
        attributes: dict[str, types.AnyValue],
        provider: MeshTracerProvider,
        scope: InstrumentationScope,
        start_time: int | None = None,
    ) -> None:
        ReadableSpan.__init__(
            self,
            name,
            context,
            parent,
            provider.resource,
            attributes,
            kind=kind,
            start_time=time.time_ns() if start_time is None else start_time,
            instrumentation_scope=scope,
        )
        self._provider = provider
        self._bounded = False

    # -- opentelemetry.trace.Span ------------------------------------------------------

    def get_span_context(self) -> SpanContext:
        context: SpanContext = self._context  # type: ignore[assignment]  # always set here
        return context

    def is_recording(self) -> bool:
        return self._end_time is None

    def _ended(self, what: str) -> bool:
        if self._end_time is None:
            return False
        log.warning("%s on the ended span %r: ignored", what, self._name)
        return True

    def set_attribute(self, key: str, value: types.AnyValue) -> None:
        if self._ended("set_attribute"):
            return
        if not self._bounded and self._plain(key, value):
            self._attributes[key] = value  # type: ignore[index]  # a plain dict until bounded
            return
        self._bound_attributes()[key] = value

    def _plain(self, key: object, value: object) -> bool:
        """True when ``value`` may go straight into the plain dict: a scalar the limits cannot touch."""
        limits = self._provider.span_limits
        if not isinstance(key, str) or not key or not isinstance(value, _SCALARS):
            return False
        if isinstance(value, str) and limits.max_attribute_length is not None:
            return False
        attributes: Any = self._attributes
        return key in attributes or limits.max_span_attributes is None or len(attributes) < limits.max_span_attributes

    def set_attributes(self, attributes: Mapping[str, types.AnyValue]) -> None:
        for key, value in attributes.items():
            self.set_attribute(key, value)

    def _bound_attributes(self) -> BoundedAttributes:
        """The attributes as the SDK keeps them (limits, value cleaning), from now on."""
        if not self._bounded:
            limits = self._provider.span_limits
            self._attributes = BoundedAttributes(
                limits.max_span_attributes, self._attributes, immutable=False, max_value_len=limits.max_attribute_length
            )
            self._bounded = True
        bounded: BoundedAttributes = self._attributes  # type: ignore[assignment]
        return bounded

    def add_event(self, name: str, attributes: types.Attributes = None, timestamp: int | None = None) -> None:
        if self._ended("add_event"):
            return
        limits = self._provider.span_limits
        if not isinstance(self._events, BoundedList):
            self._events = BoundedList(limits.max_events)
        frozen = self._frozen(limits.max_event_attributes, attributes)
        self._events.append(Event(name=name, attributes=frozen, timestamp=timestamp))

    def add_link(self, context: SpanContext, attributes: types.Attributes = None) -> None:
        if self._ended("add_link") or not context.is_valid:
            return
        limits = self._provider.span_limits
        if not isinstance(self._links, BoundedList):
            self._links = BoundedList(limits.max_links)
        self._links.append(Link(context, self._frozen(limits.max_link_attributes, attributes)))

    def _frozen(self, most: int | None, attributes: types.Attributes) -> BoundedAttributes:
        """An event's or link's attributes, cleaned and limited as the SDK does, then immutable."""
        max_length = self._provider.span_limits.max_attribute_length
        return BoundedAttributes(most, attributes, max_value_len=max_length, immutable=True)

    def update_name(self, name: str) -> None:
        if not self._ended("update_name"):
            self._name = name

    def set_status(self, status: Status | StatusCode, description: str | None = None) -> None:
        """As the SDK: OK is final, UNSET is ignored."""
        if self._ended("set_status") or self._status.status_code is StatusCode.OK:
            return
        if isinstance(status, Status):
            if status.status_code is not StatusCode.UNSET:
                self._status = status
        elif status is not StatusCode.UNSET:
            self._status = Status(status, description)

    def record_exception(
        self,
        exception: BaseException,
        attributes: types.Attributes = None,
        timestamp: int | None = None,
        escaped: bool = False,
    ) -> None:
        """An ``exception`` event with the attributes the SDK writes (type, message, stack trace)."""
        import traceback

        module = type(exception).__module__
        qualname = type(exception).__qualname__
        recorded: dict[str, types.AnyValue] = {
            "exception.type": f"{module}.{qualname}" if module and module != "builtins" else qualname,
            "exception.message": str(exception),
            "exception.stacktrace": "".join(traceback.format_exception(exception)),
            "exception.escaped": str(escaped),
        }
        if attributes:
            recorded.update(attributes)
        self.add_event("exception", recorded, timestamp)

    def end(self, end_time: int | None = None) -> None:
        if self._ended("end"):
            return
        self._end_time = time.time_ns() if end_time is None else end_time
        for processor in self._provider.span_processors:
            try:
                processor.on_end(self)
            except Exception:  # a broken processor must not fail the call, nor keep the others from the span
                log.exception("span processor %r failed on end", processor)

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc_val: BaseException | None,
        exc_tb: TracebackType | None,
    ) -> None:
        if exc_val is not None and self.is_recording():
            self.record_exception(exc_val, escaped=True)
            self.set_status(Status(StatusCode.ERROR, f"{exc_type.__name__ if exc_type else 'Error'}: {exc_val}"))
        self.end()

    def __repr__(self) -> str:
        context = self.get_span_context()
        return f'MeshSpan(name="{self._name}", trace_id=0x{context.trace_id:032x}, span_id=0x{context.span_id:016x})'


class MeshSpans:
    """Makes :class:`MeshSpan` objects for one provider (or says it cannot: :meth:`of`)."""

    def __init__(self, provider: MeshTracerProvider, instrumentation: str) -> None:
        self._provider = provider
        self._ids = provider.id_generator
        self._scope = InstrumentationScope(instrumentation)

    @classmethod
    def of(cls, provider: trace.TracerProvider, instrumentation: str) -> MeshSpans | None:
        """Spans for ``provider``, or ``None`` when it is not a :class:`MeshTracerProvider` with
        tracing switched on (then the SDK's ``start_span`` must make them)."""
        if not isinstance(provider, MeshTracerProvider):
            return None
        if not isinstance(provider.get_tracer(instrumentation), Tracer):  # OTEL_SDK_DISABLED and the like
            return None
        return cls(provider, instrumentation)

    def start(
        self,
        name: str,
        kind: SpanKind,
        parent: SpanContext | None,
        attributes: dict[str, types.AnyValue],
        trace_state: TraceState | None = None,
    ) -> MeshSpan:
        """A sampled span, child of ``parent`` (a new trace without one), started now."""
        if parent is not None:
            trace_id = parent.trace_id
            if trace_state is None:
                trace_state = parent.trace_state
        else:
            trace_id = self._ids.generate_trace_id()
        context = SpanContext(
            trace_id, self._ids.generate_span_id(), is_remote=False, trace_flags=_SAMPLED, trace_state=trace_state
        )
        span = MeshSpan(name, context, parent, kind, attributes, self._provider, self._scope)
        starting = self._provider.starting_processors
        if starting:
            parent_context = (
                trace.set_span_in_context(trace.NonRecordingSpan(parent), Context()) if parent is not None else None
            )
            for processor in starting:
                try:
                    processor.on_start(span, parent_context=parent_context)  # type: ignore[arg-type]
                except Exception:
                    log.exception("span processor %r failed on start", processor)
        return span


def remote_parent(trace_id: str, span_id: str, sampled: bool, tracestate: str | None) -> SpanContext:
    """The caller's span, from the fields of its ``traceparent`` (and ``tracestate``, if any)."""
    return SpanContext(
        int(trace_id, 16),
        int(span_id, 16),
        is_remote=True,
        trace_flags=TraceFlags(TraceFlags.SAMPLED if sampled else TraceFlags.DEFAULT),
        trace_state=TraceState.from_header([tracestate]) if tracestate else None,
    )


__all__ = ["MeshSpan", "MeshSpans", "MeshTracerProvider", "remote_parent"]
