"""Admission (load shedding) as the outermost layer of every mesh-served method.

A refused call must cost the overloaded server as little as possible, so admission runs
before anything else the mesh does for a call: no :class:`~grpcmesh.middleware.server_side.ServerCall`,
no observer (tracing, metrics, access log), no guard — one metadata scan, one decision and a
RESOURCE_EXHAUSTED abort with a fixed message. Refusals are counted by
:attr:`LoadShedder.shed <grpcmesh.server.shedding.LoadShedder.shed>`, not logged one by one.
Health checks and reflection are never wrapped, so they are never refused.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Iterator, Sequence
from typing import Any

import grpc
from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.registry import Collector

from grpcmesh.context import TIMEOUT_HEADER
from grpcmesh.middleware.behavior import Behavior, Context, Handler, wrap_behavior
from grpcmesh.middleware.server_side import Recover, ServerConcern, ServerPipeline
from grpcmesh.server.shedding import LoadShedder, never_shed

SHED_DETAILS = "server overloaded: load shedding refused the call; retry later or elsewhere"
"""The details of every refusal: fixed, so refusing builds no string."""


def queueing_delay(metadata: Any, time_remaining: float | None) -> float | None:
    """How long a call waited before its handler started: the timeout its mesh client sent
    (``x-mesh-timeout-ms``) less what is left of it; None when unknown."""
    if time_remaining is None or not metadata:
        return None
    for key, value in metadata:
        if key == TIMEOUT_HEADER:
            try:
                sent = float(value) / 1000
            except (TypeError, ValueError):
                return None  # hostile or broken header: no signal, not an error
            return max(0.0, sent - time_remaining) if 0 < sent < 1e7 else None
    return None


def _queued(context: Context) -> float | None:
    try:
        return queueing_delay(context.invocation_metadata(), context.time_remaining())
    except Exception:  # a context wrapper that lacks either: no signal
        return None


class AdmittingPipeline(ServerPipeline):
    """A :class:`ServerPipeline` whose wrapped methods first pass ``shedder``'s admission."""

    def __init__(self, shedder: LoadShedder, concerns: Sequence[ServerConcern] = (), recover: Recover | None = None):
        super().__init__(concerns, recover)
        self.shedder = shedder

    def __bool__(self) -> bool:
        return self.shedder.policy.enabled or super().__bool__()

    def wrap(self, handler: Handler, full_method: str) -> Handler:
        inner = super().wrap(handler, full_method)
        if inner is None or not self.shedder.policy.enabled or never_shed(full_method):
            return inner
        shedder = self.shedder

        def around(behavior: Behavior, generator: bool) -> Behavior:
            return _admitting_generator(behavior, shedder) if generator else _admitting_coroutine(behavior, shedder)

        return wrap_behavior(inner, around)


def _admitting_coroutine(behavior: Behavior, shedder: LoadShedder) -> Behavior:
    async def run(request: Any, context: Context) -> Any:
        if not await shedder.enter(_queued(context)):
            await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, SHED_DETAILS)
        started = time.monotonic()
        try:
            return await behavior(request, context)
        finally:
            shedder.finished(time.monotonic() - started)

    return run


def _admitting_generator(behavior: Behavior, shedder: LoadShedder) -> Behavior:
    async def run(request: Any, context: Context) -> AsyncIterator[Any]:
        if not await shedder.enter(_queued(context)):
            await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, SHED_DETAILS)
        started = time.monotonic()
        try:
            async for response in behavior(request, context):
                yield response
        finally:
            shedder.finished(time.monotonic() - started)

    return run


class ShedCallsCollector(Collector):
    """``grpcmesh_server_shed_calls_total{service}``: calls refused by load shedding, read at scrape
    time from :attr:`LoadShedder.shed` (refusals skip the per-call metrics to stay cheap)."""

    def __init__(self, service: str, shedder: LoadShedder) -> None:
        self.service = service
        self.shedder = shedder

    def collect(self) -> Iterator[Metric]:
        family = CounterMetricFamily(
            "grpcmesh_server_shed_calls", "Calls refused with RESOURCE_EXHAUSTED by load shedding", labels=["service"]
        )
        family.add_metric([self.service], self.shedder.shed)
        yield family
