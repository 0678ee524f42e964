"""One registry watch per service, shared by every ADS stream that asks for its endpoints.

A hundred clients subscribed to ``user-service`` cost one ``registry.watch`` here. A watch
starts with its first subscriber and stops with its last. Each snapshot has hostnames
resolved to IP addresses before anyone sees it, because gRPC's xDS client accepts only IPs
in endpoint addresses (gRFC A27). Each service's packed ClusterLoadAssignments are built once
per snapshot and shared by every stream (:meth:`RegistryWatches.assignment`).

A watch survives any exception (a hostile record, a backend hiccup, a bug): it is logged
once with the service's name, retried with backoff, and logged again only when it recovers.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import socket
from collections.abc import Callable
from typing import Any

from grpcmesh.model import ServiceInstance
from grpcmesh.registry import Registry
from grpcmesh.xds import resources
from grpcmesh.xds.policy import XdsPolicies

log = logging.getLogger("grpcmesh.xds")

Listener = Callable[[str], None]
"""Called with the service name after its endpoints changed (never blocks, never awaits)."""

RETRY_MIN = 0.2
RETRY_MAX = 5.0


def _is_ip(address: str) -> bool:
    try:
        ipaddress.ip_address(address)
    except ValueError:
        return False
    return True


async def resolve_addresses(instances: list[ServiceInstance]) -> list[ServiceInstance]:
    """Copies of ``instances`` with hostnames replaced by an IP; unresolvable ones are dropped (logged)."""
    loop = asyncio.get_running_loop()
    resolved: list[ServiceInstance] = []
    for instance in instances:
        if _is_ip(instance.address):
            resolved.append(instance)
            continue
        try:
            infos = await loop.getaddrinfo(instance.address, instance.port, type=socket.SOCK_STREAM)
        except OSError as exc:
            log.warning("xDS: dropping %s/%s: cannot resolve %r: %s", instance.name, instance.id, instance.address, exc)
            continue
        resolved.append(instance.replace(address=str(infos[0][4][0])))
    return resolved


class RegistryWatches:
    """Latest endpoints of each subscribed service, kept current by a registry watch."""

    def __init__(self, registry: Registry, policies: XdsPolicies | None = None) -> None:
        self._registry = registry
        self._policies = policies or XdsPolicies()
        self._listeners: dict[str, list[Listener]] = {}
        self._snapshots: dict[str, list[ServiceInstance]] = {}
        self._assignments: dict[str, dict[str, tuple[str, Any] | None]] = {}
        """Per service: packed assignment by cluster name, for the current snapshot."""
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self.builds = 0
        """ClusterLoadAssignments built so far (each once per snapshot, whatever the number of streams)."""

    @property
    def watched(self) -> set[str]:
        """Services with a running watch (those at least one stream subscribes to)."""
        return set(self._tasks)

    def endpoints(self, service: str) -> list[ServiceInstance] | None:
        """The service's current instances (IP addresses), or None until its first snapshot arrived."""
        snapshot = self._snapshots.get(service)
        return None if snapshot is None else list(snapshot)

    def assignment(self, cluster_name: str) -> tuple[str, Any] | None:
        """``(digest, packed ClusterLoadAssignment)`` of a cluster, built once per snapshot; None until known."""
        service = resources.service_of(cluster_name)
        snapshot = None if service is None else self._snapshots.get(service)
        if service is None or snapshot is None:
            return None
        cache = self._assignments.setdefault(service, {})
        if cluster_name in cache:
            return cache[cluster_name]  # built (or failed: None) once per snapshot
        try:
            built = resources.cluster_load_assignment(cluster_name, snapshot, self._policies.for_service(service))
            packed = resources.pack(built)
        except Exception:  # a record no builder expected: serve nothing new for it, keep every stream alive
            log.exception("xDS: cannot build the endpoints of %s from its registry records; not sent", cluster_name)
            cache[cluster_name] = None
            return None
        self.builds += 1
        cache[cluster_name] = entry = (resources.digest(packed), packed)
        return entry

    def cached_assignments(self) -> int:
        """Assignments held in the cache (all released when no stream needs them)."""
        return sum(len(cache) for cache in self._assignments.values())

    def _forget_assignments(self, service: str) -> None:
        self._assignments.pop(service, None)

    def subscribe(self, service: str, listener: Listener) -> None:
        """Call ``listener`` whenever ``service`` changes (and once its first snapshot arrives)."""
        self._listeners.setdefault(service, []).append(listener)
        if service not in self._tasks:
            self._tasks[service] = asyncio.get_running_loop().create_task(
                self._follow(service), name=f"grpcmesh-xds-watch-{service}"
            )

    def unsubscribe(self, service: str, listener: Listener) -> None:
        """Stop calling ``listener``; the watch stops when nobody listens any more."""
        listeners = self._listeners.get(service, [])
        with contextlib.suppress(ValueError):
            listeners.remove(listener)
        if listeners:
            return
        self._listeners.pop(service, None)
        self._snapshots.pop(service, None)
        self._forget_assignments(service)
        task = self._tasks.pop(service, None)
        if task is not None:
            task.cancel()

    async def close(self) -> None:
        """Stop every watch."""
        tasks = list(self._tasks.values())
        self._tasks.clear()
        self._listeners.clear()
        self._snapshots.clear()
        self._assignments.clear()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _follow(self, service: str) -> None:
        delay = RETRY_MIN
        failing = False
        while True:
            try:
                async for snapshot in self._registry.watch(service):
                    self._snapshots[service] = await resolve_addresses(snapshot)
                    self._forget_assignments(service)
                    if failing:
                        log.warning("xDS: watch of %s recovered", service)
                    delay, failing = RETRY_MIN, False
                    self._notify(service)
                return  # the registry closed: no more changes will come
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # any failure: keep serving the last snapshot, retry
                if not failing:
                    log.warning("xDS: watch of %s failed, retrying (backoff up to %.0fs): %r", service, RETRY_MAX, exc)
                else:
                    log.debug("xDS: watch of %s failed again: %r", service, exc)
                failing = True
            await asyncio.sleep(delay)
            delay = min(delay * 2, RETRY_MAX)

    def _notify(self, service: str) -> None:
        for listener in list(self._listeners.get(service, ())):
            try:
                listener(service)
            except Exception:
                log.exception("xDS: a listener of %s failed; the watch carries on", service)
