"""A live, filtered endpoint set for one service, fed by ``registry.watch(name)``.

Discovery never talks to a backend directly: it only iterates the :class:`Registry` watch.
When that watch fails (registry unreachable, backend error) the last known endpoints stay in
use, the failure is logged once, and the watch is reopened after a
:class:`~grpcmesh._backoff.Backoff` delay (capped exponential, equal jitter); the first
snapshot after recovery replaces the set as usual.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from grpcmesh._backoff import Backoff
from grpcmesh._tasks import cancel_and_wait
from grpcmesh.errors import InvalidInstanceError, MeshError, RegistryClosedError
from grpcmesh.model import HealthStatus, ServiceInstance, check_service_name
from grpcmesh.registry.base import Registry

log = logging.getLogger("grpcmesh.discovery")

__all__ = ["Backoff", "Endpoint", "EndpointFilter", "EndpointWatcher", "Listener"]

Listener = Callable[[tuple["Endpoint", ...]], None]


@dataclass(frozen=True)
class Endpoint:
    """One instance a client may call: what balancers need, plus the full registration."""

    id: str
    target: str
    weight: int
    instance: ServiceInstance = field(compare=False, repr=False)

    @classmethod
    def from_instance(cls, instance: ServiceInstance) -> Endpoint:
        return cls(id=instance.id, target=instance.target, weight=instance.weight, instance=instance)


@dataclass(frozen=True)
class EndpointFilter:
    """Which instances of a service a client wants: an exact version and metadata subset."""

    version: str | None = None
    metadata_match: tuple[tuple[str, str], ...] = ()

    @classmethod
    def of(cls, version: str | None = None, metadata_match: Mapping[str, str] | None = None) -> EndpointFilter:
        """Build a filter, checking types so a typo fails here rather than matching nothing."""
        if version is not None and not isinstance(version, str):
            raise InvalidInstanceError("version", f"{version!r} must be a string such as 'v1' or None for any")
        pairs: list[tuple[str, str]] = []
        for key, value in (metadata_match or {}).items():
            if not isinstance(key, str) or not isinstance(value, str):
                raise InvalidInstanceError(
                    "metadata_match", f"{key!r}: {value!r} must map strings to strings, e.g. {{'zone': 'eu-1'}}"
                )
            pairs.append((key, value))
        return cls(version=version, metadata_match=tuple(sorted(pairs)))

    def matches(self, instance: ServiceInstance) -> bool:
        if instance.health is not HealthStatus.SERVING:
            return False
        if self.version is not None and instance.version != self.version:
            return False
        return all(instance.metadata.get(key) == value for key, value in self.metadata_match)

    def describe(self) -> str:
        """Human-readable form used in error messages, e.g. ``version='v1', metadata={'zone': 'a'}``."""
        parts = []
        if self.version is not None:
            parts.append(f"version={self.version!r}")
        if self.metadata_match:
            parts.append(f"metadata={dict(self.metadata_match)!r}")
        return ", ".join(parts) if parts else "no filter"


class EndpointWatcher:
    """Keeps ``endpoints`` equal to the SERVING, filter-matching instances of one service.

    Start it with :meth:`start`; listeners are called synchronously on every change, so a
    channel can swap its sub-channels and balancer atomically with respect to picks.
    """

    def __init__(
        self,
        registry: Registry,
        service: str,
        endpoint_filter: EndpointFilter | None = None,
        *,
        backoff: Backoff | None = None,
    ) -> None:
        self.registry = registry
        self.service = check_service_name(service, "service")
        self.filter = endpoint_filter or EndpointFilter()
        self._backoff = backoff or Backoff()
        self._endpoints: tuple[Endpoint, ...] = ()
        self._listeners: list[Listener] = []
        self._changed = asyncio.Event()
        self.version = 0
        """Incremented on every change of the endpoint set (and on the first snapshot)."""
        self._synced = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._healthy = True
        self.watch_errors = 0

    @property
    def endpoints(self) -> tuple[Endpoint, ...]:
        return self._endpoints

    @property
    def synced(self) -> bool:
        """True once the first snapshot arrived (the set reflects the registry, not just startup)."""
        return self._synced.is_set()

    def add_listener(self, listener: Listener) -> None:
        self._listeners.append(listener)

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name=f"grpcmesh-discovery-{self.service}")

    async def wait_for_endpoints(self, timeout: float | None) -> bool:
        """Wait until at least one endpoint is known; False if ``timeout`` passes first."""
        self.start()
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        while not self._endpoints:
            remaining = None if deadline is None else deadline - loop.time()
            if remaining is not None and remaining <= 0:
                return False
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.wait_changed(self.version), remaining)
        return True

    async def wait_changed(self, since: int | None = None) -> None:
        """Wait until :attr:`version` differs from ``since`` (default: its current value).

        Passing the version you last looked at cannot miss a change that happens before the
        wait starts.
        """
        seen = self.version if since is None else since
        while self.version == seen:
            await self._changed.wait()

    def _notify(self) -> None:
        self.version += 1
        event, self._changed = self._changed, asyncio.Event()
        event.set()

    async def close(self) -> None:
        await cancel_and_wait((self._task,))

    async def _run(self) -> None:
        while True:
            try:
                async for snapshot in self.registry.watch(self.service):
                    self._apply(snapshot)
                    if not self._healthy:
                        log.info("registry watch of %s recovered", self.service)
                        self._healthy = True
                    self._backoff.reset()
            except asyncio.CancelledError:
                raise
            except RegistryClosedError:
                log.info("registry closed; %s keeps its last %d endpoint(s)", self.service, len(self._endpoints))
                return
            except Exception as exc:  # any backend failure: keep the last endpoints, retry later
                self.watch_errors += 1
                if self._healthy:  # once per failing streak; a traceback only for what no backend anticipated
                    log.warning(
                        "registry watch of %s failed, keeping the last %d endpoint(s) and retrying: %s",
                        self.service,
                        len(self._endpoints),
                        exc,
                        exc_info=not isinstance(exc, MeshError),
                    )
                self._healthy = False
            else:
                log.debug("registry watch of %s ended; reopening", self.service)
            await asyncio.sleep(self._backoff.next_delay())

    def _apply(self, snapshot: list[ServiceInstance]) -> None:
        chosen = tuple(Endpoint.from_instance(i) for i in snapshot if i.name == self.service and self.filter.matches(i))
        first = not self._synced.is_set()
        self._synced.set()
        if chosen == self._endpoints and all(
            a.instance == b.instance for a, b in zip(chosen, self._endpoints, strict=True)
        ):
            if first:
                self._notify()
            return
        self._endpoints = chosen
        for listener in list(self._listeners):
            try:
                listener(chosen)
            except Exception:
                log.exception("endpoint listener for %s failed", self.service)
        self._notify()
