"""The traffic generator's statistics (what the demo's summary reports)."""

from __future__ import annotations

import time

import grpc
from shop.traffic import Stats, percentile


class _Failure(grpc.aio.AioRpcError):
    def __init__(self) -> None:
        super().__init__(grpc.StatusCode.UNAVAILABLE, grpc.aio.Metadata(), grpc.aio.Metadata(), "gone")


def test_percentile_is_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 0.5) == 50.0
    assert percentile(values, 0.99) == 99.0
    assert percentile(values, 1.0) == 100.0
    assert percentile([], 0.5) is None


def test_stats_count_calls_failures_and_latency() -> None:
    stats = Stats()
    for latency in (5.0, 1.0, 3.0):
        stats.record("CreateOrder", latency, None)
    stats.record("GetOrder", 9.0, _Failure())
    report = stats.report(time.monotonic() - 1, users=1, orders=2)
    assert report["calls"] == 4
    assert report["failed"] == 1
    assert report["errors"] == {"UNAVAILABLE": 1}
    assert report["by_operation"] == {"CreateOrder": 3, "GetOrder": 1}
    assert report["p50_ms"] == 3.0
    assert report["p99_ms"] == 9.0
    assert "GetOrder: UNAVAILABLE gone" in report["last_error"]
