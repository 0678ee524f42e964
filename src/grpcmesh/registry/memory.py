"""In-process registry: for tests, single-process tools and examples.

``memory://`` gives a private store; ``memory://NAME`` shares one store between every
registry opened with that name in this process. Registrations live until deregistered or
until the registry that made them closes: owner and store share a process, so there is no
owner death to detect and ``ttl`` is only validated.

As in every backend, each registration has one owner (the registry object that registered
it last). A registration removed by another registry object while its owner still holds it
is put back by the owner at once, logged; registering an id another open registry owns takes
it over and logs a WARNING naming the id. Whatever sits in the store is checked when read, so
an entry written around the API (not an instance, an invalid one, or one under another
instance's key) is skipped with one warning and never breaks a watch.
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from typing import Any
from urllib.parse import SplitResult

from grpcmesh.errors import ConfigError, InvalidRecordError
from grpcmesh.model import ServiceInstance, decode_instance
from grpcmesh.registry._hub import WatchHub
from grpcmesh.registry._warn import WarnOnce
from grpcmesh.registry.base import DEFAULT_TTL, BaseRegistry, Snapshot, check_ttl, sort_snapshot

log = logging.getLogger("grpcmesh.registry.memory")

_shared_stores: weakref.WeakValueDictionary[str, _MemoryStore] = weakref.WeakValueDictionary()

Key = tuple[str, str]


class _MemoryStore:
    """The state shared by the registries of one ``memory://NAME``."""

    def __init__(self) -> None:
        self.instances: dict[str, dict[str, ServiceInstance]] = {}
        self.owners: dict[Key, MemoryRegistry] = {}
        self.registries: weakref.WeakSet[MemoryRegistry] = weakref.WeakSet()
        self.warned = WarnOnce()

    def snapshot(self, name: str) -> list[ServiceInstance]:
        by_id = self.instances.get(name)
        if not isinstance(by_id, dict):
            return []
        good = []
        for iid, stored in list(by_id.items()):
            instance = self._checked(name, iid, stored)
            if instance is not None:
                good.append(instance)
        return sort_snapshot(good)

    def _checked(self, name: str, iid: Any, stored: object) -> ServiceInstance | None:
        """``stored`` if it is the valid instance for its key; else None, warned about once."""
        owner = self.owners.get((name, iid))
        trusted = owner._owned.get((name, iid)) if owner is not None else None
        if trusted is not None and trusted is stored:
            return trusted  # exactly what a registry put there: validated when it was built
        try:
            raw = stored.model_dump(mode="json", warnings=False) if isinstance(stored, ServiceInstance) else stored
            instance = decode_instance(raw)  # type: ignore[arg-type]  # decode_instance checks
            if instance.key != (name, iid):
                raise InvalidRecordError(f"record is for {instance.name}/{instance.id}")
        except InvalidRecordError as exc:
            shown = repr(iid)[:100]
            key = (name, shown, id(stored))
            self.warned.warning(log, key, "skipping bad memory record %s/%s: %s", name, shown, exc)
            return None
        return instance

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
        self._owned: dict[Key, ServiceInstance] = {}
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
            previous = self._store.owners.get(instance.key)
            if previous is not None and previous is not self and instance.key in previous._owned:
                log.warning(
                    "memory registry: instance id %s of %s has two live owners; the later registration replaces "
                    "the earlier one's. Give each owner its own instance id",
                    instance.id,
                    instance.name,
                )
                previous._owned.pop(instance.key, None)
            self._store.instances.setdefault(instance.name, {})[instance.id] = instance
            self._store.owners[instance.key] = self
            self._owned[instance.key] = instance
            await self._store.changed(instance.name)

    async def deregister(self, instance: ServiceInstance) -> None:
        self._ensure_open()
        async with self._lock:
            self._owned.pop(instance.key, None)
            owner = self._store.owners.get(instance.key)
            await self._remove(instance.name, instance.id)
            if owner is not None and owner is not self and not owner._closed and instance.key in owner._owned:
                await owner._restore(instance.key)

    async def _restore(self, key: Key) -> None:
        """Another registry removed what this one owns: put it back, as every backend's owner does."""
        instance = self._owned[key]
        log.warning("memory registry: %s/%s was removed by another registry; its owner restored it", *key)
        self._store.instances.setdefault(instance.name, {})[instance.id] = instance
        self._store.owners[key] = self
        await self._store.changed(instance.name)

    async def _remove(self, name: str, instance_id: str) -> None:
        by_id = self._store.instances.get(name, {})
        self._store.owners.pop((name, instance_id), None)
        if isinstance(by_id, dict) and by_id.pop(instance_id, None) is not None:
            if not by_id:
                self._store.instances.pop(name, None)
            await self._store.changed(name)

    async def get_service(self, name: str) -> list[ServiceInstance]:
        self._ensure_open()
        self._check_name(name)
        return self._store.snapshot(name)

    async def list_services(self) -> list[str]:
        self._ensure_open()
        return sorted(name for name in list(self._store.instances) if self._store.snapshot(name))

    async def close(self) -> None:
        if self._closed:
            return
        async with self._lock:
            for key in list(self._owned):
                self._owned.pop(key, None)
                if self._store.owners.get(key) is self:  # never remove what another owner took over
                    await self._remove(*key)
            self._closed = True
        self._store.registries.discard(self)
        await self._hub.close()


def from_url(url: SplitResult, options: dict[str, Any]) -> MemoryRegistry:
    """``memory://[NAME]``: a private store, or the process-wide store called NAME."""
    if options:
        raise ConfigError(f"registry: memory:// takes no options, got {sorted(options)}")
    return MemoryRegistry(url.netloc + url.path.strip("/"))
