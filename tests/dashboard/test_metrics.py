"""Unit tests of the metric-delta computations (pure functions, real prometheus_client expositions)."""

from __future__ import annotations

import math

import pytest
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

from grpcmesh.dashboard.metrics import (
    MetricsSample,
    Window,
    combine,
    histogram_quantile,
    parse_sample,
    summarize,
    window_between,
)

LABELS = ["grpc_service", "grpc_method", "grpc_type"]
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)


class FakeServer:
    """A prometheus_client registry with the mesh's server metrics, and a way to record calls."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.handled = Counter("grpc_server_handled_total", "h", [*LABELS, "grpc_code"], registry=self.registry)
        self.seconds = Histogram("grpc_server_handling_seconds", "s", LABELS, buckets=BUCKETS, registry=self.registry)

    def record(
        self, n: int, seconds: float, code: str = "OK", service: str = "shop.Orders", method: str = "Get"
    ) -> None:
        for _ in range(n):
            self.handled.labels(service, method, "unary", code).inc()
            self.seconds.labels(service, method, "unary").observe(seconds)

    def sample(self, at: float) -> MetricsSample:
        return parse_sample(generate_latest(self.registry).decode(), at)


def test_parse_picks_only_the_grpc_server_series() -> None:
    server = FakeServer()
    Counter("unrelated_total", "u", registry=server.registry).inc(5)
    server.record(3, 0.02)
    sample = server.sample(10.0)
    assert sum(sample.handled.values()) == 3
    assert all(dict(key)["grpc_code"] == "OK" for key in sample.handled)
    bounds = {float(dict(key)["le"]) for key in sample.buckets}
    assert bounds == {*BUCKETS, math.inf}


def test_parse_ignores_health_and_reflection_traffic() -> None:
    server = FakeServer()
    server.record(7, 0.001, service="grpc.health.v1.Health", method="Check")
    server.record(2, 0.01)
    sample = server.sample(1.0)
    assert sum(sample.handled.values()) == 2


def test_parse_rejects_garbage() -> None:
    with pytest.raises(ValueError):
        parse_sample("this is { not prometheus", 0.0)


def test_calls_and_errors_per_second_from_deltas() -> None:
    server = FakeServer()
    server.record(100, 0.01)  # before the first sample: must not count
    first = server.sample(100.0)
    server.record(30, 0.01)
    server.record(10, 0.01, code="UNAVAILABLE")
    server.record(10, 0.01, code="INTERNAL", method="Put")
    window = window_between(first, server.sample(102.0))
    assert window.calls_per_second == pytest.approx(25.0)  # 50 calls in 2 s
    assert window.errors_per_second == pytest.approx(10.0)
    rates = summarize(window)
    assert rates.error_ratio == pytest.approx(0.4)


def test_no_traffic_means_zero_rate_and_no_p99() -> None:
    server = FakeServer()
    server.record(5, 0.01)
    first = server.sample(0.0)
    rates = summarize(window_between(first, server.sample(1.0)))
    assert rates.calls_per_second == 0
    assert rates.error_ratio == 0
    assert rates.p99_seconds is None


def test_counter_reset_counts_the_new_value_as_the_increase() -> None:
    before = FakeServer()
    before.record(500, 0.01)
    first = before.sample(0.0)
    restarted = FakeServer()  # the process restarted: counters start again from zero
    restarted.record(8, 0.01)
    window = window_between(first, restarted.sample(2.0))
    assert window.calls_per_second == pytest.approx(4.0)


def test_samples_out_of_order_are_rejected() -> None:
    server = FakeServer()
    with pytest.raises(ValueError, match="time order"):
        window_between(server.sample(5.0), server.sample(5.0))


def test_p99_comes_from_the_window_not_from_history() -> None:
    server = FakeServer()
    server.record(1000, 0.9)  # slow calls long ago
    first = server.sample(0.0)
    server.record(100, 0.003)  # only fast calls in this window
    rates = summarize(window_between(first, server.sample(1.0)))
    assert rates.p99_seconds is not None
    assert rates.p99_seconds <= 0.005


def test_p99_interpolates_inside_the_bucket() -> None:
    server = FakeServer()
    first = server.sample(0.0)
    server.record(90, 0.003)  # bucket le=0.005
    server.record(10, 0.07)  # bucket le=0.1
    rates = summarize(window_between(first, server.sample(1.0)))
    # rank 99 of 100 is the 9th of 10 observations in (0.05, 0.1]: 0.05 + 0.05 * 9/10
    assert rates.p99_seconds == pytest.approx(0.095)


def test_histogram_quantile_edge_cases() -> None:
    assert histogram_quantile(0.99, {}) is None
    assert histogram_quantile(0.99, {0.1: 0.0, math.inf: 0.0}) is None
    # everything above the largest finite bound: the best known answer is that bound
    assert histogram_quantile(0.99, {0.1: 0.0, 1.0: 0.0, math.inf: 5.0}) == 1.0
    # first bucket interpolates from zero
    assert histogram_quantile(0.5, {0.2: 10.0, math.inf: 10.0}) == pytest.approx(0.1)
    # a non-monotonic input (a partial reset) is treated as cumulative, never negative
    assert histogram_quantile(0.5, {0.1: 10.0, 0.2: 4.0, math.inf: 10.0}) == pytest.approx(0.05)
    with pytest.raises(ValueError):
        histogram_quantile(1.5, {1.0: 1.0})


def test_service_rates_combine_instance_windows() -> None:
    fast, slow = FakeServer(), FakeServer()
    fast_first, slow_first = fast.sample(0.0), slow.sample(0.0)
    fast.record(98, 0.003)
    slow.record(2, 0.7, code="DEADLINE_EXCEEDED")
    windows = [window_between(fast_first, fast.sample(1.0)), window_between(slow_first, slow.sample(1.0))]
    total = combine(windows)
    assert total is not None
    rates = summarize(total)
    assert rates.calls_per_second == pytest.approx(100.0)
    assert rates.error_ratio == pytest.approx(0.02)
    assert rates.p99_seconds is not None
    assert 0.5 < rates.p99_seconds <= 1.0  # the slow instance's calls are the top 2 %
    assert combine([]) is None
    assert (Window(1.0, 0.0, {1.0: 1.0}) + Window(2.0, 1.0, {1.0: 2.0})).bucket_rates == {1.0: 3.0}
