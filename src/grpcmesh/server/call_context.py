"""The server half of call semantics, as the first concerns of a mesh server's per-method wrapper.

* ``call context`` (every method): the incoming call's deadline and allowlisted metadata are
  bound to :mod:`grpcmesh.context` while its handler runs, so the calls the handler makes
  through mesh channels inherit them, and the access log and spans see the request id.
* ``admission`` (when shedding is enabled; never health or reflection): a call the
  :class:`~grpcmesh.server.shedding.LoadShedder` refuses gets RESOURCE_EXHAUSTED before any
  other guard (auth) or the handler runs.
"""

from __future__ import annotations

import time
from typing import Any

import grpc

from grpcmesh.context import TIMEOUT_HEADER, Propagation
from grpcmesh.middleware.server_side import ServerCall, ServerConcern, ServerFinish
from grpcmesh.server.shedding import LoadShedder, never_shed


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


def _shed_message(shedder: LoadShedder) -> str:
    return (
        f"server overloaded: load shedding refused the call ({shedder.in_flight} in flight, "
        f"event-loop lag {shedder.lag * 1000:.0f}ms); retry later or elsewhere"
    )


def call_context_concerns(propagation: Propagation, shedder: LoadShedder | None = None) -> tuple[ServerConcern, ...]:
    """The concerns that bind the call context and (if ``shedder`` is enabled) admit calls."""

    def bind(call: ServerCall) -> ServerFinish:
        token = propagation.bind(propagation.incoming(call.metadata, call.context.time_remaining()))
        return lambda _done: propagation.unbind(token)

    concerns = [ServerConcern("call context", observe=bind)]
    if shedder is None or not shedder.policy.enabled:
        return tuple(concerns)
    gate = shedder
    admitted: dict[int, float] = {}  # calls in flight (by id) -> when they were admitted

    async def admit(call: ServerCall) -> None:
        queued = queueing_delay(call.metadata, call.context.time_remaining())
        if not gate.admit(queued):
            await call.context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, _shed_message(gate))
        admitted[id(call)] = time.monotonic()

    def finish(done: ServerCall) -> None:
        started = admitted.pop(id(done), None)
        if started is not None:
            gate.finished(time.monotonic() - started)

    concerns.append(
        ServerConcern("admission", observe=lambda _call: finish, guard=admit, applies=lambda m: not never_shed(m))
    )
    return tuple(concerns)
