"""Client-side adaptive throttling (Google SRE book, ch. 21; Kratos aegis, go-zero breaker).

Per service, over a sliding window, the client counts the calls it wanted to make
(``requests``) and those the backend accepted (``accepts``: answered with anything but an
overload or unavailability status). While the backend accepts everything, nothing is
rejected. Once ``requests`` exceeds ``k * accepts``, each new call is rejected locally with
probability ``(requests - k * accepts) / (requests + 1)``, with UNAVAILABLE and without being
sent — so an overloaded or broken backend sheds its clients' load at the source, yet keeps
receiving enough traffic to show it has recovered. Local rejections count as requests (that
is what makes the probability rise) but never as failures of any endpoint.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass

import grpc

from grpcmesh.client.window import SlidingWindow
from grpcmesh.errors import ConfigError

NOT_ACCEPTED = frozenset(
    {
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.INTERNAL,
        grpc.StatusCode.DATA_LOSS,
    }
)
"""Statuses that mean the backend did not do the work (go-zero's list, less UNIMPLEMENTED)."""


@dataclass(frozen=True)
class ThrottlePolicy:
    """``k`` is the SRE book's K (2 is lenient, 1.1 aggressive); ``minimum_requests`` avoids judging on a handful."""

    enabled: bool = True
    k: float = 1.5
    window: float = 10.0
    minimum_requests: int = 20

    def __post_init__(self) -> None:
        if self.k < 1.0:
            raise ConfigError(f"throttle.k: {self.k!r} must be >= 1 (1.5 rejects once a third of calls fail)")
        if self.window <= 0:
            raise ConfigError(f"throttle.window: {self.window!r} must be > 0 seconds")
        if self.minimum_requests < 0:
            raise ConfigError(f"throttle.minimum_requests: {self.minimum_requests!r} must be >= 0")


class AdaptiveThrottle:
    """One service's throttle: ask :meth:`allow` before sending, :meth:`record` the outcome."""

    def __init__(
        self,
        policy: ThrottlePolicy | None = None,
        clock: Callable[[], float] = time.monotonic,
        rng: Callable[[], float] = random.random,
    ) -> None:
        self.policy = policy or ThrottlePolicy()
        self._window = SlidingWindow(self.policy.window, 40, clock)  # counts (requests, accepts)
        self._rng = rng
        self.rejected = 0

    def rejection_probability(self, now: float | None = None) -> float:
        requests, accepts = self._window.totals(now)
        if requests < self.policy.minimum_requests:
            return 0.0
        return max(0.0, (requests - self.policy.k * accepts) / (requests + 1))

    def allow(self, now: float | None = None) -> bool:
        """Whether to send the next call; a False counts as a request that was not accepted.

        ``now`` (here and in :meth:`record`): the clock's reading, when the caller has one already.
        """
        policy = self.policy
        if not policy.enabled:
            return True
        requests, accepts = self._window.totals(now)
        if requests < policy.minimum_requests or requests <= policy.k * accepts:
            return True  # the common case: the backend accepts (almost) everything
        probability = (requests - policy.k * accepts) / (requests + 1)
        if self._rng() < probability:
            self._window.add(1.0, 0.0, now)
            self.rejected += 1
            return False
        return True

    def record(self, code: grpc.StatusCode | None, now: float | None = None) -> None:
        """A sent call ended with ``code`` (None: cancelled by the caller, not counted)."""
        if code is None or not self.policy.enabled:
            return
        accepted = code is grpc.StatusCode.OK or code not in NOT_ACCEPTED  # OK: no enum hash
        self._window.add(1.0, 1.0 if accepted else 0.0, now)
