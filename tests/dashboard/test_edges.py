"""Unit tests of the observed-edge math: client series per caller→callee, declared-only edges,
the external node (real prometheus_client expositions from the mesh's own metric families)."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from grpcmesh.dashboard.edges import EXTERNAL, build_edges
from grpcmesh.dashboard.metrics import MetricsSample, Window, edge_windows_between, parse_sample
from grpcmesh.middleware.metrics import GrpcMetrics


class Process:
    """One mesh process's metrics, recorded through the mesh's own ``GrpcMetrics`` families."""

    def __init__(self, service: str) -> None:
        self.service = service
        self.metrics = GrpcMetrics.of(CollectorRegistry())

    def call(self, callee: str, n: int, seconds: float, code: str = "OK") -> None:
        labels = (f"shop.{callee}", "Get", "unary", self.service, callee)
        for _ in range(n):
            self.metrics.client_handled.child(*labels, code).inc()
            self.metrics.client_handling.child(*labels).observe(seconds)

    def serve(self, n: int, code: str = "OK") -> None:
        for _ in range(n):
            self.metrics.server_handled.child(f"shop.{self.service}", "Get", "unary", code).inc()
            self.metrics.server_handling.child(f"shop.{self.service}", "Get", "unary").observe(0.01)

    def sample(self, at: float) -> MetricsSample:
        return parse_sample(generate_latest(self.metrics.registry).decode(), at)


def test_client_series_give_one_window_per_caller_callee_pair() -> None:
    order = Process("order-service")
    order.call("payment-service", 1, 0.01)  # before the first sample: not counted
    first = order.sample(0.0)
    order.call("payment-service", 18, 0.003)
    order.call("payment-service", 2, 0.4, code="UNAVAILABLE")
    order.call("user-service", 10, 0.002)
    windows = edge_windows_between(first, order.sample(2.0))
    assert set(windows) == {("order-service", "payment-service"), ("order-service", "user-service")}
    payment = windows["order-service", "payment-service"]
    assert payment.calls_per_second == pytest.approx(10.0)
    assert payment.errors_per_second == pytest.approx(1.0)
    edges = {
        (e.source, e.target): e
        for e in build_edges({"order-service", "payment-service", "user-service"}, [], windows, {})
    }
    rates = edges["order-service", "payment-service"].rates
    assert rates is not None
    assert rates.error_ratio == pytest.approx(0.1)
    # the 2 slow calls are the top 10 %: p99 falls in the (0.25, 0.5] bucket
    assert rates.p99_seconds is not None
    assert 0.25 < rates.p99_seconds <= 0.5


def test_a_pair_seen_but_idle_is_observed_with_zero_rate() -> None:
    order = Process("order-service")
    order.call("user-service", 3, 0.002)
    first = order.sample(0.0)
    windows = edge_windows_between(first, order.sample(1.0))
    (edge,) = build_edges({"order-service", "user-service"}, [], windows, {})
    assert edge.observed
    assert edge.rates is not None
    assert edge.rates.calls_per_second == 0


def test_instances_of_one_caller_add_up_and_declared_only_edges_stay_dashed() -> None:
    windows = {("order-service", "payment-service"): Window(4.0, 0.0)}
    more = {("order-service", "payment-service"): Window(6.0, 1.0)}
    merged = {k: windows[k] + more[k] for k in windows}
    edges = build_edges(
        {"order-service", "payment-service", "notification-service"},
        [("order-service", "payment-service"), ("order-service", "notification-service")],
        merged,
        {},
    )
    by_pair = {(e.source, e.target): e for e in edges}
    paid = by_pair["order-service", "payment-service"]
    assert (paid.declared, paid.observed) == (True, True)
    assert paid.rates is not None
    assert paid.rates.calls_per_second == 10.0
    notified = by_pair["order-service", "notification-service"]
    assert (notified.declared, notified.observed, notified.rates) == (True, False, None)


def test_external_callers_are_what_the_server_served_beyond_the_mesh_callers() -> None:
    known = {"user-service", "order-service"}
    observed = {("user-service", "order-service"): Window(5.0, 0.0)}
    served = {"order-service": Window(15.0, 2.0), "user-service": Window(8.0, 0.0)}
    by_pair = {(e.source, e.target): e for e in build_edges(known, [], observed, served)}
    external_order = by_pair[EXTERNAL, "order-service"].rates
    assert external_order is not None
    assert external_order.calls_per_second == pytest.approx(10.0)
    assert external_order.error_ratio == pytest.approx(0.2)
    assert external_order.p99_seconds is None  # server latency is not the outside caller's
    external_user = by_pair[EXTERNAL, "user-service"].rates
    assert external_user is not None
    assert external_user.calls_per_second == pytest.approx(8.0)


def test_scrape_timing_noise_draws_no_external_edge() -> None:
    observed = {("user-service", "order-service"): Window(10.0, 0.0)}
    served = {"order-service": Window(10.9, 0.0)}  # 9 % more than the client saw: jitter, not a caller
    edges = build_edges({"user-service", "order-service"}, [], observed, served)
    assert [(e.source, e.target) for e in edges] == [("user-service", "order-service")]


def test_labels_naming_unknown_services_draw_nothing_of_their_own() -> None:
    """A ``callee`` outside the mesh is dropped; a ``caller`` outside it (a CLI, "" for a process
    with no mesh service) is never its own node: its calls show up as external."""
    observed = {
        ("order-service", "somewhere-else"): Window(3.0, 0.0),
        ("", "order-service"): Window(2.0, 0.0),
        ("<script>", "order-service"): Window(2.0, 0.0),
    }
    served = {"order-service": Window(4.0, 0.0)}
    edges = build_edges({"order-service"}, [], observed, served)
    assert [(e.source, e.target) for e in edges] == [(EXTERNAL, "order-service")]
