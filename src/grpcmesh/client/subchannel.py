"""One real ``grpc.aio`` channel per endpoint, with its call accounting and outlier state.

A sub-channel counts its outstanding calls so that, when its endpoint leaves the registry,
it can close only after they end (bounded by a grace period) instead of cancelling them.
Whether it is ejected is decided by :mod:`grpcmesh.client.outlier`; the sub-channel
carries the result (``ejected_until``, ``ejections``) for balancing and ``stats()``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast

import grpc

from grpcmesh._tasks import cancel_and_wait
from grpcmesh.discovery.endpoints import Endpoint

log = logging.getLogger("grpcmesh.client")

EWMA_ALPHA = 0.2


@dataclass(frozen=True)
class EndpointStats:
    """A snapshot of one endpoint's counters, for metrics and dashboards."""

    id: str
    target: str
    outstanding: int
    calls: int
    failures: int
    ewma_latency: float
    ejected: bool
    ejections: int
    draining: bool


class SubChannel:
    """The connection to one endpoint."""

    def __init__(self, endpoint: Endpoint, channel: grpc.aio.Channel, clock: Callable[[], float] = time.monotonic):
        self.endpoint = endpoint
        self.id = endpoint.id
        """The endpoint's id (fixed: a changed endpoint with the same id keeps its sub-channel)."""
        self.channel = channel
        self._clock = clock
        self._multicallables: dict[tuple[str, str, Any, Any], Any] = {}
        self._by_spec: dict[int, tuple[Any, Any]] = {}
        self.outstanding = 0
        self.calls = 0
        self.failures = 0
        self.ewma_latency = 0.0
        self._latency_samples = 0
        self.ejections = 0
        self.ejected_until = 0.0
        self.draining = False
        self._idle: asyncio.Event | None = None
        """Made by :meth:`drain` while calls still run; set when the last one ends."""
        self._close_task: asyncio.Task[None] | None = None

    def multicallable(self, kind: str, method: str, serializer: Any, deserializer: Any, registered: bool) -> Any:
        """The sub-channel's own multicallable for a method (cached; they are reusable)."""
        key = (kind, method, serializer, deserializer)
        found = self._multicallables.get(key)
        if found is None:
            factory = getattr(cast(Any, self.channel), kind)  # "unary_unary"...
            found = factory(
                method,
                request_serializer=serializer,
                response_deserializer=deserializer,
                _registered_method=registered,
            )
            self._multicallables[key] = found
        return found

    def multicallable_for(self, spec: Any) -> Any:
        """``multicallable`` for a ``MethodSpec``, looked up by the spec's identity (one dict hit per call)."""
        found = self._by_spec.get(id(spec))
        if found is None:
            mc = self.multicallable(
                spec.kind.channel_method, spec.method, spec.serializer, spec.deserializer, spec.registered
            )
            found = self._by_spec[id(spec)] = (spec, mc)  # holding the spec keeps its id from being reused
        return found[1]

    # -- accounting -------------------------------------------------------------------

    def call_started(self) -> None:
        self.outstanding += 1
        self.calls += 1

    def call_finished(self, latency: float, ok: bool) -> None:
        outstanding = self.outstanding
        if outstanding > 0:
            outstanding = self.outstanding = outstanding - 1
        if not ok:
            self.failures += 1
        self.ewma_latency = (
            latency if self.calls == 1 else self.ewma_latency + EWMA_ALPHA * (latency - self.ewma_latency)
        )
        if outstanding == 0 and self._idle is not None:
            self._idle.set()

    # -- outlier detection ------------------------------------------------------------

    def is_ejected(self, now: float) -> bool:
        return now < self.ejected_until

    # -- shutdown ---------------------------------------------------------------------

    def drain(self, grace: float) -> asyncio.Task[None]:
        """Close once outstanding calls end, or after ``grace`` seconds (then they are cancelled)."""
        if self._close_task is None:
            self.draining = True
            self._close_task = asyncio.get_running_loop().create_task(self._drain_then_close(grace))
        return self._close_task

    async def _drain_then_close(self, grace: float) -> None:
        if self.outstanding:
            idle = self._idle = asyncio.Event()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(idle.wait(), grace)
        if self.outstanding:
            log.warning(
                "closing sub-channel %s with %d call(s) still running after %.1fs grace",
                self.endpoint.target,
                self.outstanding,
                grace,
            )
        await self.channel.close(None)

    async def close(self, grace: float | None = None) -> None:
        await cancel_and_wait((self._close_task,))
        await self.channel.close(grace)

    def stats(self, now: float) -> EndpointStats:
        return EndpointStats(
            id=self.id,
            target=self.endpoint.target,
            outstanding=self.outstanding,
            calls=self.calls,
            failures=self.failures,
            ewma_latency=self.ewma_latency,
            ejected=self.is_ejected(now),
            ejections=self.ejections,
            draining=self.draining,
        )
