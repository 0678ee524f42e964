"""Smooth weighted round-robin on the instances' ``weight``.

nginx's smooth WRR interleaves picks so that within any window every endpoint's share is
within one pick of its weight (weights 5:1:1 give ``a a b a c a a``, not ``a a a a a b c``).
nginx scans all endpoints per pick (O(n)); we get the same interleaving from an
earliest-deadline-first schedule on a heap (O(log n)): an endpoint of weight w is due every
1/w, first at 1/(2w), and the earliest due endpoint is picked (ties in list order).
"""

from __future__ import annotations

import heapq
from collections.abc import Collection, Sequence

from grpcmesh.discovery.balancers.base import NoLoadFeedback
from grpcmesh.discovery.endpoints import Endpoint

_REBASE_AT = 1e9
"""Deadlines grow forever; subtract the current time once they get this big to keep float precision."""


class WeightedRoundRobin(NoLoadFeedback):
    name = "weighted_round_robin"

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, Endpoint]] = []

    def update(self, endpoints: Sequence[Endpoint]) -> None:
        # Endpoints that stay keep their place in the schedule; newcomers join half a period out.
        old = {e.id: (due, e.weight) for due, _, e in self._heap}
        now = min((due for due, _ in old.values()), default=0.0)
        heap = []
        for index, endpoint in enumerate(endpoints):
            kept = old.get(endpoint.id)
            due = kept[0] if kept is not None and kept[1] == endpoint.weight else now + 0.5 / endpoint.weight
            heap.append((due, index, endpoint))
        heapq.heapify(heap)
        self._heap = heap

    def pick(self, request_key: str | None = None, exclude: Collection[str] = ()) -> Endpoint | None:
        skipped: list[tuple[float, int, Endpoint]] = []
        chosen: Endpoint | None = None
        while self._heap:
            due, index, endpoint = heapq.heappop(self._heap)
            if endpoint.id in exclude:
                skipped.append((due, index, endpoint))
                continue
            heapq.heappush(self._heap, (due + 1.0 / endpoint.weight, index, endpoint))
            chosen = endpoint
            if due > _REBASE_AT:
                self._heap = [(d - due, i, e) for d, i, e in self._heap]
                skipped = [(d - due, i, e) for d, i, e in skipped]
                heapq.heapify(self._heap)
            break
        for item in skipped:
            heapq.heappush(self._heap, item)
        return chosen
