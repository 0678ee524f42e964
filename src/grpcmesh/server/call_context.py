"""The server half of call semantics, as the first concern of a mesh server's per-method wrapper.

``call context`` (every method): the incoming call's deadline and allowlisted metadata are
bound to :mod:`grpcmesh.context` while its handler runs, so the calls the handler makes
through mesh channels inherit them, and the access log and spans see the request id.
Admission (load shedding) runs before this, outside the pipeline: see :mod:`.admission`.
"""

from __future__ import annotations

from grpcmesh.context import Propagation
from grpcmesh.middleware.server_side import ServerConcern


def call_context_concerns(propagation: Propagation) -> tuple[ServerConcern, ...]:
    """The concern that binds the call context while a handler runs (the wrapper binds it
    itself, before the observers, and unbinds it after their finish hooks)."""
    return (ServerConcern("call context", binds=propagation),)
