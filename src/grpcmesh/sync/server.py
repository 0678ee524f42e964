"""``SyncMeshServer``: a synchronous ``grpc.server`` (thread pool) registered in the mesh.

grpcmesh's own server and channels are ``grpc.aio``; code written for synchronous grpcio
keeps its ``grpc.server`` and gets, from this helper:

* the standard ``grpc.health.v1`` service, SERVING once started;
* an in-process registration that mirrors that health into the registry and heartbeats,
  run by a :class:`~grpcmesh.agent.RegistrationAgent` on a background thread with its own
  event loop (the agent follows the server's own health over a loopback channel, exactly
  as ``grpcmesh register`` follows a server written in another language);
* a graceful stop (``stop()``, or SIGTERM/SIGINT with :meth:`serve_forever`): health goes
  NOT_SERVING, the instance is deregistered, calls keep being served for
  ``propagation_delay`` while clients move away, then ``server.stop(shutdown_grace)``.

Sync clients dial ``xds:///NAME`` with a bootstrap from ``grpcmesh xds bootstrap``.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import signal
import threading
import time
import uuid
from collections.abc import Coroutine, Mapping
from types import FrameType, TracebackType
from typing import Any, TypeVar

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from grpcmesh.agent import RegistrationAgent
from grpcmesh.errors import ClosedError, ServerError
from grpcmesh.model import DEFAULT_WEIGHT, HealthStatus, ServiceInstance
from grpcmesh.registry import DEFAULT_TTL, Registry, open_registry

T = TypeVar("T")


class SyncMeshServer:
    """Registers a synchronous ``grpc.server`` and stops it gracefully (see the module docstring).

    Give it the server with its servicers added but not started; :meth:`start` binds
    ``host:port`` (0 = a free port), starts it and registers ``name``.
    """

    def __init__(
        self,
        server: grpc.Server,
        name: str,
        registry: str,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        version: str = "",
        metadata: Mapping[str, str] | None = None,
        weight: int = DEFAULT_WEIGHT,
        ttl: float = DEFAULT_TTL,
        propagation_delay: float = 1.0,
        shutdown_grace: float = 10.0,
        credentials: grpc.ServerCredentials | None = None,
    ) -> None:
        self.server = server
        self.name = name
        self.registry_url = registry
        self.host = host
        self.port = port
        self.propagation_delay = propagation_delay
        self.shutdown_grace = shutdown_grace
        self._credentials = credentials
        self._fields: dict[str, Any] = {"version": version, "metadata": dict(metadata or {}), "weight": weight}
        self._ttl = ttl
        self.health = health.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self.health, server)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._registry: Registry | None = None
        self.agent: RegistrationAgent | None = None
        self._stopped = threading.Event()
        self._stop_lock = threading.Lock()

    @property
    def instance(self) -> ServiceInstance | None:
        """The registered instance as last written (health included)."""
        return None if self.agent is None else self.agent.instance

    def start(self) -> int:
        """Bind, serve, register; returns the bound port."""
        if self._stopped.is_set():
            raise ClosedError(f"{self.name}: this SyncMeshServer was stopped; make a new one")
        address = f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"
        if self._credentials is None:
            bound = self.server.add_insecure_port(address)
        else:
            bound = self.server.add_secure_port(address, self._credentials)
        if bound == 0:
            raise ServerError(f"{self.name}: cannot bind {address}")
        self.port = bound
        self.server.start()
        self.health.set("", health_pb2.HealthCheckResponse.SERVING)
        loop = asyncio.new_event_loop()
        self._loop = loop
        self._thread = threading.Thread(target=loop.run_forever, name=f"grpcmesh-sync-{self.name}", daemon=True)
        self._thread.start()
        instance = ServiceInstance(
            name=self.name, id=f"{self.name}-{uuid.uuid4().hex[:12]}", address=self.host, port=bound, **self._fields
        )
        try:
            self._run(self._register(instance))
        except BaseException:
            self._stopped.set()  # never registered: stop everything started above, then report
            self.server.stop(None).wait()
            self._stop_loop()
            raise
        return bound

    def _stop_loop(self) -> None:
        if self._loop is not None and self._thread is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
            self._loop.close()
            self._loop = None

    async def _register(self, instance: ServiceInstance) -> None:
        self._registry = open_registry(self.registry_url)
        self.agent = RegistrationAgent(self._registry, instance, ttl=self._ttl, check_interval=0.5)
        await self.agent.start()
        await self.agent.wait_for(HealthStatus.SERVING, timeout=10.0)

    def _run(self, coroutine: Coroutine[Any, Any, T], timeout: float = 30.0) -> T:
        assert self._loop is not None
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(timeout)

    def stop(self) -> None:
        """NOT_SERVING, deregister, keep serving ``propagation_delay``, then stop the server."""
        with self._stop_lock:
            if self._stopped.is_set():
                return
            self._stopped.set()
            self.health.enter_graceful_shutdown()
            try:
                if self.agent is not None:
                    self._run(self._deregister())
                time.sleep(self.propagation_delay)
            finally:
                self.server.stop(self.shutdown_grace).wait()
                self._stop_loop()

    async def _deregister(self) -> None:
        assert self.agent is not None
        try:
            await self.agent.stop()
        finally:
            if self._registry is not None:
                await self._registry.close()

    def serve_forever(self) -> None:
        """Start (if needed) and serve until SIGTERM/SIGINT, then stop gracefully. Main thread only."""
        if self.agent is None:
            self.start()
        wake = threading.Event()

        def on_signal(_signum: int, _frame: FrameType | None) -> None:
            wake.set()

        previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
        try:
            while not wake.wait(0.5) and not self._stopped.is_set():
                pass
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            self.stop()

    def __enter__(self) -> SyncMeshServer:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def thread_pool(workers: int = 16) -> concurrent.futures.ThreadPoolExecutor:
    """The executor a ``grpc.server`` needs (a shorthand for examples)."""
    return concurrent.futures.ThreadPoolExecutor(max_workers=workers)
