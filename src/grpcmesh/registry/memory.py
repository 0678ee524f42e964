"""In-process registry: for tests, single-process tools and examples.

``memory://`` gives a private store; ``memory://NAME`` shares one store between every
registry opened with that name in this process. Registrations live until deregistered or
until the registry that made them closes: owner and store share a process, so there is no
owner death to detect and ``ttl`` is accepted for interface compatibility only.
"""

from __future__ import annotations

import asyncio
import weakref
from typing import Any
from urllib.parse import SplitResult

from grpcmesh.errors import ConfigError
from grpcmesh.model import ServiceInstance
from grpcmesh.registry._hub import WatchHub
from grpcmesh.registry.base import DEFAULT_TTL, BaseRegistry, Snapshot, check_ttl, sort_snapshot

_shared_stores: weakref.WeakValueDictionary[str, _MemoryStore] = weakref.WeakValueDictionary()


class _MemoryStore:
    """The state shared by the registries of one ``memory://NAME``."""

    def __init__(self) -> None:
        self.instances: dict[str, dict[str, ServiceInstance]] = {}
        self.registries: weakref.WeakSet[MemoryRegistry] = weakref.WeakSet()

    def snapshot(self, name: str) -> list[ServiceInstance]:
        return sort_snapshot(self.instances.get(name, {}).values())

    async def changed(self, name: str) -> None:
        snapshot = self.snapshot(name)
        for registry in list(self.registries):
            await registry._publish(name, snapshot)


class MemoryRegistry(BaseRegistry):
    """A registry held in this process's memory."""

    def __init__(self, namespace: str = "") -> None:
        if namespace:
            store = _shared_stores.get(namespace)
            if store is None:
                store = _MemoryStore()
                _shared_stores[namespace] = store
        else:
            store = _MemoryStore()
        self._store = store
        self._store.registries.add(self)
        self._owned: dict[tuple[str, str], ServiceInstance] = {}
        self._hub: WatchHub[None] = WatchHub("memory", self._load, guard=self._check_watch)
        self._lock = asyncio.Lock()

    async def _load(self, name: str) -> tuple[Snapshot, None]:
        return self._store.snapshot(name), None

    async def _publish(self, name: str, snapshot: list[ServiceInstance]) -> None:
        await self._hub.publish(name, snapshot)

    async def register(self, instance: ServiceInstance, *, ttl: float = DEFAULT_TTL) -> None:
        self._ensure_open()
        check_ttl(ttl)
        async with self._lock:
            self._store.instances.setdefault(instance.name, {})[instance.id] = instance
            self._owned[instance.key] = instance
            await self._store.changed(instance.name)

    async def deregister(self, instance: ServiceInstance) -> None:
        self._ensure_open()
        async with self._lock:
            await self._remove(instance.name, instance.id)

    async def _remove(self, name: str, instance_id: str) -> None:
        self._owned.pop((name, instance_id), None)
        by_id = self._store.instances.get(name, {})
        if by_id.pop(instance_id, None) is not None:
            if not by_id:
                self._store.instances.pop(name, None)
            await self._store.changed(name)

    async def get_service(self, name: str) -> list[ServiceInstance]:
        self._ensure_open()
        self._check_name(name)
        return self._store.snapshot(name)

    async def list_services(self) -> list[str]:
        self._ensure_open()
        return sorted(name for name, by_id in self._store.instances.items() if by_id)

    async def close(self) -> None:
        if self._closed:
            return
        async with self._lock:
            for name, instance_id in list(self._owned):
                await self._remove(name, instance_id)
            self._closed = True
        self._store.registries.discard(self)
        await self._hub.close()


def from_url(url: SplitResult, options: dict[str, Any]) -> MemoryRegistry:
    """``memory://[NAME]``: a private store, or the process-wide store called NAME."""
    if options:
        raise ConfigError(f"registry: memory:// takes no options, got {sorted(options)}")
    return MemoryRegistry(url.netloc + url.path.strip("/"))
