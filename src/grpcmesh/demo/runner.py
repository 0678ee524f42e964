"""The demo's supervisor: start the shop, drive traffic, inject chaos, show it live, stop cleanly."""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import signal
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console, RenderableType
from rich.live import Live

from grpcmesh.dashboard import Dashboard
from grpcmesh.demo.observer import MeshObserver
from grpcmesh.demo.processes import Child, spawn
from grpcmesh.demo.summary import ChaosEvent, DemoSummary
from grpcmesh.demo.system import SERVICES, DemoSystem, auth_key_from_env, check_shop_dir, default_shop_dir
from grpcmesh.demo.traffic import TrafficFeed, TrafficReport
from grpcmesh.demo.view import render
from grpcmesh.errors import MeshError
from grpcmesh.model import HealthStatus, ServiceInstance
from grpcmesh.registry import open_registry

LABEL_KEY = "demo_label"
"""Instance metadata the demo sets on each child, to tell which process is which instance."""

CHAOS_ORDER = ("order-service", "user-service", "payment-service", "notification-service")
SERVICE_GRACE = 20.0
TRAFFIC_GRACE = 15.0


class DemoError(MeshError):
    """The demo could not run (a service would not start, the shop is missing...)."""


@dataclass(frozen=True)
class DemoOptions:
    seconds: float | None = None
    """Stop after this many seconds of traffic; ``None`` runs until Ctrl-C."""
    chaos: bool = True
    rate: float = 8.0
    """Traffic operations per second."""
    instances: int = 2
    """Instances per service."""
    workdir: Path | None = None
    """Registry, data and logs; a fresh temporary directory (removed afterwards) by default."""
    shop_dir: Path | None = None
    startup_timeout: float = 90.0
    first_chaos_after: float | None = None
    """Seconds of traffic before the first kill (default: a third of ``seconds``, at most 10)."""
    chaos_every: float = 20.0
    dashboard_port: int | None = None
    """Also serve the web dashboard (``grpcmesh.dashboard``) on 127.0.0.1 at this port (0: any free one)."""


@contextlib.contextmanager
def _workdir(given: Path | None) -> Iterator[Path]:
    if given is not None:
        given.mkdir(parents=True, exist_ok=True)
        yield given.resolve()
        return
    path = Path(tempfile.mkdtemp(prefix="grpcmesh-demo-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


async def run_demo(options: DemoOptions, console: Console) -> DemoSummary:
    """Run the demo until ``options.seconds`` pass or SIGINT/SIGTERM; everything started is stopped."""
    shop_dir = check_shop_dir(options.shop_dir or default_shop_dir())
    with _workdir(options.workdir) as workdir:
        system = DemoSystem(shop_dir, workdir, auth_key_from_env())
        system.logs_dir.mkdir(parents=True, exist_ok=True)
        return await _Demo(system, options, console).run()


class _Demo:
    def __init__(self, system: DemoSystem, options: DemoOptions, console: Console) -> None:
        self.system = system
        self.options = options
        self.console = console
        self.registry = open_registry(system.registry_url)
        self.observer = MeshObserver(self.registry, SERVICES)
        self.services: list[Child] = []
        self.traffic: Child | None = None
        self.feed: TrafficFeed | None = None
        self.summary = DemoSummary(registry_url=system.registry_url)
        self.stop = asyncio.Event()
        self.signals = 0
        self.started: float | None = None
        self.phase = "starting"
        self.notes: list[tuple[float, str]] = []
        self._counters: dict[str, int] = {}
        self._kill_times: dict[str, float] = {}
        self._feed_task: asyncio.Task[None] | None = None

    # -- lifecycle ---------------------------------------------------------------------

    async def run(self) -> DemoSummary:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, self._on_signal)
        self.console.print(f"registry: {self.system.registry_url}   logs: {self.system.logs_dir}", markup=False)
        dashboard = await self._start_dashboard()
        try:
            with Live(self._render(), console=self.console, refresh_per_second=4, transient=False) as live:
                try:
                    await self._main(live)
                finally:
                    self.phase = "stopping"
                    live.update(self._render())
                    await self._shutdown(live)
        finally:
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(sig)
            if dashboard is not None:
                await dashboard.stop()
        return self.summary

    async def _start_dashboard(self) -> Dashboard | None:
        if self.options.dashboard_port is None:
            return None
        dashboard = Dashboard(self.registry, port=self.options.dashboard_port)
        await dashboard.start()
        self.summary.dashboard_url = dashboard.url
        self.console.print(f"dashboard: {dashboard.url}", markup=False)
        return dashboard

    def _on_signal(self) -> None:
        self.signals += 1
        self.summary.interrupted = True
        self.stop.set()
        if self.signals > 1:  # a second Ctrl-C: stop waiting for graceful exits
            for child in [*self.services, *([self.traffic] if self.traffic else [])]:
                with contextlib.suppress(ProcessLookupError):
                    child.process.send_signal(signal.SIGKILL)

    async def _main(self, live: Live) -> None:
        await self.observer.start()
        for name in SERVICES:
            for _ in range(self.options.instances):
                await self._start_service(name)
        await self._wait_ready(live)
        if self.stop.is_set():
            return
        await self._start_traffic()
        self.started = time.monotonic()
        self.phase = "running" + (f" for {self.options.seconds:g}s" if self.options.seconds else " (Ctrl-C to stop)")
        next_chaos = self.started + self._first_chaos_after() if self.options.chaos else None
        deadline = self.started + self.options.seconds if self.options.seconds else None
        chaos_turn = 0
        while not self.stop.is_set():
            now = time.monotonic()
            if deadline is not None and now >= deadline:
                break
            if next_chaos is not None and now >= next_chaos:
                await self._chaos(CHAOS_ORDER[chaos_turn % len(CHAOS_ORDER)])
                chaos_turn += 1
                next_chaos = now + self.options.chaos_every
            self._track_replacements()
            self._check_children()
            live.update(self._render(next_chaos))
            await self._pause(0.25)

    def _first_chaos_after(self) -> float:
        if self.options.first_chaos_after is not None:
            return self.options.first_chaos_after
        return min(10.0, self.options.seconds / 3) if self.options.seconds else 10.0

    async def _pause(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.stop.wait(), seconds)

    async def _wait_ready(self, live: Live) -> None:
        deadline = time.monotonic() + self.options.startup_timeout
        while not self.stop.is_set():
            serving = self.observer.serving()
            if all(count >= self.options.instances for count in serving.values()):
                self._note(f"all {len(SERVICES) * self.options.instances} instances SERVING")
                return
            self._check_children()
            if time.monotonic() > deadline:
                raise DemoError(
                    f"the shop did not become ready within {self.options.startup_timeout:g}s "
                    f"(SERVING: {serving}); logs are in {self.system.logs_dir}"
                )
            live.update(self._render())
            await self._pause(0.25)

    def _check_children(self) -> None:
        """A service process that died on its own (not by chaos) is a failure worth stopping for."""
        for child in self.services:
            if not child.running and not child.killed:
                raise DemoError(
                    f"{child.label} (pid {child.pid}) exited with code {child.process.returncode}:\n{child.log_tail()}"
                )
        if self.traffic is not None and not self.traffic.running:
            raise DemoError(
                f"the traffic generator exited with code {self.traffic.process.returncode}:\n{self.traffic.log_tail()}"
            )

    async def _start_service(self, name: str) -> Child:
        number = self._counters[name] = self._counters.get(name, 0) + 1
        label = f"{name}#{number}"
        env = self.system.env()
        env["GRPCMESH_SERVICE_METADATA"] = json.dumps({LABEL_KEY: label})
        child = await spawn(
            label, self.system.service_argv(name), env, log_path=self.system.logs_dir / f"{name}-{number}.log"
        )
        self.services.append(child)
        self.summary.pids.append(child.pid)
        self.summary.instances_started += 1
        return child

    async def _start_traffic(self) -> None:
        self.traffic = await spawn(
            "traffic",
            self.system.traffic_argv(self.options.rate),
            self.system.env(serving=False),
            log_path=self.system.logs_dir / "traffic.log",
            capture_stdout=True,
        )
        self.summary.pids.append(self.traffic.pid)
        assert self.traffic.process.stdout is not None
        self.feed = TrafficFeed(self.traffic.process.stdout)
        self._feed_task = asyncio.create_task(self.feed.run())
        self._note(f"traffic started: {self.options.rate:g} operations/s (CreateUser, CreateOrder, GetOrder)")

    # -- chaos -------------------------------------------------------------------------

    def _instance_of(self, child: Child) -> ServiceInstance | None:
        for inst in self.observer.instances():
            if inst.metadata.get(LABEL_KEY) == child.label:
                return inst
        return None

    async def _chaos(self, name: str) -> None:
        candidates = [
            (child, inst)
            for child in self.services
            if child.running
            and child.label.startswith(name + "#")
            and (inst := self._instance_of(child)) is not None
            and inst.health is HealthStatus.SERVING
        ]
        if not candidates:
            self._note(f"chaos skipped: no SERVING {name} instance to kill")
            return
        victim, inst = candidates[0]
        assert self.started is not None
        at = time.monotonic() - self.started
        await victim.kill()
        self._note(f"chaos: SIGKILL {name} {inst.id[:8]} (pid {victim.pid}); starting a replacement")
        replacement = await self._start_service(name)
        self.summary.chaos.append(ChaosEvent(name, inst.id, victim.pid, round(at, 2), replacement.pid))
        self._kill_times[replacement.label] = time.monotonic()

    def _track_replacements(self) -> None:
        for index, event in enumerate(self.summary.chaos):
            if event.replacement_id:
                continue
            child = next(c for c in self.services if c.pid == event.replacement_pid)
            inst = self._instance_of(child)
            if inst is not None and inst.health is HealthStatus.SERVING:
                after = time.monotonic() - self._kill_times[child.label]
                self.summary.chaos[index] = ChaosEvent(
                    event.service,
                    event.instance_id,
                    event.pid,
                    event.at_s,
                    event.replacement_pid,
                    inst.id,
                    round(after, 2),
                )
                self._note(f"chaos: replacement {event.service} {inst.id[:8]} SERVING after {after:.1f}s")

    # -- shutdown ----------------------------------------------------------------------

    async def _shutdown(self, live: Live) -> None:
        if self.started is not None:
            self.summary.seconds = round(time.monotonic() - self.started, 1)
        if self.traffic is not None:
            self._note("stopping traffic (in-flight calls finish)")
            live.update(self._render())
            await self.traffic.stop(TRAFFIC_GRACE)
            if self._feed_task is not None:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._feed_task, 5.0)
        self._note("stopping services: NOT_SERVING, deregister, drain")
        live.update(self._render())
        stopping = asyncio.gather(*(child.stop(SERVICE_GRACE) for child in self.services))
        while not stopping.done():
            live.update(self._render())
            await asyncio.wait([stopping], timeout=0.25)
        await stopping
        totals = self.observer.server_totals()
        if totals is not None:
            self.summary.server_calls, self.summary.server_errors = totals
        await self.observer.stop()
        await self.registry.close()
        report = (self.feed.final or self.feed.latest) if self.feed else None
        if report is not None:
            self.summary.calls, self.summary.failed = report.calls, report.failed
            self.summary.errors, self.summary.by_operation = dict(report.errors), dict(report.by_operation)
            self.summary.p50_ms, self.summary.p99_ms = report.p50_ms, report.p99_ms
        self.phase = "stopped"
        live.update(self._render())

    # -- view --------------------------------------------------------------------------

    def _note(self, text: str) -> None:
        self.notes.append((time.time(), text))

    def _render(self, next_chaos: float | None = None) -> RenderableType:
        events = [
            (
                e.at,
                f"{e.kind.value:7} {e.instance.name} {e.instance.id[:8]} {e.instance.target} {e.instance.health.value}",
            )
            for e in self.observer.view.events
        ]
        lines = [
            f"{time.strftime('%H:%M:%S', time.localtime(at))}  {text}"
            for at, text in sorted([*events, *self.notes])[-6:]
        ]
        if not self.options.chaos:
            chaos = "off (--no-chaos)"
        elif self.summary.chaos:
            last = self.summary.chaos[-1]
            chaos = f"killed {last.service} {last.instance_id[:8]} at {last.at_s:.1f}s; " + (
                f"replacement SERVING after {last.replacement_serving_after_s:.1f}s"
                if last.replacement_serving_after_s is not None
                else "replacement starting"
            )
        elif next_chaos is not None:
            chaos = f"next SIGKILL in {max(0.0, next_chaos - time.monotonic()):.0f}s"
        else:
            chaos = "waiting for the shop to start"
        return render(
            title="grpcmesh demo: the shop",
            started=self.started,
            phase=self.phase,
            traffic=self.feed.latest if self.feed else TrafficReport(),
            rows=self.observer.rows(),
            events=lines,
            chaos=chaos,
            killed={event.instance_id for event in self.summary.chaos},
        )
