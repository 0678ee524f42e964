"""The demo's child processes: started behind the orphan guard, never outliving a killed supervisor."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

import pytest

from grpcmesh.demo.processes import spawn

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the guard is Linux's PR_SET_PDEATHSIG")


async def test_a_child_runs_its_own_program_with_its_environment(tmp_path: Path) -> None:
    log = tmp_path / "child.log"
    argv = [sys.executable, "-c", "import os, sys; print(os.environ['CHILD_WORD'], sys.argv[1:]); sys.exit(3)", "a b"]
    child = await spawn("echo", argv, {**os.environ, "CHILD_WORD": "hello"}, log_path=log)
    assert await child.process.wait() == 3
    await child.stop(1.0)
    assert log.read_text().strip() == "hello ['a b']"


SUPERVISOR = """
import asyncio, os, sys
from grpcmesh.demo.processes import spawn

async def main():
    child = await spawn("sleeper", [sys.executable, "-c", "import time; time.sleep(120)"], dict(os.environ))
    print(child.process.pid, flush=True)
    await asyncio.Event().wait()

asyncio.run(main())
"""


def _gone(pid: int) -> bool:
    """True once ``pid`` has exited (a zombie waiting for its new parent to reap it counts)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return True
    return state in ("Z", "X")


async def test_a_child_is_stopped_when_its_supervisor_is_killed() -> None:
    supervisor = await asyncio.create_subprocess_exec(
        sys.executable, "-c", SUPERVISOR, stdout=asyncio.subprocess.PIPE, env=dict(os.environ)
    )
    assert supervisor.stdout is not None
    pid = int((await asyncio.wait_for(supervisor.stdout.readline(), 60)).decode())
    try:
        assert not _gone(pid)
        supervisor.send_signal(signal.SIGKILL)  # no chance to stop its children itself
        await supervisor.wait()
        for _ in range(600):  # the kernel's SIGTERM is immediate; this bound is only a backstop
            if _gone(pid):
                break
            await asyncio.sleep(0.05)
        assert _gone(pid), "the child outlived its killed supervisor"
    finally:
        if not _gone(pid):
            os.kill(pid, signal.SIGKILL)
