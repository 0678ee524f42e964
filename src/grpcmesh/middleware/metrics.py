"""Prometheus metrics for gRPC calls (server and client side) and for the mesh itself.

Exposes the original Go design's two series (``grpc_service_requests_total``, ``grpc_service_latency_seconds``)
beside the de-facto standard names of go-grpc-prometheus (``grpc_server_handled_total`` and
friends), so existing Grafana dashboards work unchanged. Every family lives in a
``CollectorRegistry`` you pass in; the global default registry is used only if you pass it.
"""

from __future__ import annotations

import functools
import weakref
from collections.abc import Callable, Iterable

import grpc
from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from grpcmesh._rpc import MAX_CACHED_METHODS, RpcType
from grpcmesh.client.channel import ChannelStats
from grpcmesh.middleware.call_series import CounterSeries, CounterValue, HistogramSeries, SeriesCollector
from grpcmesh.middleware.client_side import ClientCall, ClientFinish, ClientInterceptor, client_interceptors
from grpcmesh.middleware.metrics_http import MetricsServer
from grpcmesh.middleware.server_side import (
    ServerCall,
    ServerConcern,
    ServerFinish,
    ServerObservingInterceptor,
    ServerPipeline,
)

SEED_LATENCY_BUCKETS = (0.01, 0.05, 0.1, 0.5, 1.0, 2.5, 5.0)
"""The original Go design's ``grpc_service_latency_seconds`` buckets."""

HANDLING_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
"""Prometheus' default buckets, as go-grpc-prometheus uses for ``grpc_*_handling_seconds``."""

__all__ = [
    "ChannelStatsCollector",
    "GrpcMetrics",
    "MetricsServer",
    "metrics_client_interceptors",
    "metrics_server_interceptor",
]

_STANDARD_LABELS = ("grpc_service", "grpc_method", "grpc_type")
_CLIENT_LABELS = (*_STANDARD_LABELS, "caller", "callee")
"""Client series also name the calling mesh service and the one called ("" when not known), so
the observed service graph can be drawn from them."""
_OK = grpc.StatusCode.OK
_UNKNOWN = grpc.StatusCode.UNKNOWN


class GrpcMetrics:
    """The gRPC metric families of one registry; get it with :meth:`of` so each registers once.

    The series are plain numbers updated on the event loop (:mod:`.call_series`); the
    registry turns them into the usual families whenever it is scraped.
    """

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
        self.service_requests = CounterSeries(
            "grpc_service_requests_total",
            "Total number of gRPC requests by service, method and status (server side)",
            ["service", "method", "status"],
        )
        self.service_latency = HistogramSeries(
            "grpc_service_latency_seconds",
            "Service method latency in seconds (server side)",
            ["service", "method"],
            SEED_LATENCY_BUCKETS,
        )
        self.server_started = CounterSeries("grpc_server_started_total", "RPCs started on the server", _STANDARD_LABELS)
        self.server_handled = CounterSeries(
            "grpc_server_handled_total",
            "RPCs completed on the server, regardless of success or failure",
            [*_STANDARD_LABELS, "grpc_code"],
        )
        self.server_handling = HistogramSeries(
            "grpc_server_handling_seconds", "Time the server took to handle an RPC", _STANDARD_LABELS, HANDLING_BUCKETS
        )
        self.client_started = CounterSeries("grpc_client_started_total", "RPCs started by the client", _CLIENT_LABELS)
        self.client_handled = CounterSeries(
            "grpc_client_handled_total",
            "RPCs completed by the client, regardless of success or failure",
            [*_CLIENT_LABELS, "grpc_code"],
        )
        self.client_handling = HistogramSeries(
            "grpc_client_handling_seconds",
            "Time from the client starting an RPC until it got the final status",
            _CLIENT_LABELS,
            HANDLING_BUCKETS,
        )
        registry.register(
            SeriesCollector(
                [
                    self.service_requests,
                    self.service_latency,
                    self.server_started,
                    self.server_handled,
                    self.server_handling,
                    self.client_started,
                    self.client_handled,
                    self.client_handling,
                ]
            )
        )

    def _server_children(self, service_name: str | None, call: ServerCall) -> _ServerChildren:
        key = (service_name, call.full_method, call.rpc_type)
        found = self._server_cache.get(key)
        if found is None:
            found = _ServerChildren(self, service_name or call.service, call)
            if len(self._server_cache) < MAX_CACHED_METHODS:
                self._server_cache[key] = found
        return found

    def observe_server(self, service_name: str | None, call: ServerCall) -> ServerFinish:
        children = self._server_children(service_name, call)
        children.started.inc()

        def finish(done: ServerCall) -> None:
            duration = done.duration
            handled, requests = children.by_code(done.code or grpc.StatusCode.UNKNOWN)
            handled.inc()
            children.handling.observe(duration)
            requests.inc()
            children.latency.observe(duration)

        return finish

    def server_concern(self, service_name: str | None = None) -> ServerConcern:
        """The server pipeline's metrics concern; ``service_name`` fills the ``service`` label."""
        return ServerConcern("metrics", observe=functools.partial(self.observe_server, service_name))

    def _client_children(self, call: ClientCall) -> _ClientChildren:
        key = (call.full_method, call.rpc_type, call.caller, call.callee)
        found = self._client_cache.get(key)
        if found is None:
            found = _ClientChildren(self, call)
            if len(self._client_cache) < MAX_CACHED_METHODS:
                self._client_cache[key] = found
        return found

    def observe_client(self, call: ClientCall) -> ClientFinish:
        children = self._client_children(call)
        children.started.inc()

        def finish(done: ClientCall) -> None:
            code = done.code
            (children.ok if code is _OK and children.ok is not None else children.handled(code or _UNKNOWN)).inc()
            children.handling.observe(done.duration)

        return finish


class _ServerChildren:
    """The series of one (mesh service, method, RPC type), looked up once per method, not per call."""

    __slots__ = ("_by_code", "_labels", "_metrics", "_ok", "_seed", "handling", "latency", "started")

    def __init__(self, metrics: GrpcMetrics, seed_service: str, call: ServerCall) -> None:
        self._metrics = metrics
        self._labels = (call.service, call.method, call.rpc_type.value)
        self._seed = (seed_service, call.full_method)
        self.started = metrics.server_started.child(*self._labels)
        self.handling = metrics.server_handling.child(*self._labels)
        self.latency = metrics.service_latency.child(*self._seed)
        self._by_code: dict[grpc.StatusCode, tuple[CounterValue, CounterValue]] = {}
        self._ok: tuple[CounterValue, CounterValue] | None = None

    def by_code(self, code: grpc.StatusCode) -> tuple[CounterValue, CounterValue]:
        """(``grpc_server_handled_total``, ``grpc_service_requests_total``) series for ``code``."""
        if code is _OK and self._ok is not None:  # a StatusCode's hash is Python code: OK skips it
            return self._ok
        found = self._by_code.get(code)
        if found is None:
            found = self._by_code[code] = (
                self._metrics.server_handled.child(*self._labels, code.name),
                self._metrics.service_requests.child(*self._seed, code.name),
            )
            if code is _OK:
                self._ok = found
        return found


class _ClientChildren:
    """The client-side counterpart of :class:`_ServerChildren`."""

    __slots__ = ("_by_code", "_labels", "_metrics", "handling", "ok", "started")

    def __init__(self, metrics: GrpcMetrics, call: ClientCall) -> None:
        self._metrics = metrics
        self._labels = (call.service, call.method, call.rpc_type.value, call.caller, call.callee)
        self.started = metrics.client_started.child(*self._labels)
        self.handling = metrics.client_handling.child(*self._labels)
        self._by_code: dict[grpc.StatusCode, CounterValue] = {}
        self.ok: CounterValue | None = None
        """The OK series, once made (the finish hook takes it without a call)."""

    def handled(self, code: grpc.StatusCode) -> CounterValue:
        """The ``grpc_client_handled_total`` series for ``code`` (the finish hook takes ``ok`` itself once made)."""
        found = self._by_code.get(code)
        if found is None:
            found = self._by_code[code] = self._metrics.client_handled.child(*self._labels, code.name)
            if code is _OK:
                self.ok = found
        return found


def metrics_server_interceptor(
    registry: CollectorRegistry, service_name: str | None = None
) -> ServerObservingInterceptor:
    """A server interceptor recording every call in ``registry``.

    ``service_name`` (the mesh name, e.g. ``user-service``) fills the original Go design's
    ``service`` label; without it the gRPC service name is used. Methods the server does not
    implement are not recorded, so unknown method names cannot blow up label cardinality.
    """
    return ServerObservingInterceptor(ServerPipeline([GrpcMetrics.of(registry).server_concern(service_name)]))


def metrics_client_interceptors(registry: CollectorRegistry) -> list[ClientInterceptor]:
    """Client interceptors (one per RPC kind) recording ``grpc_client_*`` in ``registry``.

    On a plain channel the ``caller`` and ``callee`` labels are empty; a mesh channel fills them.
    """
    return client_interceptors(GrpcMetrics.of(registry).observe_client)


class ChannelStatsCollector(Collector):
    """``grpcmesh_*`` series read from the client channels whenever Prometheus scrapes."""

    def __init__(self, stats: Callable[[], Iterable[ChannelStats]]) -> None:
        self._stats = stats

    def collect(self) -> Iterable[Metric]:
        totals: dict[str, list[int]] = {}
        for stat in self._stats():
            row = totals.setdefault(stat.service, [0] * len(_CHANNEL_FAMILIES))
            values = (
                stat.endpoints,
                stat.ejected,
                stat.ejections_total,
                stat.retries_total,
                stat.watch_errors,
                stat.throttled,
                stat.retries_denied,
            )
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
    (CounterMetricFamily, "grpcmesh_client_throttled", "Calls rejected locally by adaptive throttling"),
    (CounterMetricFamily, "grpcmesh_client_retries_denied", "Retries refused by the retry budget"),
)
