"""Outlier detection (grpcmesh.client.outlier) on a fake clock."""

from __future__ import annotations

import grpc
import pytest

from grpcmesh.client.outlier import OutlierDetector, OutlierPolicy, SuccessRatePolicy
from grpcmesh.errors import ConfigError, MeshRpcError


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def error(code: grpc.StatusCode) -> MeshRpcError:
    return MeshRpcError(code, code.name)


def detector(ids: list[str], **policy: object) -> tuple[OutlierDetector, Clock]:
    clock = Clock()
    found = OutlierDetector(OutlierPolicy(**policy), clock)  # type: ignore[arg-type]
    found.update(ids)
    return found, clock


def test_consecutive_deadline_failures_eject_with_doubling_backoff() -> None:
    outliers, clock = detector(["a", "b", "c"], consecutive_failures=3, base_ejection=1.0, max_ejection=3.0)
    deadline = error(grpc.StatusCode.DEADLINE_EXCEEDED)
    assert not outliers.record("a", 1.0, deadline)
    assert not outliers.record("a", 1.0, deadline)
    assert outliers.record("a", 1.0, deadline)
    assert outliers.is_ejected("a")
    assert outliers.ejected_ids() == {"a"}
    clock.now += 1.01
    assert not outliers.is_ejected("a")
    assert outliers.record("a", 1.0, deadline)  # the probe failed: re-ejected at once, for twice as long
    assert outliers.next_unejection(clock.now) == pytest.approx(clock.now + 2.0)
    clock.now += 2.01
    assert outliers.record("a", 1.0, error(grpc.StatusCode.UNAVAILABLE))
    assert outliers.next_unejection(clock.now) == pytest.approx(clock.now + 3.0)  # capped


def test_application_errors_and_cancellations_do_not_count() -> None:
    outliers, _ = detector(["a", "b"], consecutive_failures=2)
    for _ in range(5):
        assert not outliers.record("a", 0.01, error(grpc.StatusCode.NOT_FOUND))
        assert not outliers.record("a", 0.01, error(grpc.StatusCode.CANCELLED))
        assert not outliers.record("a", 0.01, RuntimeError("local"))
    assert not outliers.is_ejected("a")
    assert not outliers.record("a", 0.01, error(grpc.StatusCode.UNAVAILABLE))
    assert not outliers.record("a", 0.01, None)  # a success clears the run
    assert not outliers.record("a", 0.01, error(grpc.StatusCode.UNAVAILABLE))


def test_max_ejection_percent_keeps_part_of_the_service() -> None:
    outliers, _ = detector(["a", "b", "c", "d"], consecutive_failures=1, max_ejection_percent=50)
    unavailable = error(grpc.StatusCode.UNAVAILABLE)
    results = [outliers.record(i, 0.0, unavailable) for i in ("a", "b", "c", "d")]
    assert results == [True, True, False, False]
    single, _ = detector(["only"], consecutive_failures=1, max_ejection_percent=100)
    assert single.record("only", 0.0, unavailable)
    lone, _ = detector(["only"], consecutive_failures=1)
    assert not lone.record("only", 0.0, unavailable)  # 50 % of one endpoint is none


def test_success_rate_ejection_at_interval_end() -> None:
    outliers, clock = detector(
        ["a", "b", "c"],
        consecutive_failures=100,
        success_rate=SuccessRatePolicy(threshold=0.6, request_volume=10, minimum_hosts=2),
        latency_factor=None,
    )
    unavailable = error(grpc.StatusCode.UNAVAILABLE)
    for i in range(20):
        outliers.record("a", 0.01, unavailable if i % 2 else None)  # 50 % success
        outliers.record("b", 0.01, None)
        outliers.record("c", 0.01, None)
    clock.now += 1.0
    assert outliers.evaluate()
    assert outliers.ejected_ids() == {"a"}
    assert not outliers.evaluate()  # counters were reset with the interval


def test_latency_outlier_is_ejected() -> None:
    outliers, clock = detector(["a", "b", "c"], success_rate=None, latency_factor=4.0)
    for _ in range(10):
        outliers.record("a", 0.5, None)
        outliers.record("b", 0.01, None)
        outliers.record("c", 0.012, None)
    assert outliers.evaluate(clock.now + 1)
    assert outliers.ejected_ids() == {"a"}


def test_endpoint_set_changes_keep_state_of_those_that_stay() -> None:
    outliers, _ = detector(["a", "b", "c"], consecutive_failures=1)
    assert outliers.record("a", 0.0, error(grpc.StatusCode.UNAVAILABLE))
    outliers.update(["a", "b", "d"])
    assert outliers.is_ejected("a")
    assert outliers.health("c") is None
    assert not outliers.record("gone", 0.0, None)


@pytest.mark.parametrize(
    "bad",
    [
        {"consecutive_failures": 0},
        {"base_ejection": 0.0},
        {"base_ejection": 5.0, "max_ejection": 1.0},
        {"max_ejection_percent": 101},
        {"interval": 0.0},
        {"latency_factor": 1.0},
    ],
)
def test_bad_policies_are_config_errors(bad: dict[str, float]) -> None:
    with pytest.raises(ConfigError):
        OutlierPolicy(**bad)  # type: ignore[arg-type]


def test_an_endpoint_whose_ejection_ended_is_on_probation_until_a_success() -> None:
    outliers, clock = detector(["a", "b", "c"], consecutive_failures=1, base_ejection=1.0)
    assert outliers.record("a", 0.0, error(grpc.StatusCode.DEADLINE_EXCEEDED))
    assert not outliers.on_probation("a", clock.now)  # ejected, not yet on probation
    clock.now += 1.5
    assert outliers.on_probation("a", clock.now)
    assert not outliers.on_probation("b", clock.now)
    outliers.record("a", 0.01, None)
    assert not outliers.on_probation("a", clock.now)


def test_streaking_counts_the_endpoints_a_pick_must_check_for_probation() -> None:
    """The channel skips ``on_probation`` while ``streaking`` is 0, so it must never miss one."""
    outliers, clock = detector(["a", "b", "c"], consecutive_failures=1, base_ejection=1.0, max_ejection_percent=100)
    assert outliers.streaking == 0
    assert outliers.record("a", 0.0, error(grpc.StatusCode.UNAVAILABLE))
    assert outliers.record("b", 0.0, error(grpc.StatusCode.DEADLINE_EXCEEDED))
    assert outliers.streaking == 2
    clock.now += 1.5
    outliers.record("a", 0.01, error(grpc.StatusCode.NOT_FOUND))  # an answer: a success for the endpoint
    assert outliers.streaking == 1
    assert not outliers.on_probation("a", clock.now)
    outliers.update(["b", "c"])  # "a" left; "b" keeps its record
    assert outliers.streaking == 1
    assert outliers.on_probation("b", clock.now)
    outliers.record("b", 0.01, None)
    assert outliers.streaking == 0
