"""Round-robin (the original Go design's policy): each endpoint in turn, starting at a random offset.

The random start keeps many clients that start together from all hitting the first
endpoint first.
"""

from __future__ import annotations

import random
from collections.abc import Collection, Sequence

from grpcmesh.discovery.balancers.base import NoLoadFeedback
from grpcmesh.discovery.endpoints import Endpoint


class RoundRobin(NoLoadFeedback):
    name = "round_robin"

    def __init__(self) -> None:
        self._endpoints: tuple[Endpoint, ...] = ()
        self._next = 0

    def update(self, endpoints: Sequence[Endpoint]) -> None:
        self._endpoints = tuple(endpoints)
        self._next = random.randrange(len(self._endpoints)) if self._endpoints else 0

    def pick(self, request_key: str | None = None, exclude: Collection[str] = ()) -> Endpoint | None:
        endpoints = self._endpoints
        count = len(endpoints)
        for _ in range(count):  # without exclusions the first turn returns
            index = self._next
            self._next = index + 1 if index + 1 < count else 0
            endpoint = endpoints[index]
            if not exclude or endpoint.id not in exclude:
                return endpoint
        return None
