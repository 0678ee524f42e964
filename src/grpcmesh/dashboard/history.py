"""A short, bounded memory of the mesh: per-service rates over the last minutes, the registry
events to mark on those charts, and each instance's health changes.

Everything lives in fixed-size ring buffers (``deque(maxlen=...)``) trimmed by age, and the
number of services and instances remembered is capped, so a dashboard left running for weeks
(or fed a registry with thousands of names) uses the same memory as after ten minutes.
"""

from __future__ import annotations

import collections
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from grpcmesh.dashboard.metrics import Rates
from grpcmesh.dashboard.view import EventKind, RegistryEvent

DEFAULT_SECONDS = 600.0
MAX_SERVICES = 500
MAX_INSTANCES = 5000
EVENTS_PER_SERVICE = 100
HEALTH_CHANGES_PER_INSTANCE = 32


@dataclass(frozen=True, slots=True)
class Point:
    at: float
    """Unix time."""
    calls_per_second: float
    error_ratio: float
    p99_seconds: float | None

    def to_json(self) -> list[float | None]:
        p99 = None if self.p99_seconds is None else round(self.p99_seconds, 6)
        return [round(self.at, 3), round(self.calls_per_second, 3), round(self.error_ratio, 4), p99]


@dataclass(frozen=True, slots=True)
class Marker:
    """A registry event drawn on a service's charts."""

    at: float
    kind: str
    """``added``, ``removed``, ``health`` (the health changed) or ``changed`` (anything else)."""
    instance: str
    health: str

    def to_json(self) -> dict[str, Any]:
        return {"at": round(self.at, 3), "kind": self.kind, "instance": self.instance, "health": self.health}


class _ServiceHistory:
    __slots__ = ("markers", "points")

    def __init__(self, points: int) -> None:
        self.points: collections.deque[Point] = collections.deque(maxlen=points)
        self.markers: collections.deque[Marker] = collections.deque(maxlen=EVENTS_PER_SERVICE)

    def last_at(self) -> float:
        latest = [q[-1].at for q in (self.points, self.markers) if q]
        return max(latest, default=-math.inf)


class MeshHistory:
    """Rates per service every ``interval`` seconds over the last ``seconds``, plus events."""

    def __init__(self, seconds: float = DEFAULT_SECONDS, interval: float = 1.0) -> None:
        if seconds <= 0 or interval <= 0:
            raise ValueError("history seconds and interval must be positive")
        self.seconds = seconds
        self._points_per_service = max(2, math.ceil(seconds / interval) + 1)
        self._services: dict[str, _ServiceHistory] = {}
        self._health: dict[tuple[str, str], collections.deque[tuple[float, str]]] = {}

    def _service(self, name: str) -> _ServiceHistory:
        found = self._services.get(name)
        if found is None:
            found = self._services[name] = _ServiceHistory(self._points_per_service)
            if len(self._services) > MAX_SERVICES:  # forget the one quiet for longest
                others = (n for n in self._services if n != name)
                del self._services[min(others, key=lambda n: self._services[n].last_at())]
        return found

    def record(self, at: float, rates: Mapping[str, Rates | None]) -> None:
        """One point per service that has rates; then forget what is older than the window."""
        for name, value in rates.items():
            if value is not None:
                self._service(name).points.append(
                    Point(at, value.calls_per_second, value.error_ratio, value.p99_seconds)
                )
        self.trim(at)

    def note(self, event: RegistryEvent, *, mark: bool = True) -> None:
        """Record a registry event in its instance's health history and, if ``mark``, on its
        service's charts (not for what was already registered when the dashboard started)."""
        inst = event.instance
        health = inst.health.value
        if mark:
            self._service(inst.name).markers.append(Marker(event.at, event.marker, inst.id, health))
        key = (inst.name, inst.id)
        changes = self._health.get(key)
        if changes is None:
            changes = self._health[key] = collections.deque(maxlen=HEALTH_CHANGES_PER_INSTANCE)
            if len(self._health) > MAX_INSTANCES:  # forget the one unchanged for longest
                others = (k for k in self._health if k != key)
                del self._health[min(others, key=lambda k: self._health[k][-1][0] if self._health[k] else -math.inf)]
        if event.kind is EventKind.REMOVED:
            changes.append((event.at, "REMOVED"))
        elif not changes or changes[-1][1] != health:
            changes.append((event.at, health))

    def trim(self, now: float) -> None:
        horizon = now - self.seconds
        for name in list(self._services):
            history = self._services[name]
            while history.points and history.points[0].at < horizon:
                history.points.popleft()
            while history.markers and history.markers[0].at < horizon:
                history.markers.popleft()
            if not history.points and not history.markers:
                del self._services[name]
        for key in list(self._health):
            changes = self._health[key]
            if changes[-1][1] == "REMOVED" and changes[-1][0] < horizon:
                del self._health[key]

    def health_history(self, service: str, instance_id: str) -> list[dict[str, Any]]:
        return [{"at": round(at, 3), "health": health} for at, health in self._health.get((service, instance_id), ())]

    def service_json(self, name: str, *, latest_only: bool = False) -> dict[str, Any]:
        """``points`` (``[unix time, calls/s, error ratio, p99 s]``; only the newest if
        ``latest_only``) and ``markers`` (always all: there are few)."""
        history = self._services.get(name)
        if history is None:
            return {"points": [], "markers": []}
        points = list(history.points)[-1:] if latest_only else history.points
        return {
            "points": [p.to_json() for p in points],
            "markers": [m.to_json() for m in history.markers],
        }

    def sizes(self) -> tuple[int, int, int]:
        """(services, points, instances) held: what the memory benchmark watches."""
        points = sum(len(h.points) + len(h.markers) for h in self._services.values())
        return len(self._services), points, len(self._health)
