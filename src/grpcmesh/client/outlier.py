"""Outlier detection: take hung, failing or slow endpoints out of balancing for a while.

In the manner of gRPC's outlier detection (gRFC A50) and Envoy's: an endpoint is ejected

* at once after ``consecutive_failures`` gateway failures in a row — the request never left
  (connection refused), UNAVAILABLE, or DEADLINE_EXCEEDED (a frozen or hung peer);
* at the end of an ``interval`` in which its success rate was below ``success_rate.threshold``
  over at least ``success_rate.request_volume`` calls (A50's failure-percentage ejection);
* at the end of an ``interval`` in which its mean latency was over ``latency_factor`` times
  the median of the endpoints' means (a slow instance whose calls still succeed).

An ejection lasts ``base_ejection_time`` * 2^(ejections in a row), capped at
``max_ejection_time``; afterwards the endpoint is on probation — offered one call at a
time — and one more failure re-ejects it at once, while a success clears its record. At most ``max_ejection_percent``
of the endpoints are ejected at any time, so a whole service is never taken away by its
own clients. Application errors (NOT_FOUND, INVALID_ARGUMENT...) and calls the client
rejected itself say nothing about an endpoint and are not counted.
"""

from __future__ import annotations

import logging
import math
import statistics
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import grpc

from grpcmesh.errors import ConfigError

log = logging.getLogger("grpcmesh.client")

GATEWAY_FAILURES = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED})
"""Status codes that say something about the endpoint (as Envoy's consecutive gateway failures)."""


@dataclass(frozen=True)
class SuccessRatePolicy:
    """Eject an endpoint whose success rate over an interval fell below ``threshold``."""

    threshold: float = 0.5
    request_volume: int = 10
    """Calls an endpoint must have had in the interval for its rate to count."""
    minimum_hosts: int = 2
    """Endpoints with that volume needed before any is judged (one endpoint has nobody to compare to)."""

    def __post_init__(self) -> None:
        if not 0.0 <= self.threshold <= 1.0:
            raise ConfigError(f"outlier.success_rate.threshold: {self.threshold!r} must be from 0.0 to 1.0")
        if self.request_volume < 1 or self.minimum_hosts < 1:
            raise ConfigError("outlier.success_rate: request_volume and minimum_hosts must be >= 1")


@dataclass(frozen=True)
class OutlierPolicy:
    """When and for how long endpoints are ejected (see the module docstring)."""

    consecutive_failures: int = 3
    base_ejection: float = 1.0
    max_ejection: float = 30.0
    max_ejection_percent: int = 50
    interval: float = 1.0
    success_rate: SuccessRatePolicy | None = field(default_factory=SuccessRatePolicy)
    latency_factor: float | None = 5.0
    """None disables latency ejection."""
    latency_minimum_hosts: int = 3
    latency_request_volume: int = 10

    def __post_init__(self) -> None:
        if self.consecutive_failures < 1:
            raise ConfigError(f"outlier.consecutive_failures: {self.consecutive_failures!r} must be >= 1")
        if not 0 < self.base_ejection <= self.max_ejection:
            raise ConfigError(
                f"outlier.base_ejection_time: {self.base_ejection!r} must be > 0 and <= max_ejection_time "
                f"({self.max_ejection!r})"
            )
        if not 0 <= self.max_ejection_percent <= 100:
            raise ConfigError(f"outlier.max_ejection_percent: {self.max_ejection_percent!r} must be from 0 to 100")
        if self.interval <= 0:
            raise ConfigError(f"outlier.interval: {self.interval!r} must be > 0 seconds")
        if self.latency_factor is not None and self.latency_factor <= 1.0:
            raise ConfigError(f"outlier.latency_factor: {self.latency_factor!r} must be > 1 (or null to disable)")


@dataclass
class EndpointHealth:
    """What outlier detection knows about one endpoint."""

    consecutive_failures: int = 0
    ejected_until: float = 0.0
    ejections: int = 0
    streak: int = 0
    """Ejections since the last success: the back-off exponent."""
    interval_calls: int = 0
    interval_failures: int = 0
    interval_latency: float = 0.0

    def ejected(self, now: float) -> bool:
        return now < self.ejected_until


class OutlierDetector:
    """Outlier state for one channel's endpoints, keyed by endpoint id.

    The channel reports every attempt with :meth:`record` and asks :meth:`evaluate` when its
    ``next_evaluation`` time has come; both return True when the ejected set changed, so the
    channel rebalances only then.
    """

    def __init__(self, policy: OutlierPolicy | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        self.policy = policy or OutlierPolicy()
        self._clock = clock
        self._health: dict[str, EndpointHealth] = {}
        self.next_evaluation = clock() + self.policy.interval
        self.streaking = 0
        """How many endpoints were ejected and have not succeeded since (0: no pick needs
        :meth:`on_probation`, the common case)."""

    def update(self, endpoint_ids: Iterable[str]) -> None:
        """The endpoint set changed: keep the records of endpoints that stay."""
        self._health = {i: self._health.get(i) or EndpointHealth() for i in endpoint_ids}
        self.streaking = sum(1 for h in self._health.values() if h.streak)

    def health(self, endpoint_id: str) -> EndpointHealth | None:
        return self._health.get(endpoint_id)

    def is_ejected(self, endpoint_id: str, now: float | None = None) -> bool:
        found = self._health.get(endpoint_id)
        return found is not None and found.ejected(self._clock() if now is None else now)

    def on_probation(self, endpoint_id: str, now: float) -> bool:
        """True for an endpoint whose ejection ended but which has not succeeded since: it gets
        one call at a time, so a still-hung endpoint fails one probe, not a burst of calls."""
        found = self._health.get(endpoint_id)
        return found is not None and found.streak > 0 and not found.ejected(now)

    def ejected_ids(self, now: float | None = None) -> set[str]:
        moment = self._clock() if now is None else now
        return {i for i, h in self._health.items() if h.ejected(moment)}

    def next_unejection(self, now: float) -> float:
        return min((h.ejected_until for h in self._health.values() if h.ejected(now)), default=math.inf)

    def _may_eject(self, now: float) -> bool:
        total = len(self._health)
        allowed = math.floor(total * self.policy.max_ejection_percent / 100)
        return len(self.ejected_ids(now)) < allowed

    def _eject(self, endpoint_id: str, health: EndpointHealth, now: float, reason: str) -> bool:
        if health.ejected(now) or not self._may_eject(now):
            return False
        policy = self.policy
        duration = min(policy.max_ejection, policy.base_ejection * (2**health.streak))
        if not health.streak:
            self.streaking += 1
        health.streak += 1
        health.ejections += 1
        health.ejected_until = now + duration
        # One more failure after the ejection ends re-ejects at once (the probe failed).
        health.consecutive_failures = policy.consecutive_failures - 1
        log.warning("ejected endpoint %s for %.1fs: %s", endpoint_id, duration, reason)
        return True

    def record(self, endpoint_id: str, latency: float, error: BaseException | None, now: float | None = None) -> bool:
        """Count one attempt's outcome; True if it ejected the endpoint (``now``: the clock's reading, if known)."""
        health = self._health.get(endpoint_id)
        if health is None:
            return False
        if error is not None and (
            not isinstance(error, grpc.aio.AioRpcError) or error.code() is grpc.StatusCode.CANCELLED
        ):
            return False  # cancelled by the caller, or a local error: says nothing about the endpoint
        failed = error is not None and error.code() in GATEWAY_FAILURES  # (a success hashes no code)
        health.interval_calls += 1
        health.interval_latency += latency
        if not failed:
            health.consecutive_failures = 0
            if health.streak and not health.ejected(self._clock() if now is None else now):
                health.streak = 0
                self.streaking -= 1
            return False
        if now is None:
            now = self._clock()
        health.interval_failures += 1
        health.consecutive_failures += 1
        if health.consecutive_failures < self.policy.consecutive_failures:
            return False
        code = error.code().name if isinstance(error, grpc.aio.AioRpcError) else "error"
        return self._eject(
            endpoint_id, health, now, f"{self.policy.consecutive_failures} consecutive failures (last {code})"
        )

    def record_connect_failure(self, endpoint_id: str) -> bool:
        """A connection attempt failed (nothing was sent): a gateway failure."""
        health = self._health.get(endpoint_id)
        if health is None:
            return False
        health.consecutive_failures += 1
        health.interval_calls += 1
        health.interval_failures += 1
        if health.consecutive_failures < self.policy.consecutive_failures:
            return False
        return self._eject(endpoint_id, health, self._clock(), "consecutive connection failures")

    def evaluate(self, now: float | None = None) -> bool:
        """End the current interval: success-rate and latency ejections; True if any happened."""
        moment = self._clock() if now is None else now
        self.next_evaluation = moment + self.policy.interval
        changed = self._evaluate_success_rate(moment) | self._evaluate_latency(moment)
        for health in self._health.values():
            health.interval_calls = health.interval_failures = 0
            health.interval_latency = 0.0
        return changed

    def _evaluate_success_rate(self, now: float) -> bool:
        policy = self.policy.success_rate
        if policy is None:
            return False
        judged = [(i, h) for i, h in self._health.items() if h.interval_calls >= policy.request_volume]
        if len(judged) < policy.minimum_hosts:
            return False
        changed = False
        for endpoint_id, health in sorted(judged, key=lambda item: item[1].interval_failures, reverse=True):
            rate = 1.0 - health.interval_failures / health.interval_calls
            if rate < policy.threshold:
                changed |= self._eject(endpoint_id, health, now, f"success rate {rate:.0%} over the last interval")
        return changed

    def _evaluate_latency(self, now: float) -> bool:
        factor = self.policy.latency_factor
        if factor is None:
            return False
        means = {
            i: h.interval_latency / h.interval_calls
            for i, h in self._health.items()
            if h.interval_calls >= self.policy.latency_request_volume
        }
        if len(means) < self.policy.latency_minimum_hosts:
            return False
        median = statistics.median(means.values())
        changed = False
        for endpoint_id, mean in sorted(means.items(), key=lambda item: item[1], reverse=True):
            if median > 0 and mean > factor * median:
                changed |= self._eject(
                    endpoint_id,
                    self._health[endpoint_id],
                    now,
                    f"mean latency {mean * 1000:.0f}ms is over {factor:g}x the median ({median * 1000:.0f}ms)",
                )
        return changed
