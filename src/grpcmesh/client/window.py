"""A sliding-window counter in fixed buckets: what throttling and retry budgets count with.

``add(a, b)`` adds to the current bucket; ``totals()`` is the sum over the buckets of the
last ``window`` seconds, kept as running totals (both are O(1) per call on the hot path).
Old buckets are cleared lazily on the next use, so an idle counter costs nothing.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

from grpcmesh.errors import ConfigError


class SlidingWindow:
    """Two running totals over the last ``window`` seconds, in ``buckets`` slices."""

    __slots__ = (
        "_a",
        "_b",
        "_bucket_width",
        "_buckets",
        "_clock",
        "_current",
        "_edge",
        "_slot",
        "_total_a",
        "_total_b",
    )

    def __init__(self, window: float, buckets: int = 20, clock: Callable[[], float] = time.monotonic) -> None:
        if window <= 0 or buckets < 1:
            raise ConfigError(f"window: {window!r}s in {buckets!r} buckets must be > 0s and >= 1 bucket")
        self._bucket_width = window / buckets
        self._buckets = buckets
        self._clock = clock
        self._a = [0.0] * buckets
        self._b = [0.0] * buckets
        self._total_a = 0.0
        self._total_b = 0.0
        self._current = math.floor(clock() / self._bucket_width)
        self._slot = self._current % buckets
        self._edge = (self._current + 1) * self._bucket_width
        """When the current bucket ends: before it, a call only compares (the common case)."""

    def _roll(self, now: float) -> None:
        """The current bucket has ended: clear the buckets that fell out of the window."""
        index = math.floor(now / self._bucket_width)
        if index != self._current:
            stale = min(index - self._current, self._buckets)
            for step in range(1, stale + 1):
                slot = (self._current + step) % self._buckets
                self._total_a -= self._a[slot]
                self._total_b -= self._b[slot]
                self._a[slot] = self._b[slot] = 0.0
            if stale == self._buckets:  # everything expired: drop float drift too
                self._total_a = self._total_b = 0.0
            self._current = index
        self._slot = index % self._buckets
        self._edge = (index + 1) * self._bucket_width

    def add(self, a: float = 0.0, b: float = 0.0, now: float | None = None) -> None:
        """Add to the current bucket; ``now`` is the clock's reading if the caller has one already."""
        if now is None:
            now = self._clock()
        if now >= self._edge:  # most calls fall in the current bucket: a comparison, no call
            self._roll(now)
        slot = self._slot
        self._a[slot] += a
        self._b[slot] += b
        self._total_a += a
        self._total_b += b

    def totals(self, now: float | None = None) -> tuple[float, float]:
        if now is None:
            now = self._clock()
        if now >= self._edge:
            self._roll(now)
        return self._total_a, self._total_b
