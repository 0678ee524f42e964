"""Dependency readiness: a service is ready only while every *required* dependency is available.

"Available" means the registry holds at least one instance of the dependency that is
SERVING and matches the wanted version. Each dependency is watched (the registry pushes
full snapshots), so readiness flips as soon as the registry changes. Optional dependencies
never gate readiness; their comings and goings are only logged.

A cycle of required dependencies (A needs B, B needs A) can never become ready: declare one
side optional. A likely cycle is logged.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from grpcmesh._backoff import Backoff
from grpcmesh._tasks import cancel_and_wait
from grpcmesh.errors import MeshError, RegistryClosedError
from grpcmesh.model import HealthStatus, ServiceInstance, check_service_name
from grpcmesh.registry import Registry

log = logging.getLogger("grpcmesh.server.readiness")

RETRY_DELAY = 1.0


@dataclass(frozen=True)
class Dependency:
    """A service this one calls. ``version`` ``"v1"`` matches ``v1`` and ``v1.x``; empty matches any."""

    name: str
    version: str = ""
    required: bool = True

    def __post_init__(self) -> None:
        check_service_name(self.name, "dependencies.name")


def version_matches(wanted: str, actual: str) -> bool:
    """``wanted`` is empty, equal to ``actual``, or a dotted prefix of it (``v1`` ~ ``v1.2.0``)."""
    return not wanted or actual == wanted or actual.startswith(wanted + ".")


def is_available(dependency: Dependency, snapshot: Sequence[ServiceInstance]) -> bool:
    """Whether ``snapshot`` holds a SERVING instance of the wanted version."""
    return any(
        inst.health is HealthStatus.SERVING and version_matches(dependency.version, inst.version) for inst in snapshot
    )


ReadinessCallback = Callable[[bool], Awaitable[None]]


class DependencyReadiness:
    """Watches dependencies in the registry and reports when overall readiness changes."""

    def __init__(
        self,
        registry: Registry,
        dependencies: Sequence[Dependency],
        on_change: ReadinessCallback,
        *,
        service_name: str = "",
        retry_delay: float = RETRY_DELAY,
    ) -> None:
        self._registry = registry
        self._dependencies = list(dependencies)
        self._on_change = on_change
        self._service_name = service_name
        self._retry_delay = retry_delay
        self._available: dict[str, bool] = {}
        self._first_seen = {dep.name: asyncio.Event() for dep in self._dependencies}
        self._tasks: list[asyncio.Task[None]] = []
        self._ready = self._compute()
        self._warned_cycle: set[str] = set()

    @property
    def ready(self) -> bool:
        return self._ready

    @property
    def missing(self) -> list[str]:
        """Required dependencies with no available instance."""
        return [dep.name for dep in self._dependencies if dep.required and not self._available.get(dep.name, False)]

    async def start(self, first_snapshot_timeout: float) -> bool:
        """Start watching; wait (bounded) for each dependency's current state; return readiness."""
        for dep in self._dependencies:
            self._tasks.append(asyncio.create_task(self._watch(dep), name=f"grpcmesh-dependency-{dep.name}"))
        if self._dependencies:
            waits = [event.wait() for event in self._first_seen.values()]
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.gather(*waits), first_snapshot_timeout)
        self._ready = self._compute()
        if self.missing:
            log.warning("%s not ready: waiting for required dependencies %s", self._service_name, self.missing)
        return self._ready

    async def close(self) -> None:
        await cancel_and_wait(self._tasks)
        self._tasks.clear()

    def _compute(self) -> bool:
        return not self.missing

    async def _watch(self, dependency: Dependency) -> None:
        """Follow one dependency for as long as the service runs: any failure is logged once per
        failing streak (with the service and the dependency), backed off, and the watch reopened."""
        backoff = Backoff(min(0.1, self._retry_delay), self._retry_delay)
        while True:
            try:
                async for snapshot in self._registry.watch(dependency.name):
                    await self._update(dependency, snapshot)
                    backoff.reset()
            except asyncio.CancelledError:
                raise
            except RegistryClosedError:
                log.info("%s: registry closed; dependency %s is no longer watched", self._service_name, dependency.name)
                return
            except Exception as exc:
                if backoff.attempts == 0:
                    log.warning(
                        "%s: watching dependency %s failed, keeping its last state and retrying: %s",
                        self._service_name,
                        dependency.name,
                        exc,
                        exc_info=not isinstance(exc, MeshError),
                    )
            else:
                log.debug("%s: watch of dependency %s ended; reopening", self._service_name, dependency.name)
            await backoff.sleep()

    async def _update(self, dependency: Dependency, snapshot: Sequence[ServiceInstance]) -> None:
        available = is_available(dependency, snapshot)
        previous = self._available.get(dependency.name)
        self._available[dependency.name] = available
        self._first_seen[dependency.name].set()
        if available != previous:
            kind = "required" if dependency.required else "optional"
            if available:
                log.info("%s dependency %s is available", kind, dependency.name)
            else:
                log.warning("%s dependency %s has no SERVING instance", kind, dependency.name)
                self._warn_cycle(dependency, snapshot)
        ready = self._compute()
        if ready != self._ready:
            self._ready = ready
            await self._on_change(ready)

    def _warn_cycle(self, dependency: Dependency, snapshot: Sequence[ServiceInstance]) -> None:
        if not dependency.required or dependency.name in self._warned_cycle:
            return
        if any(self._service_name in inst.dependencies for inst in snapshot):
            self._warned_cycle.add(dependency.name)
            log.warning(
                "%s and %s depend on each other; if both require the other neither becomes ready: "
                "make one dependency optional",
                self._service_name,
                dependency.name,
            )
