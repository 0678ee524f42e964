"""Adaptive throttling and the retry budget on a fake clock."""

from __future__ import annotations

import grpc
import pytest

from grpcmesh.client.retry_budget import RetryBudget, RetryBudgetPolicy
from grpcmesh.client.throttle import AdaptiveThrottle, ThrottlePolicy
from grpcmesh.client.window import SlidingWindow
from grpcmesh.errors import ConfigError


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_sliding_window_forgets_old_buckets() -> None:
    clock = Clock()
    window = SlidingWindow(10.0, 10, clock)
    window.add(1, 2)
    clock.now += 5
    window.add(1, 0)
    assert window.totals() == (2, 2)
    clock.now += 5.5
    assert window.totals() == (1, 0)
    clock.now += 100
    assert window.totals() == (0, 0)


def test_throttle_never_rejects_a_healthy_backend() -> None:
    throttle = AdaptiveThrottle(ThrottlePolicy(k=1.5, minimum_requests=0), Clock(), rng=lambda: 0.0)
    for _ in range(1000):
        assert throttle.allow()
        throttle.record(grpc.StatusCode.OK)
    assert throttle.rejection_probability() == 0.0
    throttle.record(grpc.StatusCode.NOT_FOUND)  # an application error is an accepted request
    assert throttle.rejection_probability() == 0.0


def test_throttle_rejects_in_proportion_once_the_backend_fails() -> None:
    clock = Clock()
    throttle = AdaptiveThrottle(ThrottlePolicy(k=1.5, minimum_requests=20), clock, rng=lambda: 0.5)
    for _ in range(100):
        throttle.record(grpc.StatusCode.UNAVAILABLE)
    assert throttle.rejection_probability() == pytest.approx(100 / 101)
    assert not throttle.allow()
    assert throttle.rejected == 1
    clock.now += 11  # the window forgets; a recovered backend is trusted again
    assert throttle.allow()
    disabled = AdaptiveThrottle(ThrottlePolicy(enabled=False), clock, rng=lambda: 0.0)
    for _ in range(100):
        disabled.record(grpc.StatusCode.UNAVAILABLE)
    assert disabled.allow()


def test_throttle_ratio_settles_where_the_sre_formula_says() -> None:
    """With half the calls failing and k=1.5, P(reject) = (r - 1.5 * r/2) / (r+1) ~ 0.25."""
    clock = Clock()
    throttle = AdaptiveThrottle(ThrottlePolicy(k=1.5), clock, rng=lambda: 0.99)
    for i in range(400):
        throttle.record(grpc.StatusCode.OK if i % 2 else grpc.StatusCode.UNAVAILABLE)
    assert throttle.rejection_probability() == pytest.approx(0.25, abs=0.01)


def test_retry_budget_is_a_floor_or_a_ratio_whichever_is_larger() -> None:
    clock = Clock()
    budget = RetryBudget(RetryBudgetPolicy(ratio=0.2, minimum_per_second=1.0, window=10.0), clock)
    assert sum(budget.try_retry() for _ in range(50)) == 10  # the floor: 1/s over 10 s
    assert budget.denied == 40
    for _ in range(100):
        budget.request()
    assert sum(budget.try_retry() for _ in range(50)) == 10  # 20 % of 100 = 20 in all
    clock.now += 10.5
    for _ in range(1000):
        budget.request()
    assert sum(budget.try_retry() for _ in range(500)) == 200


def test_bad_throttle_and_budget_policies_are_config_errors() -> None:
    with pytest.raises(ConfigError):
        ThrottlePolicy(k=0.5)
    with pytest.raises(ConfigError):
        RetryBudgetPolicy(ratio=2.0)
    with pytest.raises(ConfigError):
        SlidingWindow(0.0)


def test_throttled_calls_and_denied_retries_are_exported_per_service() -> None:
    from prometheus_client import CollectorRegistry, generate_latest

    from grpcmesh.client.channel import ChannelStats
    from grpcmesh.middleware.metrics import ChannelStatsCollector

    def stats(service: str, throttled: int, denied: int) -> ChannelStats:
        return ChannelStats(service, "no filter", "round_robin", 2, 0, 0, 0, 0, 0, (), 0, throttled, denied)

    registry = CollectorRegistry()
    registry.register(ChannelStatsCollector(lambda: [stats("orders", 3, 1), stats("orders", 2, 0)]))
    text = generate_latest(registry).decode()
    assert 'grpcmesh_client_throttled_total{service="orders"} 5.0' in text
    assert 'grpcmesh_client_retries_denied_total{service="orders"} 1.0' in text
