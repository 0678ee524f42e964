"""Figure 4, registry scale: memory, time to first snapshot and fan-out at 1k/5k/10k instances.

N instances over 100 services, registered by one writer process; 100 watchers, each a
registry client of its own, each following its own service plus one shared "hot" service.
The watchers live in 4 worker processes of 25 (as client processes would, rather than 100
clients fighting over one interpreter's GIL); timestamps cross processes through the
system-wide monotonic clock. Each (backend, N) point starts fresh processes. Measured:

* registration: wall time for the writer to register all N instances;
* memory: resident-set growth of the writer while it registers N instances, and of the
  workers while their 100 clients load their first snapshots (plus the etcd server's RSS);
* first snapshot: from telling the workers to start watching to all 100 clients holding
  both first snapshots;
* fan-out: from one change to the hot service being issued to all 100 watchers seeing it;
* idle CPU: CPU use of writer and workers together while nothing changes (polling,
  heartbeats, keep-alives), in percent of one core.

``memory://`` cannot span processes, so its point runs writer and watchers in one process:
it is the in-process baseline. The goal is that each figure grows no faster than the number
of instances: growth factor from the smallest to the largest point, divided by the size
ratio, at most 1.5 (noise allowance).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _harness import (
    BENCH_DIR,
    Child,
    Report,
    Row,
    children,
    command,
    etcd_available,
    etcd_server,
    median,
    ms,
    parser,
    pid_rss_mb,
    rss_mb,
    run,
    say,
    stdin_messages,
)

from grpcmesh import Registry, ServiceInstance, open_registry

SCRIPT = "bench_registry_scale.py"
SERVICES = 100
HOT = "svc-000"
LINEAR_SLACK = 1.5


def instance(k: int, services: int) -> ServiceInstance:
    return ServiceInstance(
        name=f"svc-{k % services:03d}",
        id=f"inst-{k:06d}",
        address="127.0.0.1",
        port=10000 + k % 50000,
        version="v1",
        metadata={"zone": f"zone-{k % 3}"},
        endpoints=("Get", "Put"),
    )


EXTRA = ServiceInstance(name=HOT, id="fanout-extra", address="127.0.0.1", port=9999)


class ScaleWatcher:
    """One client: its own registry, its own service and the hot one."""

    def __init__(self, registry: Registry, own: str) -> None:
        self.registry = registry
        self.own = own
        self.extra = False
        self.extra_since = 0.0
        self.loaded_at = 0.0
        self.loaded = asyncio.Event()
        self.got = {own: False, HOT: False}
        self.changed = asyncio.Event()
        self.tasks: list[asyncio.Task[None]] = []

    async def follow(self, name: str) -> None:
        async for snapshot in self.registry.watch(name):
            now = time.monotonic()
            if name == HOT:
                extra = any(i.id == EXTRA.id for i in snapshot)
                if extra != self.extra:
                    self.extra, self.extra_since = extra, now
                    self.changed.set()
            if not self.got[name]:
                self.got[name] = True
                if all(self.got.values()):
                    self.loaded_at = now
                    self.loaded.set()

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        self.tasks = [loop.create_task(self.follow(name)) for name in {self.own, HOT}]

    async def close(self) -> None:
        for task in self.tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        await self.registry.close()


class Node:
    """A child process's state: maybe the writer, maybe some watchers."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.writer: Registry | None = None
        self.clients: list[ScaleWatcher] = []

    async def handle(self, message: dict[str, Any]) -> dict[str, Any]:
        op = message["op"]
        if op == "register":
            before = rss_mb()
            self.writer = open_registry(self.url)
            instances = [instance(k, SERVICES) for k in range(message["n"])]
            started = time.perf_counter()
            for batch in range(0, len(instances), 64):
                await asyncio.gather(*(self.writer.register(i) for i in instances[batch : batch + 64]))
            return {"register_s": time.perf_counter() - started, "mb": rss_mb() - before}
        if op == "watch":
            before = rss_mb()
            first, count = message["first"], message["count"]
            self.clients = [
                ScaleWatcher(open_registry(self.url), f"svc-{w % SERVICES:03d}") for w in range(first, first + count)
            ]
            for client in self.clients:
                client.start()
            for client in self.clients:
                await asyncio.wait_for(client.loaded.wait(), 120)
            return {"loaded_at": max(c.loaded_at for c in self.clients), "mb": rss_mb() - before}
        if op == "change":
            assert self.writer is not None
            issued = time.monotonic()
            if message["add"]:
                await self.writer.register(EXTRA)
            else:
                await self.writer.deregister(EXTRA)
            return {"issued": issued, "returned": time.monotonic()}
        if op == "wait":
            deadline = time.monotonic() + message.get("timeout", 30)
            while pending := [c for c in self.clients if c.extra != message["extra"]]:
                if time.monotonic() > deadline:
                    return {"seen": time.monotonic(), "stuck": len(pending), "diagnosis": diagnose(pending)}
                for client in pending:
                    client.changed.clear()
                await asyncio.wait([asyncio.ensure_future(c.changed.wait()) for c in pending], timeout=1.0)
            return {"seen": max((c.extra_since for c in self.clients), default=0.0), "stuck": 0}
        if op == "idle":
            cpu = sum(os.times()[:2])
            await asyncio.sleep(message["seconds"])
            return {"cpu_s": sum(os.times()[:2]) - cpu}
        if op == "quit":
            await asyncio.gather(*(c.close() for c in self.clients), return_exceptions=True)
            if self.writer is not None:
                await self.writer.close()
            return {"bye": True}
        raise ValueError(f"unknown op {op!r}")


def diagnose(stuck: list[ScaleWatcher]) -> list[str]:
    """What a watcher that missed a change looks like inside (its registry's poll task, for SQLite)."""
    notes = []
    for client in stuck[:3]:
        registry: Any = client.registry
        task = getattr(registry, "_poll_task", None)
        if task is None:
            state = "no poll task"
        elif not task.done():
            state = "poll task running"
        else:
            state = f"poll task ended: {'cancelled' if task.cancelled() else repr(task.exception())}"
        watch_tasks = [
            ("done " + repr(t.exception())) if t.done() and not t.cancelled() else "running" for t in client.tasks
        ]
        notes.append(f"{client.own}: {state}; watch tasks {watch_tasks}")
    return notes


async def node_main(url: str) -> None:
    """A child: answers one JSON line per command line until ``quit``."""
    node = Node(url)
    say({"ready": True})
    async for message in stdin_messages():
        say(await node.handle(message))
        if message["op"] == "quit":
            return


class Point:
    """The parent's side of one (backend, N) point: its writer and watcher processes."""

    def __init__(self, started: list[Child], url: str) -> None:
        self.started = started
        self.url = url
        self.writer: Child | None = None
        self.workers: list[Child] = []

    async def spawn(self, label: str) -> Child:
        child = await Child.start(label, str(BENCH_DIR / SCRIPT), "--node", self.url)
        self.started.append(child)
        await child.read(timeout=60)
        return child

    @staticmethod
    async def ask(child: Child, message: dict[str, Any], timeout: float = 300) -> dict[str, Any]:
        await child.send(message)
        return await child.read(timeout=timeout)

    async def measure(
        self, n: int, watchers: int, workers: int, fanouts: int, idle: float, etcd_pid: int, in_process: bool
    ) -> dict[str, Any]:
        result: dict[str, Any] = {"n": n}
        self.writer = await self.spawn("writer")
        self.workers = [self.writer] if in_process else [await self.spawn(f"watchers {w}") for w in range(workers)]
        answer = await self.ask(self.writer, {"op": "register", "n": n})
        result["register_s"], result["writer_mb"] = answer["register_s"], answer["mb"]
        if etcd_pid:
            result["etcd_mb"] = pid_rss_mb(etcd_pid)

        share = [
            watchers // len(self.workers) + (1 if w < watchers % len(self.workers) else 0)
            for w in range(len(self.workers))
        ]
        firsts = [sum(share[:w]) for w in range(len(self.workers))]
        started = time.monotonic()
        for worker, first, count in zip(self.workers, firsts, share, strict=True):
            await worker.send({"op": "watch", "first": first, "count": count})
        answers = [await worker.read(timeout=300) for worker in self.workers]
        result["first_snapshot_s"] = max(a["loaded_at"] for a in answers) - started
        result["watchers_mb"] = sum(a["mb"] for a in answers)

        rng = random.Random(11)
        fan: list[float] = []
        for k in range(fanouts):
            add = k % 2 == 0
            # Timed from the change being issued: a watcher can see it before the writer's call returns.
            issued = (await self.ask(self.writer, {"op": "change", "add": add}))["issued"]
            for worker in self.workers:
                await worker.send({"op": "wait", "extra": add})
            answers = [await worker.read(timeout=60) for worker in self.workers]
            stuck = sum(a["stuck"] for a in answers)
            if stuck:
                result["stuck"] = result.get("stuck", 0) + stuck
                result.setdefault("diagnosis", []).extend(d for a in answers for d in a.get("diagnosis", []))
                print(f"fan-out {k}: {stuck} watcher(s) missed the change for 30 s: {answers}", flush=True)
                break
            fan.append(max(a["seen"] for a in answers) - issued)
            await asyncio.sleep(rng.uniform(0.0, 0.06))
        result["fanout_p50_s"] = median(fan)
        result["fanout_max_s"] = max(fan, default=float("nan"))

        nodes = [self.writer] if in_process else [self.writer, *self.workers]
        for node in nodes:
            await node.send({"op": "idle", "seconds": idle})
        cpu = [(await node.read(timeout=idle + 30))["cpu_s"] for node in nodes]
        result["idle_cpu_pct"] = sum(cpu) / idle * 100
        if etcd_pid:
            result["etcd_mb_after"] = pid_rss_mb(etcd_pid)
        for node in nodes:
            await self.ask(node, {"op": "quit"}, timeout=60)
        return result


async def run_point(
    url: str, n: int, watchers: int, workers: int, fanouts: int, idle: float, etcd_pid: int = 0
) -> dict[str, Any]:
    async with children() as started:
        point = Point(started, url)
        result = await point.measure(n, watchers, workers, fanouts, idle, etcd_pid, url.startswith("memory"))
    if url.startswith("sqlite"):
        path = Path(url.removeprefix("sqlite://"))
        result["store_mb"] = sum(p.stat().st_size for p in path.parent.glob(path.name + "*")) / (1024 * 1024)
    return result


def growth(points: list[dict[str, Any]], key: str) -> float:
    """(metric at the largest size / at the smallest) / (largest size / smallest size)."""
    first, last = points[0], points[-1]
    if first[key] <= 0:
        return float("nan")
    return (last[key] / first[key]) / (last["n"] / first["n"])


async def main(args: argparse.Namespace, report: Report) -> None:
    sizes = [40, 80] if args.smoke else [int(s) for s in args.sizes.split(",")]
    watchers = 4 if args.smoke else args.watchers
    workers = 2 if args.smoke else args.workers
    fanouts = 2 if args.smoke else args.fanouts
    idle = 0.2 if args.smoke else args.idle
    names = [b for b in args.backends.split(",") if b]
    if "etcd" in names and not etcd_available():
        report.line("etcd: backend or binary not available in this tree; skipped")
        names.remove("etcd")
    results: dict[str, list[dict[str, Any]]] = {}
    for name in names:
        results[name] = []
        for n in sizes:
            with tempfile.TemporaryDirectory(prefix="grpcmesh-bench-scale-") as tmp:
                if name == "etcd":
                    with etcd_server(Path(tmp) / "etcd") as endpoint:
                        pid = etcd_pid(endpoint)
                        point = await run_point(
                            f"etcd://{endpoint}/bench-scale", n, watchers, workers, fanouts, idle, pid
                        )
                else:
                    url = "memory://bench-scale" if name == "memory" else f"sqlite://{tmp}/registry.db"
                    point = await run_point(url, n, watchers, workers, fanouts, idle)
            results[name].append(point)
            print(f"{name} {n}: {point}", flush=True)

    report.line(
        f"### Registry scale: N instances over {SERVICES} services, {watchers} watchers in {workers} processes "
        "(own service + one shared)"
    )
    report.line()
    table = []
    for name, points in results.items():
        for p in points:
            table.append(
                [
                    name,
                    p["n"],
                    f"{p['register_s']:.2f} s",
                    f"{p['writer_mb']:.1f}",
                    f"{p['watchers_mb']:.1f}",
                    f"{p.get('store_mb', p.get('etcd_mb_after', float('nan'))):.1f}",
                    ms(p["first_snapshot_s"]),
                    ms(p["fanout_p50_s"]),
                    ms(p["fanout_max_s"]),
                    p.get("stuck", 0),
                    f"{p['idle_cpu_pct']:.0f}%",
                ]
            )
    report.table(
        [
            "backend",
            "instances",
            "register all",
            "writer RSS +MiB",
            "watchers RSS +MiB",
            "store MiB (sqlite file / etcd RSS)",
            "first snapshot (all watchers)",
            "fan-out p50",
            "fan-out max",
            "watchers that missed a change for 30 s",
            "idle CPU (one core)",
        ],
        table,
    )
    report.line(
        "Growth factor = (value at the largest size / value at the smallest) / (size ratio): 1.0 is linear, "
        "below 1 sublinear. Memory growth is of the process's RSS; small points are dominated by fixed costs."
    )
    report.line()
    for name, points in results.items():
        for p in points:
            for note in p.get("diagnosis", []):
                report.line(f"- {name} {p['n']}: a watcher that missed a change: {note}")
    report.line()
    for name in names:
        if name == "memory":
            continue
        points = results[name]
        curve = "/".join(f"{p['n'] // 1000 if p['n'] >= 1000 else p['n']}" for p in points)
        unit = "k" if points[0]["n"] >= 1000 else ""
        for key, label, fmt in (
            ("total_mb", "memory (writer + watchers RSS)", lambda v: f"{v:.0f} MiB"),
            ("first_snapshot_s", "time to first snapshot", ms),
            ("fanout_p50_s", "fan-out of one change (p50)", ms),
        ):
            for p in points:
                p["total_mb"] = p["writer_mb"] + p["watchers_mb"]
            g = growth(points, key)
            values = " / ".join(fmt(p[key]) for p in points)
            stuck = sum(p.get("stuck", 0) for p in points) if key == "fanout_p50_s" else 0
            if stuck:
                values += f"; **{stuck} watcher(s) never saw a change within 30 s**"
            report.add(
                Row(
                    figure=f"4. registry scale, {name}: {label} at {curve}{unit} instances",
                    goal="grows linearly (growth factor <= 1.5)",
                    measured=f"{values}; growth factor {g:.2f}",
                    met=bool(g <= LINEAR_SLACK) and not stuck,
                    command=command(SCRIPT),
                    details={"points": points},
                )
            )


def etcd_pid(endpoint: str) -> int:
    """The pid of the etcd listening on ``endpoint`` (to sample its memory)."""
    port = endpoint.rsplit(":", 1)[1]
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            cmdline = (entry / "cmdline").read_bytes().split(b"\0")
            if cmdline and cmdline[0].endswith(b"etcd") and f"127.0.0.1:{port}".encode() in b" ".join(cmdline):
                return int(entry.name)
    return 0


if __name__ == "__main__":
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--sizes", default="1000,5000,10000", help="instance counts, comma-separated")
    p.add_argument("--watchers", type=int, default=100)
    p.add_argument("--fanouts", type=int, default=10, help="changes to the hot service per point")
    p.add_argument("--idle", type=float, default=2.0, help="seconds of idle CPU measurement per point")
    p.add_argument("--backends", default="memory,sqlite,etcd")
    p.add_argument("--workers", type=int, default=4, help="processes the watchers are spread over")
    p.add_argument("--node", help=argparse.SUPPRESS)
    parsed = p.parse_args()
    if parsed.node:
        asyncio.run(node_main(parsed.node))
        sys.exit(0)
    run(main, parsed, SCRIPT)
