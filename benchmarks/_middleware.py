"""The full middleware stack the overhead benchmark turns on: auth + metrics + tracing + logging.

Set up as a service would (README order: tracing outermost, then logging, metrics, auth),
with every call traced (``sample_rate=1.0``, the worst case) or 10% as in the seed's config
and exported through a ``BatchSpanProcessor`` to an exporter that encodes nothing and drops
the batch (there is no collector on this machine). Access logs are rendered as JSON lines
and written to ``/dev/null``, so their formatting is paid but no terminal is involved.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

AUTH_KEY = "benchmark-service-key-0123456789abcdef"


def available() -> bool:
    import importlib.util

    return importlib.util.find_spec("grpcmesh.middleware.auth") is not None


def _exporter() -> Any:
    from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

    class DropExporter(SpanExporter):
        """Receives every finished span batch, as an OTLP exporter would, and drops it."""

        def export(self, spans: Sequence[Any]) -> SpanExportResult:
            return SpanExportResult.SUCCESS

    return DropExporter()


def _logging() -> None:
    from grpcmesh.middleware import configure_logging

    configure_logging(json=True, level="INFO", stream=open(os.devnull, "w"))  # noqa: SIM115 - lives as long as the process


def client_interceptors(sample_rate: float = 1.0) -> list[Any]:
    from prometheus_client import CollectorRegistry

    from grpcmesh.middleware import (
        auth_client_interceptors,
        logging_client_interceptors,
        metrics_client_interceptors,
        setup_tracing,
        tracing_client_interceptors,
    )

    _logging()
    provider = setup_tracing("bench-client", sample_rate=sample_rate, exporter=_exporter())
    return [
        *tracing_client_interceptors(provider),
        *logging_client_interceptors("echo-mw"),
        *metrics_client_interceptors(CollectorRegistry()),
        *auth_client_interceptors(AUTH_KEY, caller="bench-client"),
    ]


def server_interceptors(service_name: str, sample_rate: float = 1.0) -> list[Any]:
    from prometheus_client import CollectorRegistry

    from grpcmesh.middleware import (
        auth_server_interceptor,
        logging_server_interceptor,
        metrics_server_interceptor,
        setup_tracing,
        tracing_server_interceptor,
    )

    _logging()
    provider = setup_tracing(service_name, sample_rate=sample_rate, exporter=_exporter())
    return [
        tracing_server_interceptor(provider),
        logging_server_interceptor(service_name),
        metrics_server_interceptor(CollectorRegistry(), service_name),
        auth_server_interceptor(AUTH_KEY, policy={"bench-client": ["/grpcmesh.echo.v1.Echo/*"]}),
    ]
