"""The dashboard's picture of the mesh: instances per service, recent registry events, and
the JSON the page renders.

Registry watches deliver full snapshots; this module turns consecutive snapshots of a
service into ``added`` / ``changed`` / ``removed`` events, which is what people want to
read in an event log.
"""

from __future__ import annotations

import collections
import enum
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from grpcmesh.dashboard.metrics import Window, combine, summarize
from grpcmesh.dashboard.scraper import EndpointState
from grpcmesh.model import ServiceInstance

METRICS_URL_KEY = "metrics_url"
"""Instance metadata key naming the instance's Prometheus endpoint."""


class EventKind(enum.StrEnum):
    ADDED = "added"
    CHANGED = "changed"
    REMOVED = "removed"


@dataclass(frozen=True)
class RegistryEvent:
    """One instance appearing, changing or disappearing in the registry."""

    kind: EventKind
    at: float
    """Unix time the dashboard saw it."""
    instance: ServiceInstance

    def to_json(self) -> dict[str, Any]:
        inst = self.instance
        return {
            "kind": self.kind.value,
            "at": self.at,
            "service": inst.name,
            "id": inst.id,
            "address": inst.target,
            "version": inst.version,
            "health": inst.health.value,
        }


def diff_snapshots(
    before: Iterable[ServiceInstance], after: Iterable[ServiceInstance], at: float
) -> list[RegistryEvent]:
    """Events that turn snapshot ``before`` into ``after`` (same service), in id order."""
    old = {inst.id: inst for inst in before}
    new = {inst.id: inst for inst in after}
    events = []
    for iid in sorted(old.keys() | new.keys()):
        if iid not in new:
            events.append(RegistryEvent(EventKind.REMOVED, at, old[iid]))
        elif iid not in old:
            events.append(RegistryEvent(EventKind.ADDED, at, new[iid]))
        elif old[iid] != new[iid]:
            events.append(RegistryEvent(EventKind.CHANGED, at, new[iid]))
    return events


MetricsLookup = Callable[[str], EndpointState | None]


class MeshView:
    """Current instances per service and the most recent ``history`` registry events."""

    def __init__(self, history: int = 200) -> None:
        self._services: dict[str, list[ServiceInstance]] = {}
        self.events: collections.deque[RegistryEvent] = collections.deque(maxlen=history)

    @property
    def services(self) -> dict[str, list[ServiceInstance]]:
        return dict(self._services)

    def apply(self, service: str, snapshot: list[ServiceInstance], at: float | None = None) -> list[RegistryEvent]:
        """Take a new snapshot of ``service``; returns (and records) the events it implies."""
        events = diff_snapshots(self._services.get(service, []), snapshot, time.time() if at is None else at)
        if snapshot:
            self._services[service] = list(snapshot)
        else:
            self._services.pop(service, None)
        self.events.extend(events)
        return events

    def metrics_urls(self) -> set[str]:
        return {
            url
            for instances in self._services.values()
            for inst in instances
            if (url := inst.metadata.get(METRICS_URL_KEY))
        }

    def to_json(self, metrics: MetricsLookup) -> dict[str, Any]:
        """Everything the page draws: services (with instances and rates) and dependency edges."""
        everyone = [inst for instances in self._services.values() for inst in instances]
        edges = sorted({(inst.name, dep) for inst in everyone for dep in inst.dependencies})
        names = sorted(set(self._services) | {dep for _, dep in edges})
        services = [self._service_json(name, self._services.get(name, []), metrics) for name in names]
        return {
            "generated_at": time.time(),
            "services": services,
            "edges": [{"from": caller, "to": callee} for caller, callee in edges],
        }

    @staticmethod
    def _service_json(name: str, instances: list[ServiceInstance], metrics: MetricsLookup) -> dict[str, Any]:
        windows: dict[str, Window] = {}
        rows = []
        for inst in instances:
            url = inst.metadata.get(METRICS_URL_KEY)
            endpoint = metrics(url) if url else None
            if url and endpoint is not None and endpoint.window is not None:
                windows[url] = endpoint.window  # instances sharing an endpoint count once
            rows.append(_instance_json(inst, url, endpoint))
        total = combine(windows.values())
        return {
            "name": name,
            "registered": bool(instances),
            "dependencies": sorted({dep for inst in instances for dep in inst.dependencies}),
            "health": _service_health(instances),
            "rates": summarize(total).to_json() if total is not None else None,
            "instances": rows,
        }


def _service_health(instances: list[ServiceInstance]) -> str:
    """``SERVING`` if all serve, ``DEGRADED`` if some do, ``NOT_SERVING`` if none (or none exist)."""
    serving = sum(1 for inst in instances if inst.health.value == "SERVING")
    if instances and serving == len(instances):
        return "SERVING"
    return "DEGRADED" if serving else "NOT_SERVING"


def _instance_json(inst: ServiceInstance, url: str | None, endpoint: EndpointState | None) -> dict[str, Any]:
    if not url:
        status, detail = "none", None
    elif endpoint is None or (endpoint.error is None and endpoint.window is None):
        status, detail = "pending", None
    elif endpoint.error is not None:
        status, detail = "error", endpoint.error
    else:
        status, detail = "ok", None
    window = endpoint.window if endpoint is not None else None
    return {
        "id": inst.id,
        "service": inst.name,
        "version": inst.version,
        "address": inst.target,
        "health": inst.health.value,
        "weight": inst.weight,
        "endpoints": list(inst.endpoints),
        "metrics": {"status": status, "detail": detail},
        "rates": summarize(window).to_json() if window is not None else None,
    }
