"""``grpcmesh demo``: processes joining and leaving a mesh on the embedded registry, live.

Two member processes each serve the bundled Echo service and register in a shared SQLite
registry file; this process watches the registry and shows the instances as they come and
go, killing one member with SIGKILL and starting a replacement every few seconds.
``DEMO_SECONDS`` (or ``--seconds``) makes it stop by itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.live import Live

from grpcmesh.cli.app import app
from grpcmesh.cli.registry_cmds import instances_table
from grpcmesh.model import ServiceInstance
from grpcmesh.registry import open_registry

SERVICE = "echo-service"


async def _spawn(url: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "grpcmesh.cli._demo_member", url, SERVICE, stdout=asyncio.subprocess.DEVNULL
    )


async def _stop(proc: asyncio.subprocess.Process) -> None:
    if proc.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            proc.terminate()
        try:
            await asyncio.wait_for(proc.wait(), 10)
        except TimeoutError:
            proc.kill()
            await proc.wait()


async def run_demo(seconds: float | None, churn_every: float, console: Console) -> int:
    """Run the demo; returns how many membership changes the watcher saw."""
    with tempfile.TemporaryDirectory(prefix="grpcmesh-demo-") as tmp:
        url = f"sqlite://{Path(tmp) / 'registry.db'}"
        members = [await _spawn(url) for _ in range(2)]
        changes = 0
        deadline = time.monotonic() + seconds if seconds else None
        next_churn = time.monotonic() + churn_every
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        try:
            async with open_registry(url) as registry:
                snapshots: asyncio.Queue[list[ServiceInstance]] = asyncio.Queue()

                async def pump() -> None:
                    async for snapshot in registry.watch(SERVICE):
                        await snapshots.put(snapshot)

                pump_task = asyncio.create_task(pump())
                with Live(console=console, refresh_per_second=4) as live:
                    while not stop.is_set() and (deadline is None or time.monotonic() < deadline):
                        try:
                            snapshot = await asyncio.wait_for(snapshots.get(), 0.25)
                            changes += 1
                            title = f"{SERVICE}: {len(snapshot)} instance(s), {changes} change(s) seen"
                            live.update(instances_table(title, snapshot))
                        except TimeoutError:
                            pass
                        if time.monotonic() >= next_churn:
                            victim = members.pop(0)
                            victim.send_signal(signal.SIGKILL)
                            await victim.wait()
                            console.log(f"killed member pid {victim.pid} with SIGKILL; starting a replacement")
                            members.append(await _spawn(url))
                            next_churn = time.monotonic() + churn_every
                pump_task.cancel()
        finally:
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(sig)
            await asyncio.gather(*(_stop(p) for p in members))
        return changes


@app.command("demo")
def demo_command(
    seconds: Annotated[
        float | None, typer.Option(help="Stop after this many seconds (default: $DEMO_SECONDS, else run until Ctrl-C).")
    ] = None,
    churn_every: Annotated[float, typer.Option(help="Seconds between SIGKILLs of a member.")] = 6.0,
) -> None:
    """Run members that join and leave a mesh on the embedded registry, with a live view."""
    if seconds is None and os.environ.get("DEMO_SECONDS"):
        seconds = float(os.environ["DEMO_SECONDS"])
    console = Console()
    changes = asyncio.run(run_demo(seconds, churn_every, console))
    console.print(f"demo finished: the watcher saw {changes} membership change(s)")
