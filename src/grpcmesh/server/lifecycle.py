"""``MeshServer``: one service's grpc.aio server from start to graceful stop.

Start: bind (port 0 = any free port), add ``grpc.health.v1`` and reflection for every added
service, start serving, learn whether required dependencies are available, register the
instance (with the bound port, its endpoints and its health), heartbeat it via the registry.

Stop (``stop()``, SIGTERM or SIGINT), ordered so no call that has started fails:

1. health goes NOT_SERVING (health watchers are told) and the registration says so;
2. the instance is deregistered, so discovery drops it;
3. wait ``propagation_delay`` while still serving, for clients to stop picking us;
4. end health ``Watch`` streams, then ``grpc.aio.Server.stop(shutdown_grace)``: no new
   calls, in-flight calls may finish.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import signal
from collections.abc import Awaitable, Callable, Mapping, Sequence
from types import TracebackType
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from grpcmesh.context import Propagation
from grpcmesh.errors import MeshError, RegistryError, ServerError
from grpcmesh.middleware.recovery import Recovery, RecoveryInterceptor
from grpcmesh.middleware.server_side import ServerConcern, ServerPipeline
from grpcmesh.model import HealthStatus, ServiceInstance
from grpcmesh.registry import Registry
from grpcmesh.server.admission import AdmittingPipeline
from grpcmesh.server.call_context import call_context_concerns
from grpcmesh.server.catalog import MeshGrpcServer
from grpcmesh.server.health import DrainingHealthServicer
from grpcmesh.server.readiness import DependencyReadiness
from grpcmesh.server.settings import ServerSettings
from grpcmesh.server.shedding import LoadShedder, SheddingPolicy
from grpcmesh.server.tls import load_server_credentials

log = logging.getLogger("grpcmesh.server")

HEALTH_SERVICE = "grpc.health.v1.Health"
KEEPALIVE_PERMIT = (
    ("grpc.http2.min_ping_interval_without_data_ms", 1000),
    ("grpc.keepalive_permit_without_calls", 0),
)
"""Server side of the mesh's HTTP/2 keepalive: accept client pings down to once a second."""
_WIRE_STATUS = {
    HealthStatus.SERVING: health_pb2.HealthCheckResponse.SERVING,
    HealthStatus.NOT_SERVING: health_pb2.HealthCheckResponse.NOT_SERVING,
}


class _State(enum.Enum):
    NEW = "new"
    RUNNING = "running"
    STOPPING = "stopping"
    STOPPED = "stopped"


class MeshServer:
    """A ``grpc.aio`` server that registers itself, reports health and shuts down gracefully.

    Add servicers to :attr:`grpc` as with plain grpc, then ``await serve()`` (or ``start()``
    / ``stop()``, or ``async with``).

    ``concerns`` are the mesh's own server concerns (tracing, access log, metrics, auth, in
    that order, from the ``Mesh``): they run in ONE wrapper per method, built when the method
    is added, innermost around the handler, with recovery (unless ``recovery=False``) turning
    unexpected exceptions into INTERNAL. ``interceptors`` (the user's grpc.aio server
    interceptors) run in the order given, outside that wrapper, behind a recovery interceptor
    that also guards them. First in that wrapper, every call has its deadline and
    ``propagation`` metadata bound to :mod:`grpcmesh.context` (for the calls its handler makes)
    and passes admission (``shedding``, off unless enabled).
    """

    def __init__(
        self,
        registry: Registry,
        settings: ServerSettings,
        *,
        interceptors: Sequence[grpc.aio.ServerInterceptor[Any, Any]] = (),
        recovery: bool = True,
        credentials: grpc.ServerCredentials | None = None,
        options: Sequence[tuple[str, Any]] = (),
        maximum_concurrent_rpcs: int | None = None,
        metadata_hooks: Sequence[Callable[[], Awaitable[Mapping[str, str]]]] = (),
        concerns: Sequence[ServerConcern] = (),
        propagation: Propagation | None = None,
        shedding: SheddingPolicy | None = None,
    ) -> None:
        self.registry = registry
        self._metadata_hooks = tuple(metadata_hooks)
        self.settings = settings
        chain: list[grpc.aio.ServerInterceptor[Any, Any]] = list(interceptors)
        if recovery and chain:  # the user's interceptors are guarded too
            chain.insert(0, RecoveryInterceptor())
        self.interceptors: tuple[grpc.aio.ServerInterceptor[Any, Any], ...] = tuple(chain)
        self.shedder = LoadShedder(shedding or SheddingPolicy())
        """Admission control (off unless ``shedding.enabled``); ``shedder.shed`` counts refused calls."""
        own = call_context_concerns(propagation or Propagation())
        self.pipeline: ServerPipeline = AdmittingPipeline(
            self.shedder, (*own, *concerns), recover=Recovery() if recovery else None
        )
        """The mesh's per-method wrapper: every handler added to :attr:`grpc` runs inside it."""
        # grpc enables SO_REUSEPORT by default, letting a second server silently share a busy
        # port; a registered service must own its port, so it is off unless asked for. Mesh
        # channels ping every few seconds while calls run (keepalive): allow it.
        server = grpc.aio.server(
            interceptors=chain or None,
            options=(("grpc.so_reuseport", 0), *KEEPALIVE_PERMIT, *options),
            maximum_concurrent_rpcs=maximum_concurrent_rpcs,
        )
        self._recording = MeshGrpcServer(server, self.pipeline)
        self.grpc: grpc.aio.Server = self._recording
        """The ``grpc.aio.Server``: pass it to ``add_XServicer_to_server``."""
        self._credentials = credentials
        self.health = DrainingHealthServicer()
        self._state = _State.NEW
        self._lock = asyncio.Lock()
        self._stopped = asyncio.Event()
        self._port: int | None = None
        self._instance: ServiceInstance | None = None
        self._readiness: DependencyReadiness | None = None
        self._services: list[str] = []
        self._signal_tasks: set[asyncio.Task[None]] = set()

    # -- what a running server looks like ----------------------------------------------

    @property
    def port(self) -> int:
        """The bound port (after ``start()``)."""
        if self._port is None:
            raise ServerError(f"{self.settings.name}: the server is not started; await start() or serve() first")
        return self._port

    @property
    def target(self) -> str:
        """``address:port`` clients dial (after ``start()``)."""
        return self.instance.target

    @property
    def instance(self) -> ServiceInstance:
        """The registered instance (after ``start()``)."""
        if self._instance is None:
            raise ServerError(f"{self.settings.name}: the server is not started; await start() or serve() first")
        return self._instance

    @property
    def services(self) -> list[str]:
        """Full names of the services the user added (health and reflection excluded)."""
        return list(self._services)

    @property
    def ready(self) -> bool:
        """Whether every required dependency is available (True when there are none)."""
        return self._readiness.ready if self._readiness is not None else False

    @property
    def running(self) -> bool:
        return self._state is _State.RUNNING

    # -- lifecycle ---------------------------------------------------------------------

    async def start(self) -> None:
        """Bind, serve, register; returns once the instance is registered."""
        async with self._lock:
            if self._state is not _State.NEW:
                raise ServerError(f"{self.settings.name}: start() may be called once (state: {self._state.value})")
            self._state = _State.RUNNING
            try:
                await self._start()
            except BaseException:
                self._state = _State.STOPPED
                self._stopped.set()
                await self._abandon()
                raise

    async def _start(self) -> None:
        settings = self.settings
        catalog = self._recording.catalog
        self._services = [name for name in catalog.services if name != HEALTH_SERVICE]
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.grpc)
        if settings.reflection:
            reflection.enable_server_reflection([*self._services, HEALTH_SERVICE, reflection.SERVICE_NAME], self.grpc)
        self._port = await self._bind()
        await self.grpc.start()
        self.shedder.start()
        self._readiness = DependencyReadiness(
            self.registry, settings.dependencies, self._on_readiness, service_name=settings.name
        )
        ready = await self._readiness.start(settings.readiness_timeout)
        status = HealthStatus.SERVING if ready else HealthStatus.NOT_SERVING
        await self._set_health(status)
        identity: dict[str, Any] = {"id": settings.instance_id} if settings.instance_id else {}
        metadata = {"grpc.services": ",".join(self._services)}
        for hook in self._metadata_hooks:  # e.g. the metrics endpoint, started on first use
            metadata.update(await hook())
        metadata.update(settings.metadata)
        if settings.tls is not None or self._credentials is not None:
            metadata.setdefault("tls", "true")
        self._instance = ServiceInstance(
            name=settings.name,
            version=settings.version,
            address=settings.registered_address(),
            port=self._port,
            metadata=metadata,
            endpoints=tuple(catalog.endpoints(self._services)),
            dependencies=tuple(dep.name for dep in settings.dependencies),
            weight=settings.weight,
            health=status,
            **identity,
        )
        await self.registry.register(self._instance, ttl=settings.ttl)
        log.info(
            "%s listening on %s, registered as %s (%s), services %s",
            settings.name,
            self._instance.target,
            self._instance.id,
            status.value,
            self._services,
        )

    async def _bind(self) -> int:
        target = self.settings.bind_target
        credentials = self._credentials
        if credentials is None and self.settings.tls is not None:
            credentials = await load_server_credentials(self.settings.tls)
        try:
            if credentials is not None:
                return self.grpc.add_secure_port(target, credentials)
            return self.grpc.add_insecure_port(target)
        except RuntimeError as exc:
            raise ServerError(f"{self.settings.name}: cannot listen on {target}: {exc}") from None

    async def _abandon(self) -> None:
        """Undo a half-finished start."""
        if self._readiness is not None:
            await self._readiness.close()
        if self._instance is not None:
            with contextlib.suppress(MeshError):
                await self.registry.deregister(self._instance)
        with contextlib.suppress(Exception):
            await self.grpc.stop(None)
        await self.shedder.stop()

    async def serve(self) -> None:
        """Start (if needed) and run until stopped by ``stop()``, SIGTERM or SIGINT."""
        if self._state is _State.NEW:
            await self.start()
        installed = self._install_signal_handlers() if self.settings.handle_signals else []
        try:
            await self._stopped.wait()
        finally:
            loop = asyncio.get_running_loop()
            for sig in installed:
                loop.remove_signal_handler(sig)
            if not self._stopped.is_set():  # serve() was cancelled: still leave gracefully
                await self.stop()

    async def stop(self, grace: float | None = None) -> None:
        """Graceful stop (idempotent); ``grace`` overrides ``settings.shutdown_grace``."""
        async with self._lock:
            if self._state is _State.NEW:
                self._state = _State.STOPPED
                self._stopped.set()
                return
            if self._state is not _State.RUNNING:
                stopping = True
            else:
                stopping = False
                self._state = _State.STOPPING
        if stopping:
            await self._stopped.wait()
            return
        try:
            await self._shutdown(self.settings.shutdown_grace if grace is None else grace)
        finally:
            self._state = _State.STOPPED
            self._stopped.set()

    async def _shutdown(self, grace: float) -> None:
        name = self.settings.name
        if self._readiness is not None:
            await self._readiness.close()
        await self.health.enter_graceful_shutdown()
        if self._instance is not None:
            leaving = self._instance.replace(health=HealthStatus.NOT_SERVING)
            try:
                await self.registry.register(leaving, ttl=self.settings.ttl)
                await self.registry.deregister(leaving)
                log.info("%s deregistered %s; draining", name, leaving.id)
            except RegistryError as exc:
                log.warning("%s could not deregister (it expires after its TTL): %s", name, exc)
        if self.settings.propagation_delay > 0:
            await asyncio.sleep(self.settings.propagation_delay)
        self.health.end_watches()  # health watchers have seen NOT_SERVING; don't let them hold the drain
        await self.grpc.stop(grace)
        await self.shedder.stop()
        log.info("%s stopped", name)

    async def wait_stopped(self) -> None:
        """Wait until the server has fully stopped."""
        await self._stopped.wait()

    async def __aenter__(self) -> MeshServer:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    # -- health and readiness ------------------------------------------------------------

    async def _set_health(self, status: HealthStatus) -> None:
        wire = _WIRE_STATUS[status]
        for service in ["", *self._services]:
            await self.health.set(service, wire)

    async def _on_readiness(self, ready: bool) -> None:
        status = HealthStatus.SERVING if ready else HealthStatus.NOT_SERVING
        async with self._lock:
            if self._state is not _State.RUNNING or self._instance is None:
                return
            await self._set_health(status)
            self._instance = self._instance.replace(health=status)
            try:
                await self.registry.register(self._instance, ttl=self.settings.ttl)
            except RegistryError as exc:
                log.warning("%s could not update its registered health: %s", self.settings.name, exc)
            log.info("%s is now %s", self.settings.name, status.value)

    # -- signals -------------------------------------------------------------------------

    def _install_signal_handlers(self) -> list[signal.Signals]:
        loop = asyncio.get_running_loop()
        installed = []
        for sig in (signal.SIGTERM, signal.SIGINT):
            try:
                loop.add_signal_handler(sig, self._on_signal, sig)
            except (NotImplementedError, RuntimeError, ValueError) as exc:  # not the main thread, or no support
                log.debug("cannot handle %s here: %s", sig.name, exc)
                continue
            installed.append(sig)
        return installed

    def _on_signal(self, sig: signal.Signals) -> None:
        if self._state is _State.RUNNING:
            log.info("%s received %s: stopping gracefully", self.settings.name, sig.name)
            task = asyncio.get_running_loop().create_task(self.stop())
        else:
            log.warning("%s received %s again: stopping now", self.settings.name, sig.name)
            task = asyncio.get_running_loop().create_task(self.grpc.stop(0))
        self._signal_tasks.add(task)
        task.add_done_callback(self._signal_tasks.discard)
