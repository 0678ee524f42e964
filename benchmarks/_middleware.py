"""The observation stacks the overhead benchmark compares: grpcmesh's, concern by concern, and a peer's.

grpcmesh's stacks are built from a ``MeshConfig`` exactly as ``Mesh`` builds them (auth +
metrics + tracing + logging, or one concern alone): the server half runs as the per-method
wrapper of a ``MeshServer``, the client half as the ``MeshChannel``'s call observation.
Spans go through a ``BatchSpanProcessor`` to an exporter that receives every batch and drops
it (there is no collector on this machine); access-log lines are rendered as JSON and
written to ``/dev/null``, so their formatting is paid but no terminal is involved.

The *peer* stack is what a Python user would assemble without grpcmesh, from PyPI, on a bare
channel and a bare ``grpc.aio`` server: ``opentelemetry-instrumentation-grpc``'s aio
interceptors (same sampler), ``py-async-grpc-prometheus``'s aio interceptors (the asyncio
port of py-grpc-prometheus, with the handling-time histograms on), and a structlog
access-log interceptor plus a shared-key auth interceptor written the ordinary way.
"""

from __future__ import annotations

import hmac
import os
import time
from collections.abc import Sequence
from typing import Any

import grpc

AUTH_KEY = "benchmark-service-key-0123456789abcdef"
STACKS = ("full", "tracing", "logging", "metrics", "auth")


def available() -> bool:
    import importlib.util

    return importlib.util.find_spec("opentelemetry.sdk.trace") is not None


def peer_available() -> bool:
    import importlib.util

    return all(
        importlib.util.find_spec(name) is not None
        for name in ("opentelemetry.instrumentation.grpc", "py_async_grpc_prometheus")
    )


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


def mesh_config(name: str, stack: str, sample_rate: float, access_log: str = "sampled") -> Any:
    """The config a service would write to switch on ``stack`` (all four concerns, or one)."""
    from grpcmesh.config import parse_config

    on = set(STACKS[1:]) if stack == "full" else {stack}
    doc = {
        "service": {"name": name},
        "security": {"service_auth_key": AUTH_KEY} if "auth" in on else {},
        "metrics": {"enabled": "metrics" in on, "prometheus_port": 0},
        "tracing": {"enabled": "tracing" in on, "sample_rate": sample_rate},
        "logging": {"enabled": "logging" in on, "format": "json", "access_log": access_log},
    }
    import json

    return parse_config(json.dumps(doc))


def mesh_middleware(name: str, stack: str, sample_rate: float, access_log: str = "sampled") -> Any:
    """A ``MeshMiddleware`` for ``stack``, its spans going to the dropping exporter."""
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    from grpcmesh.mesh_middleware import MeshMiddleware

    _logging()
    middleware = MeshMiddleware(mesh_config(name, stack, sample_rate, access_log))
    if middleware.tracer_provider is not None:
        middleware.tracer_provider.add_span_processor(BatchSpanProcessor(_exporter()))
    return middleware


def client_observer(stack: str, sample_rate: float, access_log: str = "sampled") -> Any:
    """The client half: what ``MeshChannel(observer=...)`` runs once per call."""
    return mesh_middleware("bench-client", stack, sample_rate, access_log).client_observation


def _peer_provider(service: str, sample_rate: float) -> Any:
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor
    from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased

    provider = TracerProvider(
        resource=Resource.create({"service.name": service}), sampler=ParentBased(TraceIdRatioBased(sample_rate))
    )
    provider.add_span_processor(BatchSpanProcessor(_exporter()))
    return provider


class _PeerAuthClient(grpc.aio.UnaryUnaryClientInterceptor):  # type: ignore[type-arg]
    async def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        metadata = [*(details.metadata or ()), ("x-service-key", AUTH_KEY)]
        details = grpc.aio.ClientCallDetails(
            details.method, details.timeout, metadata, details.credentials, details.wait_for_ready
        )
        return await continuation(details, request)


class _PeerAccessLogClient(grpc.aio.UnaryUnaryClientInterceptor):  # type: ignore[type-arg]
    def __init__(self) -> None:
        import structlog

        self._log = structlog.get_logger("rpc")

    async def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        started = time.perf_counter()
        call = await continuation(details, request)
        code = await call.code()
        self._log.info(
            "rpc",
            side="client",
            method=details.method,
            code=code.name,
            duration_ms=round((time.perf_counter() - started) * 1000, 3),
        )
        return call


def peer_client_interceptors(sample_rate: float) -> list[Any]:
    from opentelemetry.instrumentation.grpc import aio_client_interceptors
    from prometheus_client import CollectorRegistry
    from py_async_grpc_prometheus.prometheus_async_client_interceptor import get_client_interceptors

    _logging()
    return [
        *aio_client_interceptors(tracer_provider=_peer_provider("bench-client", sample_rate)),
        _PeerAccessLogClient(),
        *get_client_interceptors(enable_client_handling_time_histogram=True, registry=CollectorRegistry()),
        _PeerAuthClient(),
    ]


class _PeerAccessLogServer(grpc.aio.ServerInterceptor):  # type: ignore[type-arg]
    """A structlog access log as a user writes it: wrap the unary behaviour, log every call."""

    def __init__(self) -> None:
        import structlog

        self._log = structlog.get_logger("rpc")

    async def intercept_service(self, continuation: Any, details: Any) -> Any:
        handler = await continuation(details)
        if handler is None or handler.unary_unary is None:
            return handler
        behavior, log, method = handler.unary_unary, self._log, details.method

        async def logged(request: Any, context: Any) -> Any:
            started = time.perf_counter()
            code = "OK"
            try:
                return await behavior(request, context)
            except Exception:
                code = "UNKNOWN"
                raise
            finally:
                log.info(
                    "rpc",
                    side="server",
                    method=method,
                    code=code,
                    duration_ms=round((time.perf_counter() - started) * 1000, 3),
                )

        return grpc.unary_unary_rpc_method_handler(logged, handler.request_deserializer, handler.response_serializer)


class _PeerAuthServer(grpc.aio.ServerInterceptor):  # type: ignore[type-arg]
    async def intercept_service(self, continuation: Any, details: Any) -> Any:
        given = dict(details.invocation_metadata or ()).get("x-service-key", "")
        if hmac.compare_digest(str(given).encode(), AUTH_KEY.encode()):
            return await continuation(details)

        async def refuse(request: Any, context: Any) -> None:
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, "invalid service key")

        return grpc.unary_unary_rpc_method_handler(refuse)


def peer_server_interceptors(service: str, sample_rate: float) -> list[Any]:
    from opentelemetry.instrumentation.grpc import aio_server_interceptor
    from prometheus_client import CollectorRegistry
    from py_async_grpc_prometheus.prometheus_async_server_interceptor import PromAsyncServerInterceptor

    _logging()
    return [
        aio_server_interceptor(tracer_provider=_peer_provider(service, sample_rate)),
        _PeerAccessLogServer(),
        PromAsyncServerInterceptor(enable_handling_time_histogram=True, registry=CollectorRegistry()),
        _PeerAuthServer(),
    ]
