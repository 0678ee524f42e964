"""The middleware a ``Mesh`` runs, built from its config's security, tracing, metrics and logging.

Order on both sides: tracing (so everything after it sees the span), logging (lines carry the
trace id), metrics (unauthenticated calls are counted too), auth. The server side runs the
recovery interceptor before all of them (``MeshServer`` adds it).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable
from typing import Any

import structlog
from opentelemetry.sdk.trace import TracerProvider
from prometheus_client import CollectorRegistry

from grpcmesh.client.channel import ChannelStats
from grpcmesh.config import MeshConfig
from grpcmesh.middleware.auth import auth_client_interceptors, auth_server_interceptor
from grpcmesh.middleware.logging import configure_logging, logging_client_interceptors, logging_server_interceptor
from grpcmesh.middleware.metrics import (
    ChannelStatsCollector,
    MetricsServer,
    metrics_client_interceptors,
    metrics_server_interceptor,
)
from grpcmesh.middleware.tracing import setup_tracing, tracing_client_interceptors, tracing_server_interceptor

log = logging.getLogger("grpcmesh.mesh")


class MeshMiddleware:
    """Interceptor chains, the metrics registry and endpoint, and the tracer provider of one mesh."""

    def __init__(self, config: MeshConfig, metrics_registry: CollectorRegistry | None = None) -> None:
        service = config.service.name if config.service else None
        self.server: list[Any] = []
        self.client: list[Any] = []
        self.tracer_provider: TracerProvider | None = None
        self.metrics_registry: CollectorRegistry | None = None
        self._metrics_server: MetricsServer | None = None
        self._metrics = config.metrics

        if config.tracing.enabled:
            self.tracer_provider = setup_tracing(
                service or "grpcmesh-client", endpoint=config.tracing.endpoint, sample_rate=config.tracing.sample_rate
            )
            self.server.append(tracing_server_interceptor(self.tracer_provider))
            self.client.extend(tracing_client_interceptors(self.tracer_provider))
        if config.logging.enabled:
            if not structlog.is_configured():
                configure_logging(json=config.logging.format == "json", level=config.logging.level)
            self.server.append(logging_server_interceptor(service))
            self.client.extend(logging_client_interceptors(service))
        if config.metrics.enabled or metrics_registry is not None:
            self.metrics_registry = metrics_registry if metrics_registry is not None else CollectorRegistry()
            self.server.append(metrics_server_interceptor(self.metrics_registry, service))
            self.client.extend(metrics_client_interceptors(self.metrics_registry, service))
        key = config.security.service_auth_key
        if key is not None:
            secret = key.get_secret_value()
            policy = config.security.allowed_callers or None
            self.server.append(auth_server_interceptor(secret, policy))
            self.client.extend(auth_client_interceptors(secret, caller=service))

    def watch_clients(self, stats: Callable[[], Iterable[ChannelStats]]) -> None:
        """Export the client channels' state (endpoints, ejections, retries, watch errors) at scrape time."""
        if self.metrics_registry is not None:
            self.metrics_registry.register(ChannelStatsCollector(stats))

    async def metrics_metadata(self) -> dict[str, str]:
        """Start the ``/metrics`` endpoint (once per mesh) and name it for the registry (``metrics_url``)."""
        if self.metrics_registry is None or not self._metrics.enabled:
            return {}
        if self._metrics_server is None:
            server = MetricsServer(self.metrics_registry, self._metrics.prometheus_port, self._metrics.host)
            await server.start()
            self._metrics_server = server
            log.info("metrics on http://%s:%s/metrics", self._metrics.host, server.port)
        host = self._metrics.host
        host = f"[{host}]" if ":" in host else host
        return {"metrics_url": f"http://{host}:{self._metrics_server.port}/metrics"}

    async def close(self) -> None:
        if self._metrics_server is not None:
            await self._metrics_server.stop()
            self._metrics_server = None
        if self.tracer_provider is not None:
            # Flushing pending spans may wait on the exporter's network I/O: keep it off the loop.
            await asyncio.to_thread(self.tracer_provider.shutdown)
