"""The registration agent: a registry entry that follows a target's ``grpc.health.v1`` status.

The target knows nothing of grpcmesh; all it needs is the standard health service. The agent

* registers the target at once as NOT_SERVING (nothing calls it before its health says so);
* follows ``Health/Watch`` (falling back to polling ``Health/Check`` every ``check_interval``
  when the target does not implement Watch) and re-registers on every change of status;
* marks it NOT_SERVING when the target stops answering (a failed Watch or Check), and
  reconnects with backoff up to ``check_interval``;
* heartbeats the registration every ``ttl / 3``, so it vanishes ``ttl`` after the agent dies;
* deregisters on :meth:`stop` (the CLI calls it on SIGTERM/SIGINT).

Both loops survive any exception: it is logged once with context, and again on recovery.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import AsyncIterator
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from grpcmesh._tasks import cancel_and_wait
from grpcmesh.model import HealthStatus, ServiceInstance
from grpcmesh.registry import DEFAULT_TTL, Registry

log = logging.getLogger("grpcmesh.agent")

DEFAULT_CHECK_INTERVAL = 1.0
_ID_UNSAFE = re.compile(r"[^A-Za-z0-9._:@-]")


class WatchEndedError(Exception):
    """The target closed a ``Health/Watch`` stream without an error (it is stopping)."""


def agent_instance_id(name: str, address: str, port: int) -> str:
    """A stable id for the target (``NAME@HOST:PORT``): restarting the agent reuses its entry."""
    return _ID_UNSAFE.sub("_", f"{name}@{address}:{port}")[:128]


class RegistrationAgent:
    """Keeps ``instance`` registered with the health its target reports (see the module docstring)."""

    def __init__(
        self,
        registry: Registry,
        instance: ServiceInstance,
        *,
        health_service: str = "",
        ttl: float = DEFAULT_TTL,
        check_interval: float = DEFAULT_CHECK_INTERVAL,
        credentials: grpc.ChannelCredentials | None = None,
    ) -> None:
        self.registry = registry
        self.instance = instance.replace(health=HealthStatus.NOT_SERVING)
        self.health_service = health_service
        self.ttl = ttl
        self.check_interval = check_interval
        self._credentials = credentials
        self._channel: grpc.aio.Channel | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._lock = asyncio.Lock()
        self.changed = asyncio.Condition()
        """Notified after every status change reached the registry (for tests and tools)."""

    @property
    def status(self) -> HealthStatus:
        return self.instance.health

    async def start(self) -> None:
        """Register (NOT_SERVING until the target says otherwise) and start following the target."""
        await self.registry.register(self.instance, ttl=self.ttl)
        options = [("grpc.keepalive_time_ms", 10_000), ("grpc.keepalive_timeout_ms", 5_000)]
        target = self.instance.target
        if self._credentials is None:
            self._channel = grpc.aio.insecure_channel(target, options=options)
        else:
            self._channel = grpc.aio.secure_channel(target, self._credentials, options=options)
        loop = asyncio.get_running_loop()
        self._tasks = [
            loop.create_task(self._follow_health(), name=f"grpcmesh-agent-health-{self.instance.id}"),
            loop.create_task(self._heartbeat(), name=f"grpcmesh-agent-heartbeat-{self.instance.id}"),
        ]
        log.info("registered %s (%s) at %s; following its health", self.instance.name, self.instance.id, target)

    async def stop(self) -> None:
        """Stop following, deregister, close the channel."""
        tasks, self._tasks = self._tasks, []
        await cancel_and_wait(tasks)
        try:
            await self.registry.deregister(self.instance)
            log.info("deregistered %s (%s)", self.instance.name, self.instance.id)
        finally:
            if self._channel is not None:
                await self._channel.close(None)
                self._channel = None

    async def __aenter__(self) -> RegistrationAgent:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def wait_for(self, status: HealthStatus, timeout: float) -> None:
        """Wait until the registered status is ``status``."""
        async with self.changed:
            await asyncio.wait_for(self.changed.wait_for(lambda: self.status is status), timeout)

    async def _set_status(self, status: HealthStatus) -> None:
        async with self._lock:
            if status is self.instance.health:
                return
            self.instance = self.instance.replace(health=status)
            await self.registry.register(self.instance, ttl=self.ttl)
        log.info("%s (%s) is now %s", self.instance.name, self.instance.id, status.value)
        async with self.changed:
            self.changed.notify_all()

    async def _follow_health(self) -> None:
        delay = 0.1
        failing = False
        watch_supported = True
        while True:
            try:
                if watch_supported:
                    async for serving in self._watch():
                        await self._set_status(serving)
                        delay, failing = 0.1, False
                else:
                    await self._set_status(await self._check())
                    delay, failing = self.check_interval, False
            except asyncio.CancelledError:
                raise
            except (grpc.aio.AioRpcError, WatchEndedError) as exc:
                code = exc.code() if isinstance(exc, grpc.aio.AioRpcError) else grpc.StatusCode.UNAVAILABLE
                if code is grpc.StatusCode.UNIMPLEMENTED and watch_supported:
                    log.info("%s does not implement Health/Watch; polling Health/Check", self.instance.target)
                    watch_supported = False
                    continue
                if not failing:
                    log.warning("%s stopped answering health (%s): NOT_SERVING", self.instance.target, code.name)
                failing = True
                await self._mark_not_serving()
            except Exception as exc:  # a registry error or a bug: keep following
                if not failing:
                    log.warning("following the health of %s failed: %r", self.instance.target, exc)
                failing = True
                await self._mark_not_serving()
            await asyncio.sleep(delay)
            delay = min(delay * 2, self.check_interval)

    async def _mark_not_serving(self) -> None:
        try:
            await self._set_status(HealthStatus.NOT_SERVING)
        except Exception as exc:
            log.warning("could not mark %s NOT_SERVING in the registry: %r", self.instance.id, exc)

    def _stub(self) -> Any:
        assert self._channel is not None
        return health_pb2_grpc.HealthStub(self._channel)

    async def _watch(self) -> AsyncIterator[HealthStatus]:
        request = health_pb2.HealthCheckRequest(service=self.health_service)
        call = self._stub().Watch(request)
        try:
            async for response in call:
                yield _status(response.status)
        finally:
            call.cancel()
        raise WatchEndedError(f"{self.instance.target} ended its Health/Watch stream")

    async def _check(self) -> HealthStatus:
        request = health_pb2.HealthCheckRequest(service=self.health_service)
        response = await self._stub().Check(request, timeout=max(self.check_interval, 1.0))
        return _status(response.status)

    async def _heartbeat(self) -> None:
        failing = False
        while True:
            await asyncio.sleep(max(self.ttl / 3, 0.1))
            try:
                async with self._lock:
                    await self.registry.register(self.instance, ttl=self.ttl)
                if failing:
                    log.warning("heartbeat of %s recovered", self.instance.id)
                failing = False
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if not failing:
                    log.warning("heartbeat of %s failed, retrying: %r", self.instance.id, exc)
                failing = True


def _status(wire: int) -> HealthStatus:
    return HealthStatus.SERVING if wire == health_pb2.HealthCheckResponse.SERVING else HealthStatus.NOT_SERVING
