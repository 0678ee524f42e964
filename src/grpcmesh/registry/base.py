"""The registry contract every backend implements, and the pieces they share.

As in Kratos, the contract is tiny: register, deregister, get, list, watch, close. A watch
is an async iterator of *full snapshots* (never deltas): the first item is the current
state, later items follow each change. Snapshots are sorted by instance id, so equal states
compare equal and a watcher can skip duplicates.
"""

from __future__ import annotations

import abc
import asyncio
import functools
import logging
import math
from collections.abc import AsyncGenerator, AsyncIterator, Iterable
from types import TracebackType
from typing import TYPE_CHECKING, Any, Protocol, Self, runtime_checkable

from grpcmesh.errors import InvalidInstanceError, RegistryClosedError
from grpcmesh.model import ServiceInstance, check_service_name

if TYPE_CHECKING:
    from grpcmesh.registry._hub import WatchHub

log = logging.getLogger("grpcmesh.registry")

DEFAULT_TTL = 10.0
"""Seconds a registration outlives its owner's last heartbeat."""

MIN_TTL = 1.0
MAX_TTL = 7 * 24 * 3600.0
"""A week: a longer TTL is a typo, and a dead owner's record would linger that long."""

Snapshot = list[ServiceInstance]


@runtime_checkable
class Registry(Protocol):
    """What discovery, servers and the CLI need from a registry backend."""

    async def register(self, instance: ServiceInstance, *, ttl: float = DEFAULT_TTL) -> None:
        """Add or replace (same name and id) ``instance``; it lives while this registry heartbeats it."""

    async def deregister(self, instance: ServiceInstance) -> None:
        """Remove ``instance`` (by name and id) if this registry still owns it (registered it last).

        Removing an absent instance, or one another live registry has registered since, is not
        an error: it is left alone, so an old process never removes its successor's record.
        """

    async def get_service(self, name: str) -> list[ServiceInstance]:
        """The live instances of ``name``, sorted by id."""

    async def list_services(self) -> list[str]:
        """Names of services with at least one live instance, sorted."""

    def watch(self, name: str) -> AsyncIterator[list[ServiceInstance]]:
        """Full snapshots of ``name``: the current state first, then one per change."""

    async def close(self) -> None:
        """Stop heartbeats, deregister what this registry registered, end watches."""

    async def __aenter__(self) -> Registry: ...

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None: ...


def sort_snapshot(instances: Iterable[ServiceInstance]) -> list[ServiceInstance]:
    """Canonical order of a snapshot: by id."""
    return sorted(instances, key=lambda inst: inst.id)


def check_ttl(ttl: Any) -> float:
    """The TTL as float seconds; rejects non-numbers, NaN, infinity and TTLs too short to heartbeat."""
    if isinstance(ttl, bool) or not isinstance(ttl, (int, float)):
        raise InvalidInstanceError("ttl", f"must be a number of seconds such as 10, not a {type(ttl).__name__}")
    if math.isnan(ttl) or not MIN_TTL <= ttl <= MAX_TTL:
        raise InvalidInstanceError(
            "ttl", f"{ttl!r} seconds is out of range; use {MIN_TTL:g} to {MAX_TTL:g} seconds (default {DEFAULT_TTL:g})"
        )
    return float(ttl)


class SnapshotFeed:
    """Latest-value fan-out of one service's snapshots to any number of watchers.

    A slow watcher never blocks the producer nor queues without bound: it wakes up to the
    newest snapshot, skipping intermediate ones it was too slow to see. Watchers only get a
    snapshot that differs from the last one they saw.
    """

    def __init__(self) -> None:
        self._current: Snapshot | None = None
        self._version = 0
        self._closed = False
        self._changed = asyncio.Condition()

    @property
    def current(self) -> Snapshot | None:
        return self._current

    async def publish(self, snapshot: Snapshot) -> None:
        async with self._changed:
            if snapshot == self._current:
                return
            self._current = snapshot
            self._version += 1
            self._changed.notify_all()

    async def close(self) -> None:
        async with self._changed:
            self._closed = True
            self._changed.notify_all()

    def _has_news(self, seen: int) -> bool:
        return self._closed or (self._version != seen and self._current is not None)

    async def subscribe(self) -> AsyncIterator[Snapshot]:
        seen = 0
        while True:
            async with self._changed:
                await self._changed.wait_for(functools.partial(self._has_news, seen))
                if self._version == seen or self._current is None:
                    return
                seen = self._version
                snapshot = self._current
            yield list(snapshot)


class BaseRegistry(abc.ABC):
    """Shared plumbing for backends: context manager, closed-state checks, argument checks,
    and ``watch`` through the backend's :class:`~grpcmesh.registry._hub.WatchHub`."""

    _closed: bool = False
    _hub: WatchHub[Any]

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    def _ensure_open(self) -> None:
        if self._closed:
            raise RegistryClosedError(f"{type(self).__name__} is closed; open a new registry")

    @staticmethod
    def _check_name(name: str) -> str:
        return check_service_name(name, "name")

    @abc.abstractmethod
    async def register(self, instance: ServiceInstance, *, ttl: float = DEFAULT_TTL) -> None: ...

    @abc.abstractmethod
    async def deregister(self, instance: ServiceInstance) -> None: ...

    @abc.abstractmethod
    async def get_service(self, name: str) -> list[ServiceInstance]: ...

    @abc.abstractmethod
    async def list_services(self) -> list[str]: ...

    def _check_watch(self, name: str) -> None:
        """The hub's guard: checked when a watch starts iterating."""
        self._ensure_open()
        self._check_name(name)

    def watch(self, name: str) -> AsyncGenerator[list[ServiceInstance], None]:
        """Full snapshots of ``name``: the current state first, then one per change."""
        return self._hub.watch(name)

    def watched_names(self) -> list[str]:
        """Names this registry object keeps watch state for (each has at least one watcher)."""
        return self._hub.names()

    @abc.abstractmethod
    async def close(self) -> None: ...
