"""Figure 2, propagation: from ``register``/``deregister`` returning to every watcher seeing it.

N watchers, each an ``EndpointWatcher`` (the live endpoint set a MeshChannel balances over)
on a registry client of its own (its own connection and, for SQLite, its own poll loop, as
N client processes would have), follow one service. A writer (another
client) adds and removes one instance; for each change we time how long until *every*
watcher's endpoint set changed, and report p50/p99 over the changes.

Backends run side by side in one process, changes interleaved between them, so they share
the same load. ``memory://`` is the baseline: it has no I/O and no polling, so it shows the
cost of the watch machinery itself; the goals are p99 <= 100 ms (sqlite), <= 50 ms (etcd).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import random
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from _harness import Report, Row, command, etcd_available, etcd_server, median, ms, parser, percentile, run

from grpcmesh import Registry, ServiceInstance, open_registry
from grpcmesh.discovery import Endpoint, EndpointWatcher

SCRIPT = "bench_propagation.py"
SERVICE = "prop-svc"
GOALS = {"sqlite": 0.100, "etcd": 0.050}


class Round:
    """One change being timed: the id set every watcher must reach, and when each did."""

    def __init__(self, target: frozenset[str], watchers: int) -> None:
        self.target = target
        self.arrivals: dict[int, float] = {}
        self.watchers = watchers
        self.done = asyncio.Event()

    def saw(self, watcher: int, ids: frozenset[str], at: float) -> None:
        if ids == self.target and watcher not in self.arrivals:
            self.arrivals[watcher] = at
            if len(self.arrivals) == self.watchers:
                self.done.set()


class Watcher:
    """One client's live endpoint set (``EndpointWatcher``, as a MeshChannel holds), on its own registry."""

    def __init__(self, index: int, registry: Registry, on_change: Callable[[int, frozenset[str], float], None]) -> None:
        self.index = index
        self.registry = registry
        self.on_change = on_change
        self.ids: frozenset[str] = frozenset()
        self.endpoints = EndpointWatcher(registry, SERVICE)
        self.endpoints.add_listener(self._changed)

    def _changed(self, endpoints: tuple[Endpoint, ...]) -> None:
        self.ids = frozenset(e.id for e in endpoints)
        self.on_change(self.index, self.ids, time.perf_counter())

    def start(self) -> None:
        self.endpoints.start()

    async def close(self) -> None:
        await self.endpoints.close()
        await self.registry.close()


class Backend:
    """One backend under test: a writer, N watchers, and the timings of its changes."""

    def __init__(self, name: str, url: str, watchers: int) -> None:
        self.name = name
        self.url = url
        self.writer = open_registry(url)
        self.current: Round | None = None
        self.watchers = [Watcher(i, open_registry(url), self._saw) for i in range(watchers)]
        self.stable = [
            ServiceInstance(name=SERVICE, id=f"stable-{k}", address="127.0.0.1", port=20000 + k) for k in range(3)
        ]
        self.moving = ServiceInstance(name=SERVICE, id="moving", address="127.0.0.1", port=20100)
        self.registered = False
        self.all_latency: dict[str, list[float]] = {"register": [], "deregister": []}
        self.each_latency: list[float] = []
        self.call_time: list[float] = []
        self.from_start: list[float] = []
        self.timeouts = 0

    def _saw(self, watcher: int, ids: frozenset[str], at: float) -> None:
        if self.current is not None:
            self.current.saw(watcher, ids, at)

    async def start(self) -> None:
        for instance in self.stable:
            await self.writer.register(instance, ttl=30)
        for watcher in self.watchers:
            watcher.start()
        expected = frozenset(i.id for i in self.stable)
        await self._wait_all(expected, timeout=30)

    async def _wait_all(self, expected: frozenset[str], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while any(w.ids != expected for w in self.watchers):
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.name}: watchers did not converge on {sorted(expected)}")
            await asyncio.sleep(0.01)

    async def change(self) -> None:
        """Register or deregister the moving instance; time its arrival at every watcher."""
        kind = "deregister" if self.registered else "register"
        target = frozenset(i.id for i in self.stable) | (frozenset() if self.registered else {self.moving.id})
        round_ = Round(target, len(self.watchers))
        self.current = round_
        before = time.perf_counter()
        if self.registered:
            await self.writer.deregister(self.moving)
        else:
            await self.writer.register(self.moving, ttl=30)
        after = time.perf_counter()
        self.call_time.append(after - before)
        self.registered = not self.registered
        try:
            await asyncio.wait_for(round_.done.wait(), 5.0)
        except TimeoutError:
            self.timeouts += 1
            await self._wait_all(target, timeout=30)
            return
        finally:
            self.current = None
        # A watcher may see the change before the writer's call has returned (etcd sends the
        # watch event and the put's answer together): that counts as zero from the return.
        self.all_latency[kind].append(max(0.0, max(round_.arrivals.values()) - after))
        self.from_start.append(max(round_.arrivals.values()) - before)
        self.each_latency.extend(max(0.0, at - after) for at in round_.arrivals.values())

    async def close(self) -> None:
        for watcher in self.watchers:
            await watcher.close()
        await self.writer.close()

    def every(self) -> list[float]:
        return self.all_latency["register"] + self.all_latency["deregister"]


async def main(args: argparse.Namespace, report: Report) -> None:
    watchers = 3 if args.smoke else args.watchers
    changes = 4 if args.smoke else args.changes
    names = [b for b in args.backends.split(",") if b]
    async with contextlib.AsyncExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="grpcmesh-bench-prop-")))
        urls: dict[str, str] = {"memory": "memory://bench-propagation", "sqlite": f"sqlite://{tmp}/registry.db"}
        if "etcd" in names:
            if etcd_available():
                endpoint = stack.enter_context(etcd_server(tmp / "etcd"))
                urls["etcd"] = f"etcd://{endpoint}/bench-prop"
            else:
                report.line("etcd: backend or binary not available in this tree; skipped")
                names.remove("etcd")
        backends = [Backend(name, urls[name], watchers) for name in names]
        for backend in backends:
            stack.push_async_callback(backend.close)
            await backend.start()
        rng = random.Random(7)
        for k in range(changes):
            order = backends[k % len(backends) :] + backends[: k % len(backends)]
            for backend in order:
                await backend.change()
                # A random pause, so changes land at random phases of any polling interval.
                await asyncio.sleep(rng.uniform(0.0, 0.06))

    report.line(f"### Propagation: {watchers} watchers, {changes} changes per backend (half register, half deregister)")
    report.line()
    report.line("Latency from the writer's call returning to every watcher's set changing (`all`), and to each")
    report.line("watcher's (`each`); the writer's own call time alongside.")
    report.line()
    rows: list[list[Any]] = []
    for backend in backends:
        every = backend.every()
        rows.append(
            [
                backend.name,
                ms(median(every)),
                ms(percentile(every, 99)),
                ms(max(every, default=float("nan"))),
                ms(percentile(backend.all_latency["register"], 99)),
                ms(percentile(backend.all_latency["deregister"], 99)),
                ms(median(backend.each_latency)),
                ms(median(backend.call_time)),
                ms(percentile(backend.from_start, 99)),
                backend.timeouts,
            ]
        )
    report.table(
        [
            "backend",
            "all p50",
            "all p99",
            "all max",
            "register p99",
            "deregister p99",
            "each p50",
            "call p50",
            "all p99 from call start",
            "timeouts (>5 s)",
        ],
        rows,
    )
    baseline = next((b for b in backends if b.name == "memory"), None)
    base_note = f"; memory baseline p99 {ms(percentile(baseline.every(), 99))}" if baseline else ""
    for backend in backends:
        if backend.name not in GOALS:
            continue
        every = backend.every()
        p99 = percentile(every, 99)
        goal = GOALS[backend.name]
        report.add(
            Row(
                figure=f"2. propagation, {backend.name}, {watchers} watchers",
                goal=f"p99 <= {goal * 1000:.0f} ms",
                measured=(
                    f"p50 {ms(median(every))}, p99 {ms(p99)} ({p99 / goal:.2f}x goal); "
                    f"p99 from the call's start {ms(percentile(backend.from_start, 99))}{base_note}"
                ),
                met=p99 <= goal and backend.timeouts == 0,
                command=command(SCRIPT),
                details={"p50": median(every), "p99": p99, "timeouts": backend.timeouts},
            )
        )


if __name__ == "__main__":
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--watchers", type=int, default=20, help="watchers, each with its own registry client")
    p.add_argument("--changes", type=int, default=100, help="changes per backend")
    p.add_argument("--backends", default="memory,sqlite,etcd", help="comma-separated backends")
    run(main, p.parse_args(), SCRIPT)
