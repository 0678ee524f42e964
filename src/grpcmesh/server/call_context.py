"""The server half of call semantics, as the first concern of a mesh server's per-method wrapper.

``call context`` (every method): the incoming call's deadline and allowlisted metadata are
bound to :mod:`grpcmesh.context` while its handler runs, so the calls the handler makes
through mesh channels inherit them, and the access log and spans see the request id.
Admission (load shedding) runs before this, outside the pipeline: see :mod:`.admission`.
"""

from __future__ import annotations

from grpcmesh.context import Propagation
from grpcmesh.middleware.server_side import ServerCall, ServerConcern, ServerFinish


def call_context_concerns(propagation: Propagation) -> tuple[ServerConcern, ...]:
    """The concern that binds the call context while a handler runs."""

    def bind(call: ServerCall) -> ServerFinish:
        incoming = call.incoming = propagation.incoming(call.metadata, call.context.time_remaining())
        token = propagation.bind(incoming)
        return lambda _done: propagation.unbind(token)

    return (ServerConcern("call context", observe=bind),)
