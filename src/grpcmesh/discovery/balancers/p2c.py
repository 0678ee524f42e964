"""Power of two choices on outstanding requests weighted by EWMA latency (as go-zero's p2c).

Each pick samples two distinct endpoints at random and takes the one with the lower load,
``sqrt(ewma_latency_us + 1) * (outstanding + 1)``: outstanding requests react at once to a
stalled endpoint, the latency average to a consistently slow one, and the square root keeps
latency from dominating. An endpoint that lost every comparison for ``force_pick_after``
seconds is picked anyway, so its latency estimate cannot go stale. Transport failures count
as ``failure_penalty`` seconds of latency.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass

from grpcmesh.discovery.endpoints import Endpoint


@dataclass
class EndpointLoad:
    """What p2c knows about one endpoint."""

    outstanding: int = 0
    ewma_latency: float = 0.0
    samples: int = 0
    last_update: float = 0.0
    last_pick: float = 0.0

    def load(self) -> float:
        return math.sqrt(self.ewma_latency * 1e6 + 1.0) * (self.outstanding + 1)


class PowerOfTwoChoices:
    name = "p2c"

    def __init__(
        self,
        *,
        decay_time: float = 10.0,
        min_alpha: float = 0.1,
        force_pick_after: float = 1.0,
        failure_penalty: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._decay_time = decay_time
        self._min_alpha = min_alpha
        self._force_pick_after = force_pick_after
        self._failure_penalty = failure_penalty
        self._clock = clock
        self._endpoints: tuple[Endpoint, ...] = ()
        self._loads: dict[str, EndpointLoad] = {}

    def load_of(self, endpoint_id: str) -> EndpointLoad | None:
        return self._loads.get(endpoint_id)

    def update(self, endpoints: Sequence[Endpoint]) -> None:
        now = self._clock()
        self._endpoints = tuple(endpoints)
        self._loads = {e.id: self._loads.get(e.id) or EndpointLoad(last_pick=now) for e in self._endpoints}

    def pick(self, request_key: str | None = None, exclude: Collection[str] = ()) -> Endpoint | None:
        candidates = self._endpoints
        if exclude:
            candidates = tuple(e for e in candidates if e.id not in exclude)
        if not candidates:
            return None
        if len(candidates) == 1:
            chosen = candidates[0]
        else:
            first, second = random.sample(candidates, 2)
            chosen = self._better(first, second)
        self._loads[chosen.id].last_pick = self._clock()
        return chosen

    def _better(self, first: Endpoint, second: Endpoint) -> Endpoint:
        a, b = self._loads[first.id], self._loads[second.id]
        winner, loser = (first, second) if a.load() <= b.load() else (second, first)
        loser_load = self._loads[loser.id]
        if self._clock() - loser_load.last_pick > self._force_pick_after:
            return loser
        return winner

    def call_started(self, endpoint: Endpoint) -> None:
        load = self._loads.get(endpoint.id)
        if load is not None:
            load.outstanding += 1

    def call_finished(self, endpoint: Endpoint, latency: float, ok: bool) -> None:
        load = self._loads.get(endpoint.id)
        if load is None:
            return
        load.outstanding = max(0, load.outstanding - 1)
        sample = latency if ok else max(latency, self._failure_penalty)
        now = self._clock()
        if load.samples == 0:
            load.ewma_latency = sample
        else:
            # Time-based decay (old samples fade over decay_time), but never slower than
            # min_alpha per sample so a burst of calls still moves the average.
            alpha = max(1.0 - math.exp(-(now - load.last_update) / self._decay_time), self._min_alpha)
            load.ewma_latency += alpha * (sample - load.ewma_latency)
        load.samples += 1
        load.last_update = now
