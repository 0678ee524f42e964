"""The middleware a ``Mesh`` runs, built from its config's security, tracing, metrics and logging.

Not as grpc.aio interceptors: the mesh owns both ends of its calls, so the server concerns
become one :class:`~grpcmesh.middleware.server_side.ServerPipeline` per ``MeshServer`` (one
wrapper per method, built once) and the client concerns one
:class:`~grpcmesh.middleware.client_side.ClientObservation` per call inside ``MeshChannel``.
Order on both sides: tracing (so everything after it sees the trace id), logging, metrics
(unauthenticated calls are counted too), auth. Recovery is the server wrapper's own.

A new concern is added here, in its place in that order: its ``ServerConcern`` to
``server_concerns`` and its client observer to the observation's list, switched on by its
config section. Every server and channel of the mesh then runs it, with no interceptor.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

import structlog
from prometheus_client import CollectorRegistry

from grpcmesh.client.channel import ChannelStats
from grpcmesh.config import MeshConfig
from grpcmesh.middleware.auth import DEFAULT_EXEMPT, ClientAuth, ServerAuth
from grpcmesh.middleware.client_side import ClientObservation, ClientObserver
from grpcmesh.middleware.logging import AccessLog, configure_logging
from grpcmesh.middleware.metrics import ChannelStatsCollector, GrpcMetrics, MetricsServer
from grpcmesh.middleware.server_side import ServerConcern

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider

log = logging.getLogger("grpcmesh.mesh")


class MeshMiddleware:
    """The server concerns, the client observation, the metrics registry and endpoint, and the
    tracer provider of one mesh."""

    def __init__(self, config: MeshConfig, metrics_registry: CollectorRegistry | None = None) -> None:
        service = config.service.name if config.service else None
        self.server_concerns: list[ServerConcern] = []
        client: list[ClientObserver] = []
        self.tracer_provider: TracerProvider | None = None
        self.metrics_registry: CollectorRegistry | None = None
        self._metrics_server: MetricsServer | None = None
        self._metrics = config.metrics

        if config.tracing.enabled:
            from grpcmesh._extras import require

            require("opentelemetry.sdk.trace", "otel", "tracing")
            from grpcmesh.middleware.tracing import Tracing, setup_tracing

            self.tracer_provider = setup_tracing(
                service or "grpcmesh-client", endpoint=config.tracing.endpoint, sample_rate=config.tracing.sample_rate
            )
            tracing = Tracing(self.tracer_provider)
            self.server_concerns.append(tracing.server_concern())
            client.append(tracing.observe_client)
        if config.logging.enabled:
            settings = config.logging
            if not structlog.is_configured():
                configure_logging(json=settings.format == "json", level=settings.level)
            access_log = AccessLog(
                service,
                mode=settings.access_log,
                sample_rate=settings.access_log_sample_rate,
                slow_call_threshold=settings.slow_call_threshold,
            )
            concern = access_log.server_concern()
            if concern is not None:
                self.server_concerns.append(concern)
                client.append(access_log.observe_client)
        if config.metrics.enabled or metrics_registry is not None:
            self.metrics_registry = metrics_registry if metrics_registry is not None else CollectorRegistry()
            metrics = GrpcMetrics.of(self.metrics_registry)
            self.server_concerns.append(metrics.server_concern(service))
            client.append(metrics.observe_client)
        key = config.security.service_auth_key
        if key is not None:
            secret = key.get_secret_value()
            # Health stays open for probes; reflection describes every method, so it needs the key
            # unless the config opens it (security.public_reflection).
            public = config.security.public_reflection
            exempt = DEFAULT_EXEMPT if public else tuple(p for p in DEFAULT_EXEMPT if ".reflection." not in p)
            auth = ServerAuth(secret, config.security.allowed_callers or None, exempt)
            self.server_concerns.append(auth.server_concern())
            legacy = config.security.legacy_auth_headers
            client.append(ClientAuth(secret, caller=service, legacy_headers=legacy).observe_client)
        self.client_observation: ClientObservation | None = ClientObservation(client, service or "") if client else None
        """What every channel of the mesh runs once per call (``None``: nothing to observe)."""

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
            provider: Any = self.tracer_provider
            await asyncio.to_thread(provider.shutdown)
