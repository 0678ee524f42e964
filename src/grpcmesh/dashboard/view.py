"""The dashboard's picture of the mesh: instances per service, recent registry events, and
the JSON the page renders.

Registry watches deliver full snapshots; this module turns consecutive snapshots of a
service into ``added`` / ``changed`` / ``removed`` events, which is what people want to
read in an event log.

An instance's ``metrics_url`` is written by whoever wrote its registry record, so the
dashboard fetches it only when it points at the instance's own address (see
:func:`metrics_target`): a record cannot make the dashboard read some other internal page.
"""

from __future__ import annotations

import collections
import enum
import ipaddress
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

from grpcmesh.dashboard.edges import EXTERNAL, Edge, build_edges
from grpcmesh.dashboard.metrics import EdgeKey, Rates, Window, combine, summarize
from grpcmesh.dashboard.scraper import EndpointState, check_metrics_url
from grpcmesh.model import ServiceInstance

if TYPE_CHECKING:
    from grpcmesh.dashboard.history import MeshHistory

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
    previous: ServiceInstance | None = None
    """For ``changed``: the instance as it was before."""

    @property
    def marker(self) -> str:
        """What the charts mark: ``added``, ``removed``, ``health`` (health changed) or ``changed``."""
        if self.kind is EventKind.CHANGED and self.previous is not None:
            return "health" if self.previous.health != self.instance.health else "changed"
        return self.kind.value

    def to_json(self) -> dict[str, Any]:
        inst = self.instance
        return {
            "marker": self.marker,
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
            events.append(RegistryEvent(EventKind.CHANGED, at, new[iid], old[iid]))
    return events


def _same_host(url_host: str, address: str) -> bool:
    """``url_host`` names the same machine as ``address`` without a DNS lookup."""
    a, b = url_host.strip("[]").lower(), address.strip("[]").lower()
    if a == b or (_is_loopback(a) and _is_loopback(b)):
        return True
    try:
        return ipaddress.ip_address(a) == ipaddress.ip_address(b)
    except ValueError:
        return False


def _is_loopback(host: str) -> bool:
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _is_unspecified(host: str) -> bool:
    try:
        return ipaddress.ip_address(host.strip("[]")).is_unspecified
    except ValueError:
        return False


def metrics_target(inst: ServiceInstance) -> tuple[str | None, str | None]:
    """(URL to scrape, why not) for an instance: ``(None, None)`` when it names no ``metrics_url``.

    The URL's host must be the instance's registered address (any loopback name for a loopback
    instance). A wildcard host (``0.0.0.0``, ``::``: "every interface") means the instance's own
    address and is rewritten to it.
    """
    url = inst.metadata.get(METRICS_URL_KEY)
    if not url:
        return None, None
    problem = check_metrics_url(url)
    if problem is not None:
        return None, problem
    parts = urlsplit(url)
    host = parts.hostname or ""
    if _is_unspecified(host):
        address = f"[{inst.address}]" if ":" in inst.address else inst.address
        netloc = f"{address}:{parts.port}" if parts.port is not None else address
        return urlunsplit((parts.scheme, netloc, parts.path, parts.query, "")), None
    if parts.username is not None or parts.password is not None:
        return None, "metrics_url must not carry credentials"
    if not _same_host(host, inst.address):
        return None, "metrics_url is not on the instance's own address; not scraped"
    return url, None


MetricsLookup = Callable[[str], EndpointState | None]


class MeshView:
    """Current instances per service and the most recent ``history`` registry events."""

    def __init__(self, history: int = 200) -> None:
        self._services: dict[str, list[ServiceInstance]] = {}
        self.events: collections.deque[RegistryEvent] = collections.deque(maxlen=history)

    @property
    def services(self) -> dict[str, list[ServiceInstance]]:
        return dict(self._services)

    def instance(self, service: str, instance_id: str) -> ServiceInstance | None:
        return next((inst for inst in self._services.get(service, ()) if inst.id == instance_id), None)

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
        """Every URL to scrape: the instances' own ``metrics_url`` that pass :func:`metrics_target`."""
        return {url for instances in self._services.values() for inst in instances if (url := metrics_target(inst)[0])}

    def refused_metrics(self) -> list[tuple[ServiceInstance, str]]:
        """Instances whose ``metrics_url`` is not scraped, with the reason."""
        return [
            (inst, problem)
            for instances in self._services.values()
            for inst in instances
            if (problem := metrics_target(inst)[1]) is not None
        ]

    def _windows(self, metrics: MetricsLookup) -> tuple[dict[str, Window], dict[EdgeKey, Window]]:
        """Server-side window per service and client-side window per edge; an endpoint shared by
        several instances counts once."""
        served: dict[str, dict[str, Window]] = {}
        observed: dict[str, dict[EdgeKey, Window]] = {}
        for name, instances in self._services.items():
            for inst in instances:
                url = metrics_target(inst)[0]
                endpoint = metrics(url) if url else None
                if url is None or endpoint is None or endpoint.window is None:
                    continue
                served.setdefault(name, {})[url] = endpoint.window
                observed[url] = endpoint.edges
        per_service = {name: total for name, by_url in served.items() if (total := combine(by_url.values()))}
        per_edge: dict[EdgeKey, Window] = {}
        for edges in observed.values():
            for key, window in edges.items():
                per_edge[key] = per_edge[key] + window if key in per_edge else window
        return per_service, per_edge

    def service_rates(self, metrics: MetricsLookup) -> dict[str, Rates | None]:
        served, _ = self._windows(metrics)
        return {name: summarize(served[name]) if name in served else None for name in self._services}

    def edges(self, metrics: MetricsLookup) -> list[Edge]:
        """Observed and declared edges. Calls from outside the mesh are only worked out while every
        scraped endpoint has a window: a caller whose scrape just failed would otherwise look external."""
        served, observed = self._windows(metrics)
        everyone = [inst for instances in self._services.values() for inst in instances]
        declared = {(inst.name, dep) for inst in everyone for dep in inst.dependencies}
        known = set(self._services) | {dep for _, dep in declared}
        complete = all(
            (endpoint := metrics(url)) is not None and endpoint.window is not None
            for inst in everyone
            if (url := metrics_target(inst)[0])
        )
        return build_edges(known, declared, observed, served if complete else {})

    def to_json(
        self, metrics: MetricsLookup, history: MeshHistory | None = None, *, latest_only: bool = False
    ) -> dict[str, Any]:
        """Everything the page draws: services (instances, rates, history) and the edges.

        ``latest_only``: each service's history holds only its newest point (what the live
        stream sends every second; the page keeps the rest), marked ``"history_latest_only"``.
        """
        edges = self.edges(metrics)
        names = sorted(set(self._services) | {e.target for e in edges} | {e.source for e in edges})
        services = [
            self._service_json(name, self._services.get(name, []), metrics, history, latest_only) for name in names
        ]
        return {
            "generated_at": time.time(),
            "history_seconds": history.seconds if history is not None else None,
            "history_latest_only": latest_only,
            "services": services,
            "edges": [edge.to_json() for edge in edges],
        }

    @staticmethod
    def _service_json(
        name: str,
        instances: list[ServiceInstance],
        metrics: MetricsLookup,
        history: MeshHistory | None,
        latest_only: bool = False,
    ) -> dict[str, Any]:
        windows: dict[str, Window] = {}
        rows = []
        for inst in instances:
            url, refused = metrics_target(inst)
            endpoint = metrics(url) if url else None
            if url and endpoint is not None and endpoint.window is not None:
                windows[url] = endpoint.window  # instances sharing an endpoint count once
            row = _instance_json(inst, url, refused, endpoint)
            row["health_history"] = history.health_history(name, inst.id) if history is not None else []
            rows.append(row)
        total = combine(windows.values())
        return {
            "name": name,
            "registered": bool(instances),
            "external": name == EXTERNAL,
            "dependencies": sorted({dep for inst in instances for dep in inst.dependencies}),
            "health": _service_health(instances),
            "rates": summarize(total).to_json() if total is not None else None,
            "history": history.service_json(name, latest_only=latest_only) if history is not None else None,
            "instances": rows,
        }


def _service_health(instances: list[ServiceInstance]) -> str:
    """``SERVING`` if all serve, ``DEGRADED`` if some do, ``NOT_SERVING`` if none (or none exist)."""
    serving = sum(1 for inst in instances if inst.health.value == "SERVING")
    if instances and serving == len(instances):
        return "SERVING"
    return "DEGRADED" if serving else "NOT_SERVING"


def _instance_json(
    inst: ServiceInstance, url: str | None, refused: str | None, endpoint: EndpointState | None
) -> dict[str, Any]:
    if refused is not None:
        status, detail = "refused", refused
    elif not url:
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
        "dependencies": list(inst.dependencies),
        "metadata": dict(inst.metadata),
        "metrics": {
            "status": status,
            "detail": detail,
            "url": inst.metadata.get(METRICS_URL_KEY),
            "last_scrape_at": endpoint.last_scrape_at if endpoint is not None else None,
        },
        "rates": summarize(window).to_json() if window is not None else None,
    }
