"""Trace ids for log lines, without importing OpenTelemetry.

Access logs carry the call's trace id whether or not this process traces: the caller's
``traceparent`` header is read as the W3C format defines it, and the current span is asked
for only when OpenTelemetry is already loaded (it is, exactly when tracing is enabled), so
logging does not need the ``[otel]`` extra.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Sequence

import grpc

from grpcmesh.middleware._calls import iter_metadata

SERVER_ERROR_CODES = frozenset(
    {
        grpc.StatusCode.UNKNOWN,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.UNIMPLEMENTED,
        grpc.StatusCode.INTERNAL,
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DATA_LOSS,
    }
)
"""Codes that mark a *server* span as an error (semantic conventions); a client span errs on any non-OK."""

_TRACEPARENT = re.compile(r"^([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-.*)?$")
_INVALID_TRACE_ID = "0" * 32


def trace_id_of(metadata: Sequence[tuple[str, str | bytes]] | None) -> str | None:
    """The trace id in a ``traceparent`` metadata entry, as 32 hex digits (for logs)."""
    for key, value in iter_metadata(metadata):
        if key != "traceparent" or not isinstance(value, str):
            continue
        match = _TRACEPARENT.match(value.strip())
        if match is None or match[1] == "ff" or (match[1] == "00" and match[5]):
            return None
        trace_id, parent_id = match[2], match[3]
        if trace_id == _INVALID_TRACE_ID or parent_id == "0" * 16:
            return None
        return trace_id
    return None


def current_trace_id() -> str | None:
    """The trace id of the current span, as 32 hex digits, or ``None`` outside a trace."""
    trace = sys.modules.get("opentelemetry.trace")
    if trace is None:  # tracing is off in this process, so there is no current span
        return None
    context = trace.get_current_span().get_span_context()
    return format(context.trace_id, "032x") if context.is_valid else None
