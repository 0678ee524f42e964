"""Prometheus metrics for gRPC calls (server and client side) and for the mesh itself.

Exposes the seed's two series (``grpc_service_requests_total``, ``grpc_service_latency_seconds``)
beside the de-facto standard names of go-grpc-prometheus (``grpc_server_handled_total`` and
friends), so existing Grafana dashboards work unchanged. Every family lives in a
``CollectorRegistry`` you pass in; the global default registry is used only if you pass it.
"""

from __future__ import annotations

import weakref
from collections.abc import Iterator
from contextlib import contextmanager

import grpc
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from grpcmesh.middleware._calls import (
    ClientCall,
    ClientFinish,
    ClientInterceptor,
    ServerCall,
    ServerInterceptor,
    ServerObservingInterceptor,
    client_interceptors,
)

SEED_LATENCY_BUCKETS = (0.01, 0.05, 0.1, 0.5, 1.0, 2.5, 5.0)
"""The seed's ``grpc_service_latency_seconds`` buckets."""

HANDLING_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
"""Prometheus' default buckets, as go-grpc-prometheus uses for ``grpc_*_handling_seconds``."""

_STANDARD_LABELS = ("grpc_service", "grpc_method", "grpc_type")


class GrpcMetrics:
    """The gRPC metric families of one registry; get it with :meth:`of` so each registers once."""

    _by_registry: weakref.WeakKeyDictionary[CollectorRegistry, GrpcMetrics] = weakref.WeakKeyDictionary()

    @classmethod
    def of(cls, registry: CollectorRegistry) -> GrpcMetrics:
        """The (single) ``GrpcMetrics`` registered in ``registry``."""
        found = cls._by_registry.get(registry)
        if found is None:
            found = cls._by_registry[registry] = cls(registry)
        return found

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.service_requests = Counter(
            "grpc_service_requests_total",
            "Total number of gRPC requests by service, method and status (server side)",
            ["service", "method", "status"],
            registry=registry,
        )
        self.service_latency = Histogram(
            "grpc_service_latency_seconds",
            "Service method latency in seconds (server side)",
            ["service", "method"],
            buckets=SEED_LATENCY_BUCKETS,
            registry=registry,
        )
        self.server_started = Counter(
            "grpc_server_started_total", "RPCs started on the server", _STANDARD_LABELS, registry=registry
        )
        self.server_handled = Counter(
            "grpc_server_handled_total",
            "RPCs completed on the server, regardless of success or failure",
            [*_STANDARD_LABELS, "grpc_code"],
            registry=registry,
        )
        self.server_handling = Histogram(
            "grpc_server_handling_seconds",
            "Time the server took to handle an RPC",
            _STANDARD_LABELS,
            buckets=HANDLING_BUCKETS,
            registry=registry,
        )
        self.client_started = Counter(
            "grpc_client_started_total", "RPCs started by the client", _STANDARD_LABELS, registry=registry
        )
        self.client_handled = Counter(
            "grpc_client_handled_total",
            "RPCs completed by the client, regardless of success or failure",
            [*_STANDARD_LABELS, "grpc_code"],
            registry=registry,
        )
        self.client_handling = Histogram(
            "grpc_client_handling_seconds",
            "Time from the client starting an RPC until it got the final status",
            _STANDARD_LABELS,
            buckets=HANDLING_BUCKETS,
            registry=registry,
        )

    @contextmanager
    def _observe_server(self, service_name: str | None, call: ServerCall) -> Iterator[None]:
        labels = (call.service, call.method, call.rpc_type.value)
        self.server_started.labels(*labels).inc()
        try:
            yield
        finally:
            duration = call.duration
            code = (call.code or grpc.StatusCode.UNKNOWN).name
            self.server_handled.labels(*labels, code).inc()
            self.server_handling.labels(*labels).observe(duration)
            seed_service = service_name or call.service
            self.service_requests.labels(seed_service, call.full_method, code).inc()
            self.service_latency.labels(seed_service, call.full_method).observe(duration)

    def _observe_client(self, call: ClientCall) -> ClientFinish:
        labels = (call.service, call.method, call.rpc_type.value)
        self.client_started.labels(*labels).inc()

        def finish(done: ClientCall) -> None:
            code = (done.code or grpc.StatusCode.UNKNOWN).name
            self.client_handled.labels(*labels, code).inc()
            self.client_handling.labels(*labels).observe(done.duration)

        return finish


def metrics_server_interceptor(registry: CollectorRegistry, service_name: str | None = None) -> ServerInterceptor:
    """A server interceptor recording every call in ``registry``.

    ``service_name`` (the mesh name, e.g. ``user-service``) fills the seed's ``service`` label;
    without it the gRPC service name is used. Methods the server does not implement are not
    recorded, so unknown method names cannot blow up label cardinality.
    """
    metrics = GrpcMetrics.of(registry)
    return ServerObservingInterceptor(lambda call: metrics._observe_server(service_name, call))


def metrics_client_interceptors(registry: CollectorRegistry) -> list[ClientInterceptor]:
    """Client interceptors (one per RPC kind) recording ``grpc_client_*`` in ``registry``."""
    return client_interceptors(GrpcMetrics.of(registry)._observe_client)


class MeshMetrics:
    """Mesh-level series the client and discovery layers update (endpoints, ejections, watch errors)."""

    _by_registry: weakref.WeakKeyDictionary[CollectorRegistry, MeshMetrics] = weakref.WeakKeyDictionary()

    @classmethod
    def of(cls, registry: CollectorRegistry) -> MeshMetrics:
        """The (single) ``MeshMetrics`` registered in ``registry``."""
        found = cls._by_registry.get(registry)
        if found is None:
            found = cls._by_registry[registry] = cls(registry)
        return found

    def __init__(self, registry: CollectorRegistry) -> None:
        self._endpoints = Gauge(
            "grpcmesh_endpoints", "Endpoints currently usable per service", ["service"], registry=registry
        )
        self._ejections = Counter(
            "grpcmesh_ejections_total", "Endpoints ejected as outliers per service", ["service"], registry=registry
        )
        self._watch_errors = Counter(
            "grpcmesh_registry_watch_errors_total",
            "Errors while watching the registry per service",
            ["service"],
            registry=registry,
        )

    def set_endpoints(self, service: str, count: int) -> None:
        self._endpoints.labels(service).set(count)

    def endpoint_ejected(self, service: str) -> None:
        self._ejections.labels(service).inc()

    def watch_error(self, service: str) -> None:
        self._watch_errors.labels(service).inc()


class MetricsServer:
    """An asyncio HTTP server exposing one registry at ``/metrics`` (bound to 127.0.0.1 by default)."""

    def __init__(self, registry: CollectorRegistry, port: int = 0, host: str = "127.0.0.1") -> None:
        self._registry = registry
        self._host = host
        self._requested_port = port
        self._runner: web.AppRunner | None = None
        self.port: int | None = None
        """The bound port once started (useful with ``port=0``)."""

    async def _metrics(self, _request: web.Request) -> web.Response:
        body = generate_latest(self._registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def start(self) -> None:
        if self._runner is not None:
            return
        app = web.Application()
        app.router.add_get("/metrics", self._metrics)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, self._host, self._requested_port)
        try:
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        self.port = int(runner.addresses[0][1])

    async def stop(self) -> None:
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await runner.cleanup()

    async def __aenter__(self) -> MetricsServer:
        await self.start()
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.stop()
