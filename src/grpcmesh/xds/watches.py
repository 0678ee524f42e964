"""One registry watch per service, shared by every ADS stream that asks for its endpoints.

A hundred clients subscribed to ``user-service`` cost one ``registry.watch`` here. A watch
starts with its first subscriber and stops with its last. Each snapshot has hostnames
resolved to IP addresses before anyone sees it, because gRPC's xDS client accepts only IPs
in endpoint addresses (gRFC A27).
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import socket
from collections.abc import Callable

from grpcmesh.errors import MeshError
from grpcmesh.model import ServiceInstance
from grpcmesh.registry import Registry

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

    def __init__(self, registry: Registry) -> None:
        self._registry = registry
        self._listeners: dict[str, list[Listener]] = {}
        self._snapshots: dict[str, list[ServiceInstance]] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}

    @property
    def watched(self) -> set[str]:
        """Services with a running watch (those at least one stream subscribes to)."""
        return set(self._tasks)

    def endpoints(self, service: str) -> list[ServiceInstance] | None:
        """The service's current instances (IP addresses), or None until its first snapshot arrived."""
        snapshot = self._snapshots.get(service)
        return None if snapshot is None else list(snapshot)

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
        task = self._tasks.pop(service, None)
        if task is not None:
            task.cancel()

    async def close(self) -> None:
        """Stop every watch."""
        tasks = list(self._tasks.values())
        self._tasks.clear()
        self._listeners.clear()
        self._snapshots.clear()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _follow(self, service: str) -> None:
        delay = RETRY_MIN
        while True:
            try:
                async for snapshot in self._registry.watch(service):
                    self._snapshots[service] = await resolve_addresses(snapshot)
                    delay = RETRY_MIN
                    for listener in list(self._listeners.get(service, ())):
                        listener(service)
                return  # the registry closed: no more changes will come
            except (MeshError, OSError) as exc:
                log.warning("xDS: watch of %s failed, retrying in %.1fs: %s", service, delay, exc)
            await asyncio.sleep(delay)
            delay = min(delay * 2, RETRY_MAX)
