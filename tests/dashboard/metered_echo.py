"""A test Echo server that exposes real Prometheus metrics, registered with ``metrics_url``.

The metric names and labels are those of the mesh's metrics middleware
(``grpc_server_handled_total{grpc_service,grpc_method,grpc_type,grpc_code}`` and the
``grpc_server_handling_seconds`` histogram); a tiny test-only interceptor feeds them, so the
dashboard is tested against a real exposition without depending on that middleware.

Run as a child process (so a test can SIGKILL it):
    python -m tests.dashboard.metered_echo REGISTRY_URL SERVICE INSTANCE_ID TTL [DEPENDENCY,...]
It prints ``ready PORT METRICS_URL`` once registered, then serves until SIGTERM.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import grpc
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest

from grpcmesh import Registry, ServiceInstance, open_registry
from grpcmesh.protos import echo_pb2_grpc
from grpcmesh.testing import EchoServicer


class MeteringInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[type-arg]
    """Counts unary calls by status code and times them (other RPC kinds pass through unmetered)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.handled = Counter(
            "grpc_server_handled_total",
            "RPCs completed on the server, by status code.",
            ["grpc_service", "grpc_method", "grpc_type", "grpc_code"],
            registry=registry,
        )
        self.seconds = Histogram(
            "grpc_server_handling_seconds",
            "Time to handle an RPC on the server.",
            ["grpc_service", "grpc_method", "grpc_type"],
            registry=registry,
        )

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Any]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Any:
        handler = await continuation(handler_call_details)
        if handler is None or handler.unary_unary is None:
            return handler
        service, method = handler_call_details.method.lstrip("/").rsplit("/", 1)
        inner = handler.unary_unary

        async def metered(request: Any, context: grpc.aio.ServicerContext) -> Any:  # type: ignore[type-arg]
            started = time.perf_counter()
            try:
                return await inner(request, context)
            finally:
                code = context.code()
                name = code.name if isinstance(code, grpc.StatusCode) else "OK"
                self.handled.labels(service, method, "unary", name).inc()
                self.seconds.labels(service, method, "unary").observe(time.perf_counter() - started)

        return grpc.unary_unary_rpc_method_handler(
            metered,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )


@dataclass
class MeteredEcho:
    server: grpc.aio.Server
    port: int
    metrics_runner: web.AppRunner
    metrics_url: str

    async def stop(self) -> None:
        await self.server.stop(None)
        await self.metrics_runner.cleanup()


async def start_metered_echo(instance_id: str) -> MeteredEcho:
    """An Echo server on 127.0.0.1 plus its ``/metrics`` endpoint (aiohttp) on 127.0.0.1."""
    registry = CollectorRegistry()
    server = grpc.aio.server(interceptors=[MeteringInterceptor(registry)])
    echo_pb2_grpc.add_EchoServicer_to_server(EchoServicer(instance_id), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()

    async def metrics(request: web.Request) -> web.Response:
        return web.Response(body=generate_latest(registry), headers={"Content-Type": CONTENT_TYPE_LATEST})

    app = web.Application()
    app.router.add_get("/metrics", metrics)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    metrics_port = runner.addresses[0][1]
    return MeteredEcho(server, port, runner, f"http://127.0.0.1:{metrics_port}/metrics")


def instance_for(
    service: str, instance_id: str, port: int, metrics_url: str | None, dependencies: tuple[str, ...] = (), **extra: Any
) -> ServiceInstance:
    metadata = {"metrics_url": metrics_url} if metrics_url else {}
    return ServiceInstance(
        name=service,
        id=instance_id,
        address="127.0.0.1",
        port=port,
        endpoints=("Unary", "ServerStream", "ClientStream", "BidiStream"),
        dependencies=dependencies,
        metadata=metadata,
        **extra,
    )


async def _child(url: str, service: str, instance_id: str, ttl: float, dependencies: tuple[str, ...]) -> None:
    echo = await start_metered_echo(instance_id)
    registry: Registry = open_registry(url)
    await registry.register(
        instance_for(service, instance_id, echo.port, echo.metrics_url, dependencies, version="v2"), ttl=ttl
    )
    print(f"ready {echo.port} {echo.metrics_url}", flush=True)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    try:
        await stop.wait()
    finally:
        await registry.close()
        await echo.stop()


if __name__ == "__main__":
    deps = tuple(d for d in sys.argv[5].split(",") if d) if len(sys.argv) > 5 else ()
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_child(sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4]), deps))
