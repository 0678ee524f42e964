"""Server interceptors for synchronous ``grpc.server``: service-key auth, Prometheus metrics, logging.

The same concerns, header names and metric names as the ``grpc.aio`` middleware, so a sync
service and an aio service look alike to their callers, to Prometheus and in the logs:

* :class:`SyncAuthInterceptor`: the aio servers' checks (:class:`~grpcmesh.middleware.auth.ServerAuth`):
  a signed ``x-mesh-auth`` or ``x-service-key`` (or the original design's ``service-auth-key``),
  compared in constant time; with a caller policy, the signed caller (or the mTLS peer) must be
  allowed the method;
* :class:`SyncMetricsInterceptor`: ``grpc_server_*`` and ``grpc_service_*`` series;
* :class:`SyncLoggingInterceptor`: one line per call (method, code, duration, peer).

Each wraps unary and streaming handlers; health and reflection are exempt from auth.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, TypeAlias, cast

import grpc

from grpcmesh.middleware.auth import DEFAULT_EXEMPT, AuthRefused, ServerAuth

log = logging.getLogger("grpcmesh.sync")

Handler: TypeAlias = "grpc.RpcMethodHandler[Any, Any]"
Behavior = Callable[[Any, grpc.ServicerContext], Any]
Around = Callable[[Behavior, str, bool], Behavior]
"""Wraps one handler behaviour; gets the behaviour, the full method and whether it streams responses."""


def _rewrap(handler: Handler, method: str, around: Around) -> Handler:
    """``handler`` with ``around`` applied to whichever behaviour it has."""
    kinds = (
        ("unary_unary", grpc.unary_unary_rpc_method_handler, False),
        ("unary_stream", grpc.unary_stream_rpc_method_handler, True),
        ("stream_unary", grpc.stream_unary_rpc_method_handler, False),
        ("stream_stream", grpc.stream_stream_rpc_method_handler, True),
    )
    for attribute, factory, streams in kinds:
        behavior = getattr(handler, attribute)
        if behavior is not None:
            wrapped = factory(
                around(behavior, method, streams),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
            return wrapped
    return handler


def _metadata(context: grpc.ServicerContext, key: str) -> str | None:
    for name, value in context.invocation_metadata():
        if name == key:
            return value if isinstance(value, str) else None
    return None


def _split(method: str) -> tuple[str, str]:
    service, _, name = method.lstrip("/").partition("/")
    return service, name


class SyncAuthInterceptor(grpc.ServerInterceptor):  # type: ignore[type-arg]
    """Refuses calls without the shared service key (and, with ``policy``, callers not allowed the method).

    The checks are :class:`~grpcmesh.middleware.auth.ServerAuth`'s, so a sync server accepts exactly
    what an aio mesh server accepts (the signed ``x-mesh-auth``, the key, the older caller headers).
    """

    def __init__(
        self,
        service_key: str | None,
        policy: Mapping[str, Sequence[str]] | None = None,
        exempt: Sequence[str] = DEFAULT_EXEMPT,
    ) -> None:
        self._auth = ServerAuth(service_key, policy, exempt)

    def intercept_service(
        self, continuation: Callable[[grpc.HandlerCallDetails], Handler | None], details: Any
    ) -> Handler | None:
        handler = continuation(details)
        method: str = details.method
        if handler is None or self._auth.is_exempt(method):
            return handler
        return _rewrap(handler, method, self._guard)

    def _guard(self, behavior: Behavior, method: str, _streams: bool) -> Behavior:
        def guarded(request: Any, context: grpc.ServicerContext) -> Any:
            refusal = self._refusal(method, context)
            if refusal is not None:
                log.warning("rpc refused: %s %s (%s)", method, refusal[0].name, refusal[1])
                context.abort(*refusal)
            return behavior(request, context)

        return guarded

    def _refusal(self, method: str, context: grpc.ServicerContext) -> tuple[grpc.StatusCode, str] | None:
        try:
            self._auth.check(method, lambda key: _metadata(context, key), context)
        except AuthRefused as refused:
            return refused.code, refused.details
        return None


def _observed(behavior: Behavior, streams: bool, done: Callable[[grpc.StatusCode, float], None]) -> Behavior:
    """``behavior`` calling ``done(code, seconds)`` once the call ended (after the last streamed reply)."""

    def code_of(context: grpc.ServicerContext, failed: bool) -> grpc.StatusCode:
        code = cast(Any, context).code()  # public since grpcio 1.38, missing from the type stubs
        if isinstance(code, grpc.StatusCode):
            return code
        return grpc.StatusCode.UNKNOWN if failed else grpc.StatusCode.OK

    if streams:

        def streaming(request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
            started, failed = time.perf_counter(), True
            try:
                yield from behavior(request, context)
                failed = False
            finally:
                done(code_of(context, failed), time.perf_counter() - started)

        return streaming

    def unary(request: Any, context: grpc.ServicerContext) -> Any:
        started, failed = time.perf_counter(), True
        try:
            reply = behavior(request, context)
            failed = False
            return reply
        finally:
            done(code_of(context, failed), time.perf_counter() - started)

    return unary


class SyncMetricsInterceptor(grpc.ServerInterceptor):  # type: ignore[type-arg]
    """Records the same Prometheus series as the aio metrics interceptor into ``registry``."""

    def __init__(self, registry: Any, service_name: str | None = None) -> None:
        from grpcmesh.middleware.metrics import GrpcMetrics

        self._metrics = GrpcMetrics.of(registry)
        self._service_name = service_name
        self._lock = threading.Lock()
        """The series are plain numbers updated without locks on the event loop; here calls run in threads."""

    def intercept_service(
        self, continuation: Callable[[grpc.HandlerCallDetails], Handler | None], details: Any
    ) -> Handler | None:
        handler = continuation(details)
        if handler is None:
            return None
        return _rewrap(handler, details.method, self._observe)

    def _observe(self, behavior: Behavior, method: str, streams: bool) -> Behavior:
        service, name = _split(method)
        handler_kind = "server_stream" if streams else "unary"
        labels = (service, name, handler_kind)
        metrics, lock = self._metrics, self._lock
        seed_service = self._service_name or service
        started = metrics.server_started.child(*labels)
        handling = metrics.server_handling.child(*labels)
        latency = metrics.service_latency.child(seed_service, method)

        def done(code: grpc.StatusCode, seconds: float) -> None:
            with lock:
                metrics.server_handled.child(*labels, code.name).inc()
                metrics.service_requests.child(seed_service, method, code.name).inc()
                handling.observe(seconds)
                latency.observe(seconds)

        def counted(request: Any, context: grpc.ServicerContext) -> Any:
            with lock:
                started.inc()
            return observed(request, context)

        observed = _observed(behavior, streams, done)
        return counted


class SyncLoggingInterceptor(grpc.ServerInterceptor):  # type: ignore[type-arg]
    """Logs one line per call on ``grpcmesh.rpc``: method, status code, duration in ms, peer."""

    def __init__(self, logger: logging.Logger | None = None) -> None:
        self._log = logger or logging.getLogger("grpcmesh.rpc")

    def intercept_service(
        self, continuation: Callable[[grpc.HandlerCallDetails], Handler | None], details: Any
    ) -> Handler | None:
        handler = continuation(details)
        if handler is None:
            return None
        return _rewrap(handler, details.method, self._logged)

    def _logged(self, behavior: Behavior, method: str, streams: bool) -> Behavior:
        def logged(request: Any, context: grpc.ServicerContext) -> Any:
            def done(code: grpc.StatusCode, seconds: float) -> None:
                level = logging.INFO if code is grpc.StatusCode.OK else logging.WARNING
                self._log.log(level, "rpc %s %s %.1fms peer=%s", method, code.name, seconds * 1000, context.peer())

            return _observed(behavior, streams, done)(request, context)

        return logged
