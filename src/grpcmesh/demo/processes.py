"""Child processes of the demo: started in their own process group, stopped in order, never orphaned.

Children get their own process group so the terminal's Ctrl-C reaches only the supervisor,
which then stops them in a sensible order (traffic first, then the services) instead of
all at once. On Linux each child also asks the kernel to SIGTERM it if the supervisor
dies (see :mod:`grpcmesh._children`), so even ``kill -9`` of the supervisor leaves nothing running.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from grpcmesh._children import guarded_argv


@dataclass
class Child:
    """One started process; ``label`` names it in the view (``order-service#2``)."""

    label: str
    process: asyncio.subprocess.Process
    log_path: Path | None = None
    killed: bool = False
    _log: IO[bytes] | None = field(default=None, repr=False)

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def running(self) -> bool:
        return self.process.returncode is None

    async def kill(self) -> None:
        """SIGKILL (no chance to deregister or drain) and reap."""
        self.killed = True
        with contextlib.suppress(ProcessLookupError):
            self.process.send_signal(signal.SIGKILL)
        await self.process.wait()
        self._close_log()

    async def stop(self, grace: float) -> None:
        """SIGTERM, then SIGKILL if it has not exited after ``grace`` seconds; always reaped."""
        if self.running:
            with contextlib.suppress(ProcessLookupError):
                self.process.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self.process.wait(), grace)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    self.process.send_signal(signal.SIGKILL)
                await self.process.wait()
        self._close_log()

    def _close_log(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None

    def log_tail(self, lines: int = 15) -> str:
        """The last lines the child logged (for error messages)."""
        if self.log_path is None or not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])


async def spawn(
    label: str,
    argv: Sequence[str],
    env: Mapping[str, str],
    *,
    log_path: Path | None = None,
    capture_stdout: bool = False,
    cwd: Path | None = None,
) -> Child:
    """Start ``argv``; stderr (and stdout unless captured) goes to ``log_path``."""
    log = log_path.open("ab") if log_path is not None else None
    target = log if log is not None else asyncio.subprocess.DEVNULL
    process = await asyncio.create_subprocess_exec(
        *guarded_argv(argv),
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE if capture_stdout else target,
        stderr=target,
        env=dict(env),
        cwd=cwd,
        process_group=0,
    )
    return Child(label, process, log_path, _log=log)
