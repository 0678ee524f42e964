"""A retry budget (Finagle's ``RetryBudget``): retries may add only a fraction to the load.

Every call deposits ``ratio`` of a retry; every retry withdraws one. Over the last
``window`` seconds, retries may reach ``ratio * requests`` or ``minimum_per_second *
window``, whichever is larger — so a healthy service with the odd failure always gets its
retries, while a backend failing half its calls receives at most ``1 + ratio`` times the
offered calls instead of doubling its load. The defaults are Finagle's (20 %, 10/s, 10 s).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from grpcmesh.client.window import SlidingWindow
from grpcmesh.errors import ConfigError


@dataclass(frozen=True)
class RetryBudgetPolicy:
    ratio: float = 0.2
    minimum_per_second: float = 10.0
    window: float = 10.0

    def __post_init__(self) -> None:
        if not 0.0 <= self.ratio <= 1.0:
            raise ConfigError(f"retry_budget.ratio: {self.ratio!r} must be from 0.0 to 1.0")
        if self.minimum_per_second < 0:
            raise ConfigError(f"retry_budget.minimum_per_second: {self.minimum_per_second!r} must be >= 0")
        if self.window <= 0:
            raise ConfigError(f"retry_budget.window: {self.window!r} must be > 0 seconds")


class RetryBudget:
    """Count calls with :meth:`request`; ask :meth:`try_retry` before each retry."""

    def __init__(self, policy: RetryBudgetPolicy | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        self.policy = policy or RetryBudgetPolicy()
        self._window = SlidingWindow(self.policy.window, 20, clock)  # counts (requests, retries)
        self._floor = self.policy.minimum_per_second * self.policy.window
        self.denied = 0

    def request(self, now: float | None = None) -> None:
        """A call (not a retry) was made (``now``: the clock's reading, if the caller has one)."""
        self._window.add(1.0, 0.0, now)

    def try_retry(self) -> bool:
        """True (and the retry counted) if the budget allows one more retry now."""
        requests, retries = self._window.totals()
        if retries + 1 > max(self._floor, self.policy.ratio * requests):
            self.denied += 1
            return False
        self._window.add(0.0, 1.0)
        return True
