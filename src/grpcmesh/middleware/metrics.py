"""Prometheus metrics for gRPC calls (server and client side) and for the mesh itself.

Exposes the seed's two series (``grpc_service_requests_total``, ``grpc_service_latency_seconds``)
beside the de-facto standard names of go-grpc-prometheus (``grpc_server_handled_total`` and
friends), so existing Grafana dashboards work unchanged. Every family lives in a
``CollectorRegistry`` you pass in; the global default registry is used only if you pass it.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any

import grpc
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from grpcmesh.client.calls import CALLEE
from grpcmesh.client.channel import ChannelStats
from grpcmesh.middleware._calls import (
    MAX_CACHED_METHODS,
    ClientCall,
    ClientFinish,
    ClientInterceptor,
    RpcType,
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
_CLIENT_LABELS = (*_STANDARD_LABELS, "caller", "callee")
"""Client series also name the calling mesh service and the mesh service called (the dashboard's edges)."""


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
        self._server_cache: dict[tuple[str | None, str, RpcType], _ServerChildren] = {}
        self._client_cache: dict[tuple[str, RpcType, str, str], _ClientChildren] = {}
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
            "grpc_client_started_total", "RPCs started by the client", _CLIENT_LABELS, registry=registry
        )
        self.client_handled = Counter(
            "grpc_client_handled_total",
            "RPCs completed by the client, regardless of success or failure",
            [*_CLIENT_LABELS, "grpc_code"],
            registry=registry,
        )
        self.client_handling = Histogram(
            "grpc_client_handling_seconds",
            "Time from the client starting an RPC until it got the final status",
            _CLIENT_LABELS,
            buckets=HANDLING_BUCKETS,
            registry=registry,
        )

    def _server_children(self, service_name: str | None, call: ServerCall) -> _ServerChildren:
        key = (service_name, call.full_method, call.rpc_type)
        found = self._server_cache.get(key)
        if found is None:
            found = _ServerChildren(self, service_name or call.service, call)
            if len(self._server_cache) < MAX_CACHED_METHODS:
                self._server_cache[key] = found
        return found

    @contextmanager
    def _observe_server(self, service_name: str | None, call: ServerCall) -> Iterator[None]:
        children = self._server_children(service_name, call)
        children.started.inc()
        try:
            yield
        finally:
            duration = call.duration
            handled, requests = children.by_code(call.code or grpc.StatusCode.UNKNOWN)
            handled.inc()
            children.handling.observe(duration)
            requests.inc()
            children.latency.observe(duration)

    def _client_children(self, call: ClientCall, caller: str) -> _ClientChildren:
        callee = CALLEE.get()
        key = (call.full_method, call.rpc_type, caller, callee)
        found = self._client_cache.get(key)
        if found is None:
            found = _ClientChildren(self, call, caller, callee)
            if len(self._client_cache) < MAX_CACHED_METHODS:
                self._client_cache[key] = found
        return found

    def _observe_client(self, call: ClientCall, caller: str = "") -> ClientFinish:
        children = self._client_children(call, caller)
        children.started.inc()

        def finish(done: ClientCall) -> None:
            children.handled(done.code or grpc.StatusCode.UNKNOWN).inc()
            children.handling.observe(done.duration)

        return finish


class _ServerChildren:
    """The labelled series of one (mesh service, method, RPC type), looked up once, not per call.

    ``prometheus_client``'s ``.labels(...)`` takes a lock and hashes the label tuple on every
    call; its children are stable objects, so holding on to them records exactly the same series.
    """

    __slots__ = ("_by_code", "_labels", "_metrics", "_seed", "handling", "latency", "started")

    def __init__(self, metrics: GrpcMetrics, seed_service: str, call: ServerCall) -> None:
        self._metrics = metrics
        self._labels = (call.service, call.method, call.rpc_type.value)
        self._seed = (seed_service, call.full_method)
        self.started = metrics.server_started.labels(*self._labels)
        self.handling = metrics.server_handling.labels(*self._labels)
        self.latency = metrics.service_latency.labels(*self._seed)
        self._by_code: dict[grpc.StatusCode, tuple[Any, Any]] = {}

    def by_code(self, code: grpc.StatusCode) -> tuple[Any, Any]:
        """(``grpc_server_handled_total``, ``grpc_service_requests_total``) children for ``code``."""
        found = self._by_code.get(code)
        if found is None:
            found = self._by_code[code] = (
                self._metrics.server_handled.labels(*self._labels, code.name),
                self._metrics.service_requests.labels(*self._seed, code.name),
            )
        return found


class _ClientChildren:
    """The client-side counterpart of :class:`_ServerChildren`."""

    __slots__ = ("_by_code", "_labels", "_metrics", "handling", "started")

    def __init__(self, metrics: GrpcMetrics, call: ClientCall, caller: str, callee: str) -> None:
        self._metrics = metrics
        self._labels = (call.service, call.method, call.rpc_type.value, caller, callee)
        self.started = metrics.client_started.labels(*self._labels)
        self.handling = metrics.client_handling.labels(*self._labels)
        self._by_code: dict[grpc.StatusCode, Any] = {}

    def handled(self, code: grpc.StatusCode) -> Any:
        found = self._by_code.get(code)
        if found is None:
            found = self._by_code[code] = self._metrics.client_handled.labels(*self._labels, code.name)
        return found


def metrics_server_interceptor(registry: CollectorRegistry, service_name: str | None = None) -> ServerInterceptor:
    """A server interceptor recording every call in ``registry``.

    ``service_name`` (the mesh name, e.g. ``user-service``) fills the seed's ``service`` label;
    without it the gRPC service name is used. Methods the server does not implement are not
    recorded, so unknown method names cannot blow up label cardinality.
    """
    metrics = GrpcMetrics.of(registry)
    return ServerObservingInterceptor(lambda call: metrics._observe_server(service_name, call))


def metrics_client_interceptors(registry: CollectorRegistry, caller: str | None = None) -> list[ClientInterceptor]:
    """Client interceptors (one per RPC kind) recording ``grpc_client_*`` in ``registry``.

    ``caller`` (this process's mesh service name, "" if none) and the ``MeshChannel``'s service
    label every series as ``caller``/``callee``, so a dashboard can draw who calls whom.
    """
    metrics = GrpcMetrics.of(registry)
    name = caller or ""
    return client_interceptors(lambda call: metrics._observe_client(call, name))


class ChannelStatsCollector(Collector):
    """``grpcmesh_*`` series read from the client channels whenever Prometheus scrapes."""

    def __init__(self, stats: Callable[[], Iterable[ChannelStats]]) -> None:
        self._stats = stats

    def collect(self) -> Iterable[Metric]:
        totals: dict[str, list[int]] = {}
        for stat in self._stats():
            row = totals.setdefault(stat.service, [0] * len(_CHANNEL_FAMILIES))
            values = (stat.endpoints, stat.ejected, stat.ejections_total, stat.retries_total, stat.watch_errors)
            for i, value in enumerate(values):
                row[i] += value
        families: list[Metric] = []
        for i, (kind, name, doc) in enumerate(_CHANNEL_FAMILIES):
            family = kind(name, doc, labels=["service"])
            for service, row in sorted(totals.items()):
                family.add_metric([service], row[i])
            families.append(family)
        return families


_CHANNEL_FAMILIES: tuple[tuple[type[GaugeMetricFamily] | type[CounterMetricFamily], str, str], ...] = (
    (GaugeMetricFamily, "grpcmesh_endpoints", "Endpoints currently usable per service"),
    (GaugeMetricFamily, "grpcmesh_ejected_endpoints", "Endpoints currently ejected"),
    (CounterMetricFamily, "grpcmesh_ejections", "Outlier ejections per service"),
    (CounterMetricFamily, "grpcmesh_client_retries", "Calls retried on another endpoint"),
    (CounterMetricFamily, "grpcmesh_registry_watch_errors", "Errors while watching the registry"),
)


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
