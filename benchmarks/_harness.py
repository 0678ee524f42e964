"""Shared plumbing for the benchmark scripts: results, statistics, machine facts, child processes.

Every script is runnable alone (``.venv/bin/python benchmarks/bench_X.py``) and takes:

* ``--smoke``: tiny sizes, so the smoke test can check the script still runs end to end;
* ``--json PATH``: also write its result rows there (``run_all.py`` collects them);
* ``--loop asyncio|uvloop``: the event loop (default ``asyncio``, see BENCHMARKS.md).

A result row is one line of the BENCHMARKS.md table: figure, goal, measured number or ratio,
whether the goal is met, and the command that reproduces it. Every figure is a ratio against
a baseline measured in the same run (interleaved rounds where the two can share a process),
or an absolute number next to its baseline when the goal itself is absolute.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

# Children are started by vfork+exec (see grpcmesh._children); grpc's fork handlers are not
# needed for that, and any fork() elsewhere would only log "skipping fork() handlers" noise.
os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")

ROOT = Path(__file__).resolve().parent.parent
BENCH_DIR = ROOT / "benchmarks"
for _path in (str(ROOT / "src"), str(ROOT)):
    if _path not in sys.path:
        sys.path.insert(0, _path)

from grpcmesh._children import guarded_argv  # noqa: E402 - needs src/ on sys.path


@dataclass
class Row:
    """One figure in the BENCHMARKS.md table."""

    figure: str
    goal: str
    measured: str
    met: bool | None
    command: str
    details: dict[str, Any] = field(default_factory=dict)


@dataclass
class Report:
    """What a script produces: table rows plus a markdown section with the full numbers."""

    script: str
    rows: list[Row] = field(default_factory=list)
    section: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def add(self, row: Row) -> None:
        self.rows.append(row)

    def line(self, text: str = "") -> None:
        self.section.append(text)
        print(text, flush=True)

    def table(self, header: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
        self.line("| " + " | ".join(header) + " |")
        self.line("|" + "|".join("---" for _ in header) + "|")
        for row in rows:
            self.line("| " + " | ".join(str(cell) for cell in row) + " |")
        self.line()


def command(script: str, *args: str) -> str:
    return " ".join([".venv/bin/python", f"benchmarks/{script}", *args])


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100); nan for no values."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, round(q / 100 * len(ordered) + 0.5) - 1))
    return ordered[rank]


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms"


def rss_mb(pid: int | None = None) -> float:
    """Resident set size of a process (default: this one) in MiB, from /proc."""
    path = f"/proc/{pid or 'self'}/status"
    with open(path) as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def machine() -> dict[str, str]:
    """The facts BENCHMARKS.md states about where the numbers come from."""
    import grpc

    facts = {
        "cpus": str(os.cpu_count()),
        "python": platform.python_version(),
        "grpcio": grpc.__version__,
        "platform": platform.platform(),
    }
    try:
        import uvloop

        facts["uvloop"] = uvloop.__version__
    except ImportError:
        facts["uvloop"] = "not installed"
    with contextlib.suppress(OSError):
        facts["load_before"] = " ".join(f"{x:.2f}" for x in os.getloadavg())
    return facts


def parser(description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--smoke", action="store_true", help="tiny sizes: check the script runs, numbers mean nothing")
    p.add_argument("--json", type=Path, help="also write the result rows to this file")
    p.add_argument("--loop", choices=["asyncio", "uvloop"], default="asyncio", help="event loop to run on")
    return p


def run(main: Callable[[argparse.Namespace, Report], Awaitable[None]], args: argparse.Namespace, script: str) -> None:
    """Run ``main`` on the chosen loop, then print/write its report."""
    report = Report(script)
    started = time.monotonic()
    if args.loop == "uvloop":
        import uvloop

        uvloop.run(main(args, report))
    else:
        asyncio.run(main(args, report))
    report.seconds = time.monotonic() - started
    print(f"\n{script}: {len(report.rows)} figure(s) in {report.seconds:.1f} s", flush=True)
    for row in report.rows:
        status = {True: "met", False: "MISSED", None: "-"}[row.met]
        print(f"  [{status}] {row.figure}: {row.measured} (goal {row.goal})", flush=True)
    if args.json is not None:
        payload = {"script": script, "seconds": report.seconds, "rows": [asdict(r) for r in report.rows]}
        payload["section"] = report.section
        args.json.write_text(json.dumps(payload, indent=1))


# -- child processes ------------------------------------------------------------------


def child_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "src"), str(ROOT), env.get("PYTHONPATH", "")])
    env["PYTHONUNBUFFERED"] = "1"
    return env


class Child:
    """A child Python process speaking one JSON object per stdout line."""

    def __init__(self, proc: asyncio.subprocess.Process, label: str) -> None:
        self.proc = proc
        self.label = label

    @classmethod
    async def start(cls, label: str, *args: str) -> Child:
        proc = await asyncio.create_subprocess_exec(
            *guarded_argv([sys.executable, *args], signal.SIGKILL),  # never outlive a crashed benchmark
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=None,
            env=child_env(),
        )
        return cls(proc, label)

    @property
    def pid(self) -> int:
        return self.proc.pid

    async def read(self, timeout: float = 60.0) -> dict[str, Any]:
        """The next JSON line the child prints (other lines are echoed and skipped)."""
        assert self.proc.stdout is not None
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"{self.label}: no message within {timeout:g} s")
            line = await asyncio.wait_for(self.proc.stdout.readline(), remaining)
            if not line:
                raise RuntimeError(f"{self.label} exited (rc={await self.proc.wait()}) before answering")
            text = line.decode().strip()
            if text.startswith("{"):
                message: dict[str, Any] = json.loads(text)
                return message
            if text:
                print(f"[{self.label}] {text}", flush=True)

    async def send(self, message: dict[str, Any]) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write((json.dumps(message) + "\n").encode())
        await self.proc.stdin.drain()

    def kill(self) -> None:
        if self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.kill()

    async def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM, then SIGKILL after ``timeout``; always reaped."""
        if self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.terminate()
            try:
                await asyncio.wait_for(self.proc.wait(), timeout)
            except TimeoutError:
                self.kill()
                await self.proc.wait()


@contextlib.asynccontextmanager
async def children() -> Any:
    """A list to put :class:`Child` objects in; all are stopped on the way out, even on error."""
    started: list[Child] = []
    try:
        yield started
    finally:
        await asyncio.gather(*(child.stop() for child in started), return_exceptions=True)


# -- etcd -------------------------------------------------------------------------------


@contextlib.contextmanager
def etcd_server(base: Path) -> Iterator[str]:
    """A single-node etcd on 127.0.0.1 with its data under ``base``; yields ``host:port``."""
    from tests.etcd_server import start_cluster

    cluster = start_cluster(base, 1)
    try:
        yield cluster.endpoints
    finally:
        cluster.stop()


def etcd_available() -> bool:
    """True when both the etcd binary and the etcd registry backend are present."""
    import importlib.util
    import shutil

    if shutil.which("etcd") is None and not os.access("/usr/bin/etcd", os.X_OK):
        return False
    return importlib.util.find_spec("grpcmesh.registry.etcd") is not None and (
        (ROOT / "tests" / "etcd_server.py").exists()
    )


async def stdin_messages() -> AsyncIterator[dict[str, Any]]:
    """JSON objects arriving one per line on stdin (a child's commands), without blocking the loop."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while True:
        line = await reader.readline()
        if not line:
            return
        if line.strip():
            yield json.loads(line)


def say(message: dict[str, Any]) -> None:
    """A child's answer: one JSON line on stdout."""
    print(json.dumps(message), flush=True)


def pid_rss_mb(pid: int) -> float:
    with contextlib.suppress(OSError):
        return rss_mb(pid)
    return float("nan")


def check_output(*args: str) -> str:
    return subprocess.run(args, capture_output=True, text=True, check=False).stdout
