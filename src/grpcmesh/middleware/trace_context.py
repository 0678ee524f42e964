"""W3C trace context without OpenTelemetry: parse ``traceparent``, carry an unsampled one on.

Tracing needs OpenTelemetry (the ``[otel]`` extra) only for *sampled* calls. Reading the trace
id for the access log and carrying a "not sampled" context from a served call to the calls
its handler makes are plain string work, done here, so they cost no span objects and work
without the extra.
"""

from __future__ import annotations

import contextvars
import random
import sys
from typing import Any

from grpcmesh.middleware.behavior import metadata_value

TRACEPARENT = "traceparent"

carried: contextvars.ContextVar[str | None] = contextvars.ContextVar("grpcmesh_unsampled_trace", default=None)
"""The ``traceparent`` of the unsampled call being served, carried on to the calls its handler makes."""


def parse_traceparent(header: str | None) -> tuple[str, str, bool] | None:
    """(trace id, parent span id, sampled) of a valid W3C ``traceparent``; ``None`` otherwise."""
    if header is None or len(header) < 55 or header[2] != "-" or header[35] != "-" or header[52] != "-":
        return None
    version, trace_id, span_id, flags = header[:2], header[3:35], header[36:52], header[53:55]
    if len(header) > 55 and (version == "00" or header[55] != "-"):
        return None
    try:
        if version == "ff" or int(version, 16) < 0 or int(trace_id, 16) == 0 or int(span_id, 16) == 0:
            return None
        sampled = bool(int(flags, 16) & 1)
    except ValueError:
        return None
    if not (trace_id.islower() or trace_id.isdigit()) or not (span_id.islower() or span_id.isdigit()):
        return None
    return trace_id, span_id, sampled


def unsampled_traceparent(trace_id: str | None = None, span_id: str | None = None) -> str:
    """A "not sampled" ``traceparent``: the given ids, or new random ones for a new trace."""
    trace_id = trace_id or f"{random.getrandbits(128) or 1:032x}"
    span_id = span_id or f"{random.getrandbits(64) or 1:016x}"
    return f"00-{trace_id}-{span_id}-00"


def trace_id_of(metadata: Any) -> str | None:
    """The trace id in a ``traceparent`` metadata entry, as 32 hex digits (for logs)."""
    parsed = parse_traceparent(metadata_value(metadata, TRACEPARENT))
    return None if parsed is None else parsed[0]


def current_trace_id() -> str | None:
    """The trace id of the current span (or of the carried unsampled trace); ``None`` outside a trace.

    OpenTelemetry is consulted only if something already imported it (no import cost otherwise).
    """
    otel_trace = sys.modules.get("opentelemetry.trace")
    if otel_trace is not None:
        context = otel_trace.get_current_span().get_span_context()
        if context.is_valid:
            return format(context.trace_id, "032x")
    header = carried.get()
    return None if header is None else header[3:35]
