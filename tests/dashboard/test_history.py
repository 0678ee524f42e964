"""Unit tests of the dashboard's bounded history: ring buffers, markers, health history, caps."""

from __future__ import annotations

import pytest

from grpcmesh import HealthStatus, ServiceInstance
from grpcmesh.dashboard import history as history_module
from grpcmesh.dashboard.history import MeshHistory
from grpcmesh.dashboard.metrics import Rates
from grpcmesh.dashboard.view import diff_snapshots


def inst(iid: str, name: str = "orders", **extra: object) -> ServiceInstance:
    return ServiceInstance(name=name, id=iid, address="127.0.0.1", port=5000, **extra)


def rates(calls: float) -> Rates:
    return Rates(calls_per_second=calls, error_ratio=0.0, p99_seconds=0.01)


def test_points_are_kept_for_the_window_only() -> None:
    history = MeshHistory(seconds=10, interval=1)
    for t in range(100):
        history.record(1000.0 + t, {"orders": rates(t), "silent": None})
    points = history.service_json("orders")["points"]
    assert [p[0] for p in points] == [1000.0 + t for t in range(89, 100)]  # the last 10 s, both ends
    assert points[-1][1] == 99
    assert history.service_json("orders", latest_only=True)["points"] == [points[-1]]
    assert history.service_json("silent") == {"points": [], "markers": []}


def test_ring_buffer_is_bounded_even_when_time_stands_still() -> None:
    history = MeshHistory(seconds=10, interval=1)
    for _ in range(1000):
        history.record(5.0, {"orders": rates(1)})
    assert len(history.service_json("orders")["points"]) == 11


def test_registry_events_become_markers_and_health_history() -> None:
    history = MeshHistory(seconds=60, interval=1)
    steps = [
        [inst("a")],
        [inst("a", health=HealthStatus.NOT_SERVING)],
        [inst("a", health=HealthStatus.NOT_SERVING, version="v2")],
        [],
    ]
    before: list[ServiceInstance] = []
    for t, after in enumerate(steps):
        for event in diff_snapshots(before, after, at=100.0 + t):
            history.note(event)
        before = after
    markers = history.service_json("orders")["markers"]
    assert [(m["kind"], m["instance"]) for m in markers] == [
        ("added", "a"),
        ("health", "a"),
        ("changed", "a"),
        ("removed", "a"),
    ]
    assert [h["health"] for h in history.health_history("orders", "a")] == ["SERVING", "NOT_SERVING", "REMOVED"]


def test_removed_instances_and_quiet_services_are_forgotten_after_the_window() -> None:
    history = MeshHistory(seconds=10, interval=1)
    for event in diff_snapshots([], [inst("a")], at=0.0) + diff_snapshots([inst("a")], [], at=1.0):
        history.note(event)
    assert history.sizes() == (1, 2, 1)
    history.trim(100.0)
    assert history.sizes() == (0, 0, 0)


def test_services_and_instances_remembered_are_capped(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(history_module, "MAX_SERVICES", 5)
    monkeypatch.setattr(history_module, "MAX_INSTANCES", 7)
    history = MeshHistory(seconds=600, interval=1)
    for n in range(50):
        history.record(float(n), {f"svc-{n}": rates(1)})
        for event in diff_snapshots([], [inst(f"i{n}", name="orders")], at=float(n)):
            history.note(event)
    services, _, instances = history.sizes()
    assert services <= 5
    assert instances <= 7
    # the newest are the ones kept
    assert history.service_json("svc-49")["points"]
    assert history.health_history("orders", "i49")


def test_what_was_registered_before_the_dashboard_started_is_not_marked() -> None:
    history = MeshHistory(seconds=60, interval=1)
    for event in diff_snapshots([], [inst("a")], at=1.0):
        history.note(event, mark=False)
    assert history.service_json("orders")["markers"] == []
    assert [h["health"] for h in history.health_history("orders", "a")] == ["SERVING"]
