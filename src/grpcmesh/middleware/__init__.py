"""The mesh's observability and security concerns, client and server side, one concern per module.

``recovery`` (exceptions become INTERNAL), ``metrics`` (Prometheus), ``tracing`` (OpenTelemetry,
the ``[otel]`` extra, imported on first use), ``logging`` (structlog access log) and ``auth``
(shared service key, signed caller identity, per-caller policy). A ``Mesh`` runs them inside
its own call paths (``server_side.ServerPipeline``, ``client_side.ClientObservation``); the
``*_interceptor(s)`` functions give each as grpc.aio interceptors for plain servers and channels.
"""

from typing import Any

from grpcmesh.middleware.auth import (
    AUTH_HEADER,
    CALLER_HEADER,
    CALLER_TOKEN_HEADER,
    DEFAULT_EXEMPT,
    SEED_SERVICE_KEY_HEADER,
    SERVICE_KEY_HEADER,
    auth_client_interceptors,
    auth_server_interceptor,
    current_caller,
    sign_caller,
    signed_caller_header,
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

_TRACING = ("setup_tracing", "tracing_client_interceptors", "tracing_server_interceptor")


def __getattr__(name: str) -> Any:
    """The tracing functions, imported on first use (they need the ``[otel]`` extra)."""
    if name in _TRACING:
        from grpcmesh._extras import require

        require("opentelemetry.sdk.trace", "otel", "tracing")
        from grpcmesh.middleware import tracing

        return getattr(tracing, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "AUTH_HEADER",
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
    "signed_caller_header",
    "tracing_client_interceptors",
    "tracing_server_interceptor",
    "verify_caller",
]
