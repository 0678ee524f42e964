"""Child processes that never outlive the process that started them (Linux), started safely under gRPC.

A ``preexec_fn`` that asks for ``PR_SET_PDEATHSIG`` is the usual way, but it makes Python
``fork()`` instead of ``vfork()``, and ``fork()`` runs gRPC's fork handlers in the child while the
parent's gRPC threads are busy: they sometimes kill the child before it starts ("epoll_wait
error: Bad file descriptor"). So the request runs in a tiny launcher instead, which then
``execvp``s the child's own program (the request survives ``exec``).
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Sequence

_GUARD = """\
import ctypes, os, sys
ctypes.CDLL(None, use_errno=True).prctl(1, int(sys.argv[2]), 0, 0, 0)  # PR_SET_PDEATHSIG
if os.getppid() != int(sys.argv[1]):
    sys.exit(0)  # the parent died before the signal was asked for: start nothing
os.execvp(sys.argv[3], sys.argv[3:])
"""


def guarded_argv(argv: Sequence[str], death_signal: int = signal.SIGTERM) -> list[str]:
    """``argv`` behind a launcher that has the kernel send ``death_signal`` to the child when this
    process dies, however it dies; ``argv`` unchanged where there is no such request (not Linux).
    Start it without a ``preexec_fn`` (so Python can ``vfork()``)."""
    if not sys.platform.startswith("linux"):
        return list(argv)
    return [sys.executable, "-S", "-c", _GUARD, str(os.getpid()), str(int(death_signal)), *argv]
