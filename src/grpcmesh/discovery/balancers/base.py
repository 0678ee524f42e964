"""The one protocol every load-balancing policy implements.

A balancer holds the current endpoint list (replaced wholesale by :meth:`Balancer.update`)
and picks one endpoint per call. The channel reports each call's start and end so
load-aware policies (p2c) can see outstanding requests and latency; the others ignore it.
Picks must cost O(1) or O(log n); ``exclude`` (the endpoint a failed attempt used) is
small, so skipping over it is allowed to cost a little more.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import Protocol, runtime_checkable

from grpcmesh.discovery.endpoints import Endpoint


@runtime_checkable
class Balancer(Protocol):
    """Picks an endpoint per call."""

    name: str

    def update(self, endpoints: Sequence[Endpoint]) -> None:
        """Replace the endpoint list (state for endpoints that stay should be kept)."""

    def pick(self, request_key: str | None = None, exclude: Collection[str] = ()) -> Endpoint | None:
        """The endpoint for the next call, never one whose id is in ``exclude``; None if none is left."""

    def call_started(self, endpoint: Endpoint) -> None:
        """A call was sent to ``endpoint``."""

    def call_finished(self, endpoint: Endpoint, latency: float, ok: bool) -> None:
        """A call on ``endpoint`` ended after ``latency`` seconds; ``ok`` is False for transport failures."""


class NoLoadFeedback:
    """Mixin for policies that do not use call feedback: a channel skips their (no-op) hooks."""

    def call_started(self, endpoint: Endpoint) -> None:
        return None

    def call_finished(self, endpoint: Endpoint, latency: float, ok: bool) -> None:
        return None
