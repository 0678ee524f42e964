"""A sliding-window counter in fixed buckets: what throttling and retry budgets count with.

``add(a, b)`` adds to the current bucket; ``totals()`` sums the buckets of the last
``window`` seconds. Old buckets are cleared lazily on the next use, so an idle counter
costs nothing.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

from grpcmesh.errors import ConfigError


class SlidingWindow:
    """Two running totals over the last ``window`` seconds, in ``buckets`` slices."""

    __slots__ = ("_a", "_b", "_bucket_width", "_buckets", "_clock", "_current")

    def __init__(self, window: float, buckets: int = 20, clock: Callable[[], float] = time.monotonic) -> None:
        if window <= 0 or buckets < 1:
            raise ConfigError(f"window: {window!r}s in {buckets!r} buckets must be > 0s and >= 1 bucket")
        self._bucket_width = window / buckets
        self._buckets = buckets
        self._clock = clock
        self._a = [0.0] * buckets
        self._b = [0.0] * buckets
        self._current = math.floor(clock() / self._bucket_width)

    def _advance(self) -> int:
        index = math.floor(self._clock() / self._bucket_width)
        if index != self._current:
            stale = min(index - self._current, self._buckets)
            for step in range(1, stale + 1):
                slot = (self._current + step) % self._buckets
                self._a[slot] = self._b[slot] = 0.0
            self._current = index
        return index % self._buckets

    def add(self, a: float = 0.0, b: float = 0.0) -> None:
        slot = self._advance()
        self._a[slot] += a
        self._b[slot] += b

    def totals(self) -> tuple[float, float]:
        self._advance()
        return sum(self._a), sum(self._b)
