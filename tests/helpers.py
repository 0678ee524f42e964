"""Small async helpers shared by the tests."""

from __future__ import annotations

import asyncio
import os
import socket
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")

ROOT = Path(__file__).resolve().parent.parent


async def next_matching(stream: AsyncIterator[T], predicate: Callable[[T], bool], timeout: float = 5.0) -> T:
    """The first item of ``stream`` satisfying ``predicate``; fails after ``timeout`` seconds."""

    async def scan() -> T:
        async for item in stream:
            if predicate(item):
                return item
        raise AssertionError("stream ended before a matching item arrived")

    return await asyncio.wait_for(scan(), timeout)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def python_env() -> dict[str, str]:
    """Environment for child Python processes: the source tree importable, output unbuffered."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "src"), str(ROOT), env.get("PYTHONPATH", "")])
    env["PYTHONUNBUFFERED"] = "1"
    return env


async def start_python(*args: str) -> asyncio.subprocess.Process:
    """Start ``python args...`` as a child process with piped stdout."""
    return await asyncio.create_subprocess_exec(
        sys.executable, *args, stdout=asyncio.subprocess.PIPE, stderr=None, env=python_env()
    )


async def read_line_with(proc: asyncio.subprocess.Process, marker: str, timeout: float = 20.0) -> str:
    """Read the child's stdout until a line containing ``marker``."""
    assert proc.stdout is not None

    async def scan() -> str:
        assert proc.stdout is not None
        while True:
            line = (await proc.stdout.readline()).decode()
            if not line:
                raise AssertionError(f"child exited (rc={proc.returncode}) before printing {marker!r}")
            if marker in line:
                return line

    return await asyncio.wait_for(scan(), timeout)


async def stop_process(proc: asyncio.subprocess.Process, timeout: float = 10.0) -> None:
    """Terminate (then kill) a child and reap it."""
    if proc.returncode is None:
        try:
            proc.terminate()
            await asyncio.wait_for(proc.wait(), timeout)
        except ProcessLookupError:
            pass
        except TimeoutError:
            proc.kill()
            await proc.wait()
