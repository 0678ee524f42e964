"""Starting a call's observers on either side: one broken observer never fails the call.

Both the server pipeline and the client observation run a list of observers at the start of a
call; each returns what to call when the call ends (or ``None``). An observer that raises is
logged and left out for this call, so a bug in one concern cannot break the others or the call.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import Protocol, TypeVar

log = logging.getLogger("grpcmesh.middleware")


class _Call(Protocol):
    @property
    def full_method(self) -> str: ...


CallT = TypeVar("CallT", bound=_Call)
FinishT = TypeVar("FinishT")


def start_observers(observers: Iterable[Callable[[CallT], FinishT | None]], call: CallT, side: str) -> list[FinishT]:
    """Run each observer's start on ``call``; the finishers of those that want the end."""
    finishers = []
    for observe in observers:
        try:
            finish = observe(call)
        except Exception:
            log.exception("%s observer failed at the start of %s; skipping it for this call", side, call.full_method)
            continue
        if finish is not None:
            finishers.append(finish)
    return finishers
