"""Consul's blocking-query loop, following its "Implementation Details".

The ``X-Consul-Index`` of each answer is the next ``index``; an index that goes backwards
resets the loop to ``0``; an index below ``1`` is raised to ``1`` so the next query blocks; a
token bucket rate-limits the loop when results churn. Errors end :func:`follow_blocking`:
the registry's :class:`~grpcmesh.registry._hub.WatchHub` logs them, backs off and reads afresh.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping

from grpcmesh.registry._hub import Topic
from grpcmesh.registry.base import Snapshot

__all__ = ["TokenBucket", "follow_blocking", "index_of", "next_index"]

log = logging.getLogger("grpcmesh.registry.consul")

Query = Callable[[str, int], Awaitable[tuple[Snapshot, int]]]


def next_index(previous: int, returned: int) -> int:
    """The ``index`` for the next blocking query, per Consul's blocking-query rules."""
    if returned < previous:
        return 0  # went backwards (snapshot restore, ...): restart the loop with a fresh read
    return max(returned, 1)  # an index below 1 would not block: guard against a busy loop


def index_of(headers: Mapping[str, str]) -> int:
    """``X-Consul-Index`` as a number (0 when missing or not a number)."""
    raw = headers.get("X-Consul-Index", "0")
    return int(raw) if raw.isdigit() and len(raw) <= 20 else 0


class TokenBucket:
    """Lets ``burst`` queries through at once, then at most ``rate`` per second.

    Consul's docs recommend this over a sleep per loop: in the happy case a change is
    delivered without delay, and only a churning result degrades into polling.
    """

    def __init__(self, rate: float, burst: int) -> None:
        self.rate = rate
        self.burst = burst
        self._tokens = float(burst)
        self._stamp = time.monotonic()

    async def take(self) -> None:
        now = time.monotonic()
        self._tokens = min(self.burst, self._tokens + (now - self._stamp) * self.rate)
        self._stamp = now
        if self._tokens < 1:
            await asyncio.sleep((1 - self._tokens) / self.rate)
            self._tokens = 1.0
            self._stamp = time.monotonic()
        self._tokens -= 1


async def follow_blocking(topic: Topic[int], query: Query, rate: float) -> None:
    """Blocking queries for ``topic.name`` from the index in ``topic.state``, until one fails."""
    bucket = TokenBucket(rate=rate, burst=3)
    index = next_index(0, topic.state)
    while True:
        await bucket.take()
        instances, returned = await query(topic.name, index)
        topic.healthy()
        await topic.publish(instances)
        if returned < index:
            log.info(
                "consul index for %s went backwards (%d -> %d); restarting the blocking loop",
                topic.name,
                index,
                returned,
            )
        index = next_index(index, returned)
        topic.state = index
