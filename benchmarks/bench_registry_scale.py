"""Figure 4, registry scale: memory, time to first snapshot and fan-out at 1k/5k/10k instances.

N instances over 100 services, registered by one writer; 100 watchers, each a registry
client of its own (as 100 client processes would have), each following its own service plus
one shared "hot" service. Each (backend, N) point runs in a fresh child process so its
resident memory is its own. Measured per point:

* registration: wall time for the writer to register all N instances;
* memory: resident-set growth of the process while it registers N instances (writer side)
  and while the 100 watchers load their first snapshots (client side);
* first snapshot: from the 100 watchers opening their watches to all of them holding both
  first snapshots;
* fan-out: from one change to the hot service returning to all 100 watchers seeing it;
* idle CPU: the process's CPU use while nothing changes (polling, heartbeats, keep-alives).

The baseline is the smallest point: the goal is that each figure grows no faster than the
number of instances (growth factor from 1k to 10k, divided by 10, at most 1.5 to allow for noise).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
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
    command,
    etcd_available,
    etcd_server,
    median,
    ms,
    parser,
    pid_rss_mb,
    rss_mb,
    run,
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


async def gather_bounded(coros: list[Any], limit: int) -> None:
    for start in range(0, len(coros), limit):
        await asyncio.gather(*coros[start : start + limit])


class ScaleWatcher:
    """One client: its own registry, its own service and the hot one."""

    def __init__(self, registry: Registry, own: str) -> None:
        self.registry = registry
        self.own = own
        self.hot_ids: frozenset[str] = frozenset()
        self.loaded = asyncio.Event()
        self.got = {own: False, HOT: False}
        self.changed = asyncio.Event()
        self.tasks: list[asyncio.Task[None]] = []

    async def follow(self, name: str) -> None:
        async for snapshot in self.registry.watch(name):
            if name == HOT:
                self.hot_ids = frozenset(i.id for i in snapshot)
                self.changed.set()
            self.got[name] = True
            if all(self.got.values()):
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


async def measure_point(url: str, n: int, watchers: int, fanouts: int, idle: float, etcd_pid: int) -> dict[str, Any]:
    """Runs in the child: one backend at one size."""
    result: dict[str, Any] = {"n": n}
    instances = [instance(k, SERVICES) for k in range(n)]
    base = rss_mb()
    writer = open_registry(url)
    clients: list[ScaleWatcher] = []
    try:
        started = time.perf_counter()
        await gather_bounded([writer.register(i) for i in instances], 64)
        result["register_s"] = time.perf_counter() - started
        result["writer_mb"] = rss_mb() - base
        if etcd_pid:
            result["etcd_mb"] = pid_rss_mb(etcd_pid)

        before_watch = rss_mb()
        clients = [ScaleWatcher(open_registry(url), f"svc-{w % SERVICES:03d}") for w in range(watchers)]
        started = time.perf_counter()
        for client in clients:
            client.start()
        waits = []
        for client in clients:
            await asyncio.wait_for(client.loaded.wait(), 120)
            waits.append(time.perf_counter() - started)
        result["first_snapshot_s"] = max(waits)
        result["watchers_mb"] = rss_mb() - before_watch

        rng = random.Random(11)
        extra = ServiceInstance(name=HOT, id="fanout-extra", address="127.0.0.1", port=9999)
        hot_ids = frozenset(i.id for i in instances if i.name == HOT)
        fan: list[float] = []
        for k in range(fanouts):
            target = hot_ids | {extra.id} if k % 2 == 0 else hot_ids
            for client in clients:
                client.changed.clear()
            if k % 2 == 0:
                await writer.register(extra)
            else:
                await writer.deregister(extra)
            returned = time.perf_counter()
            pending = [c for c in clients if c.hot_ids != target]
            deadline = returned + 30
            while pending:
                waiting = [asyncio.ensure_future(c.changed.wait()) for c in pending]
                _, not_done = await asyncio.wait(waiting, timeout=max(0.0, deadline - time.perf_counter()))
                for future in not_done:
                    future.cancel()
                if time.perf_counter() > deadline:
                    sizes = sorted({len(c.hot_ids) for c in pending})
                    raise TimeoutError(
                        f"fan-out {k} reached {len(clients) - len(pending)}/{len(clients)} watchers in 30 s; "
                        f"the others hold {sizes} instances of {HOT}, expected {len(target)}"
                    )
                for client in pending:
                    client.changed.clear()
                pending = [c for c in pending if c.hot_ids != target]
            fan.append(time.perf_counter() - returned)
            await asyncio.sleep(rng.uniform(0.0, 0.06))
        result["fanout_p50_s"] = median(fan)
        result["fanout_max_s"] = max(fan)

        cpu_before = sum(os.times()[:2])
        await asyncio.sleep(idle)
        result["idle_cpu_pct"] = (sum(os.times()[:2]) - cpu_before) / idle * 100
        if url.startswith("sqlite"):
            path = Path(url.removeprefix("sqlite://"))
            result["store_mb"] = sum(p.stat().st_size for p in path.parent.glob(path.name + "*") if p.exists()) / (
                1024 * 1024
            )
        if etcd_pid:
            result["etcd_mb_after"] = pid_rss_mb(etcd_pid)
    finally:
        await asyncio.gather(*(c.close() for c in clients), return_exceptions=True)
        await writer.close()
    return result


def child_main(args: argparse.Namespace) -> None:
    params = json.loads(args.child)
    result = asyncio.run(
        measure_point(params["url"], params["n"], params["watchers"], params["fanouts"], params["idle"], params["etcd"])
    )
    print(json.dumps(result), flush=True)


async def run_point(url: str, n: int, watchers: int, fanouts: int, idle: float, etcd_pid: int = 0) -> dict[str, Any]:
    params = {"url": url, "n": n, "watchers": watchers, "fanouts": fanouts, "idle": idle, "etcd": etcd_pid}
    child = await Child.start(f"scale {url.split(':')[0]} {n}", str(BENCH_DIR / SCRIPT), "--child", json.dumps(params))
    try:
        return await child.read(timeout=300)
    finally:
        await child.stop()


def growth(points: list[dict[str, Any]], key: str) -> float:
    """(metric at the largest size / at the smallest) / (largest size / smallest size)."""
    first, last = points[0], points[-1]
    if first[key] <= 0:
        return float("nan")
    return (last[key] / first[key]) / (last["n"] / first["n"])


async def main(args: argparse.Namespace, report: Report) -> None:
    sizes = [40, 80] if args.smoke else [int(s) for s in args.sizes.split(",")]
    watchers = 4 if args.smoke else args.watchers
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
                        point = await run_point(f"etcd://{endpoint}/bench-scale", n, watchers, fanouts, idle, pid)
                else:
                    url = "memory://bench-scale" if name == "memory" else f"sqlite://{tmp}/registry.db"
                    point = await run_point(url, n, watchers, fanouts, idle)
            results[name].append(point)
            print(f"{name} {n}: {point}", flush=True)

    report.line(
        f"### Registry scale: N instances over {SERVICES} services, {watchers} watchers (own service + one shared)"
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
            "idle CPU (one core)",
        ],
        table,
    )
    report.line(
        "Growth factor = (value at the largest size / value at the smallest) / (size ratio): 1.0 is linear, "
        "below 1 sublinear. Memory growth is of the process's RSS; small points are dominated by fixed costs."
    )
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
            report.add(
                Row(
                    figure=f"4. registry scale, {name}: {label} at {curve}{unit} instances",
                    goal="grows linearly (growth factor <= 1.5)",
                    measured=f"{values}; growth factor {g:.2f}",
                    met=bool(g <= LINEAR_SLACK),
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
    p.add_argument("--child", help=argparse.SUPPRESS)
    parsed = p.parse_args()
    if parsed.child:
        child_main(parsed)
        sys.exit(0)
    run(main, parsed, SCRIPT)
