"""grpc.aio interceptors, client and server side, one concern per module.

Each piece is one module with a small constructor taking plain arguments:
``recovery`` (exceptions become INTERNAL), ``metrics`` (Prometheus), ``tracing`` (OpenTelemetry),
``logging`` (structlog) and ``auth`` (shared service key, signed caller identity, per-caller policy).
"""

from typing import Any

from grpcmesh.middleware.auth import (
    CALLER_HEADER,
    CALLER_TOKEN_HEADER,
    DEFAULT_EXEMPT,
    SEED_SERVICE_KEY_HEADER,
    SERVICE_KEY_HEADER,
    auth_client_interceptors,
    auth_server_interceptor,
    current_caller,
    sign_caller,
    verify_caller,
)
from grpcmesh.middleware.logging import (
    configure_logging,
    logging_client_interceptors,
    logging_server_interceptor,
    redact_secrets,
)
from grpcmesh.middleware.metrics import (
    ChannelStatsCollector,
    GrpcMetrics,
    MetricsServer,
    metrics_client_interceptors,
    metrics_server_interceptor,
)

_TRACING_NAMES = frozenset({"setup_tracing", "tracing_client_interceptors", "tracing_server_interceptor"})


def __getattr__(name: str) -> Any:
    """Tracing needs the ``[otel]`` extra, so it is imported only when one of its names is used."""
    if name in _TRACING_NAMES:
        from grpcmesh._extras import require

        require("opentelemetry.sdk.trace", "otel", "tracing")
        from grpcmesh.middleware import tracing

        return getattr(tracing, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "CALLER_HEADER",
    "CALLER_TOKEN_HEADER",
    "DEFAULT_EXEMPT",
    "SEED_SERVICE_KEY_HEADER",
    "SERVICE_KEY_HEADER",
    "ChannelStatsCollector",
    "GrpcMetrics",
    "MetricsServer",
    "auth_client_interceptors",
    "auth_server_interceptor",
    "configure_logging",
    "current_caller",
    "logging_client_interceptors",
    "logging_server_interceptor",
    "metrics_client_interceptors",
    "metrics_server_interceptor",
    "redact_secrets",
    "setup_tracing",
    "sign_caller",
    "tracing_client_interceptors",
    "tracing_server_interceptor",
    "verify_caller",
]
