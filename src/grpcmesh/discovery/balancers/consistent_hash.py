"""Consistent hashing on a request key: a hash ring with virtual nodes.

Every endpoint owns ``vnodes`` points on a 64-bit ring (BLAKE2b of ``id#i``); a key goes to
the first point clockwise of its hash (binary search, O(log n)). When an endpoint leaves,
only the keys it owned move (about 1/n of them), and they spread over the others. Calls
without a key are spread round-robin. Weights are ignored: a key's home must not depend on
load.
"""

from __future__ import annotations

import bisect
import hashlib
from collections.abc import Collection, Sequence

from grpcmesh.discovery.balancers.base import NoLoadFeedback
from grpcmesh.discovery.balancers.round_robin import RoundRobin
from grpcmesh.discovery.endpoints import Endpoint
from grpcmesh.errors import ConfigError

DEFAULT_VNODES = 160


def hash64(data: str) -> int:
    return int.from_bytes(hashlib.blake2b(data.encode(), digest_size=8).digest(), "big")


class ConsistentHash(NoLoadFeedback):
    name = "consistent_hash"

    def __init__(self, *, vnodes: int = DEFAULT_VNODES) -> None:
        if isinstance(vnodes, bool) or not isinstance(vnodes, int) or vnodes < 1:
            raise ConfigError(f"vnodes: {vnodes!r} must be a whole number >= 1 (default {DEFAULT_VNODES})")
        self._vnodes = vnodes
        self._points: list[int] = []
        self._owners: list[Endpoint] = []
        self._fallback = RoundRobin()

    def update(self, endpoints: Sequence[Endpoint]) -> None:
        ring = sorted(
            (hash64(f"{endpoint.id}#{i}"), endpoint.id, endpoint) for endpoint in endpoints for i in range(self._vnodes)
        )
        self._points = [point for point, _, _ in ring]
        self._owners = [endpoint for _, _, endpoint in ring]
        self._fallback.update(endpoints)

    def pick(self, request_key: str | None = None, exclude: Collection[str] = ()) -> Endpoint | None:
        if request_key is None:
            return self._fallback.pick(None, exclude)
        if not self._points:
            return None
        start = bisect.bisect_left(self._points, hash64(request_key))
        size = len(self._owners)
        for step in range(size):
            endpoint = self._owners[(start + step) % size]
            if endpoint.id not in exclude:
                return endpoint
        return None
