"""grpc.aio interceptors, client and server side, one concern per module.

Each piece is one module with a small constructor taking plain arguments:
``recovery`` (exceptions become INTERNAL), ``metrics`` (Prometheus), ``tracing`` (OpenTelemetry),
``logging`` (structlog) and ``auth`` (shared service key, signed caller identity, per-caller policy).
"""

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
    GrpcMetrics,
    MeshMetrics,
    MetricsServer,
    metrics_client_interceptors,
    metrics_server_interceptor,
)
from grpcmesh.middleware.tracing import setup_tracing, tracing_client_interceptors, tracing_server_interceptor

__all__ = [
    "CALLER_HEADER",
    "CALLER_TOKEN_HEADER",
    "DEFAULT_EXEMPT",
    "SEED_SERVICE_KEY_HEADER",
    "SERVICE_KEY_HEADER",
    "GrpcMetrics",
    "MeshMetrics",
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
