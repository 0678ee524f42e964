"""What the live view shows, gathered the way the dashboard gathers it.

Registry watches (through the ``Registry`` protocol) keep a :class:`MeshView` of the
instances; every ``scrape_interval`` the dashboard's :class:`MetricsScraper` reads each
instance's ``metrics_url`` and the differences between scrapes give calls/s and latency
quantiles per instance.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass

from grpcmesh._tasks import cancel_and_wait
from grpcmesh.dashboard.metrics import OK_CODE, MetricsSample, histogram_quantile
from grpcmesh.dashboard.scraper import MetricsScraper
from grpcmesh.dashboard.view import METRICS_URL_KEY, MeshView
from grpcmesh.errors import MeshError
from grpcmesh.model import HealthStatus, ServiceInstance
from grpcmesh.registry import Registry

log = logging.getLogger("grpcmesh.demo")


@dataclass(frozen=True)
class InstanceRow:
    """One line of the instances table."""

    instance: ServiceInstance
    calls_per_second: float | None
    p50_ms: float | None
    p99_ms: float | None
    calls_total: int | None
    errors_total: int | None
    metrics_problem: str | None


def _totals(sample: MetricsSample) -> tuple[int, int]:
    calls = errors = 0.0
    for key, value in sample.handled.items():
        calls += value
        if dict(key).get("grpc_code", OK_CODE) != OK_CODE:
            errors += value
    return int(calls), int(errors)


class MeshObserver:
    """Follows ``services`` in ``registry`` and scrapes their instances' metrics."""

    def __init__(self, registry: Registry, services: Sequence[str], *, scrape_interval: float = 1.0) -> None:
        self.registry = registry
        self.services = tuple(services)
        self.view = MeshView()
        self.scraper = MetricsScraper(timeout=max(0.2, scrape_interval * 0.8))
        self.scrape_interval = scrape_interval
        self.changed = asyncio.Event()
        self._last_totals: dict[str, tuple[int, int]] = {}
        """Cumulative (calls, errors) last scraped per metrics URL, kept after the instance is gone."""
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        self._tasks = [asyncio.create_task(self._watch(name)) for name in self.services]
        self._tasks.append(asyncio.create_task(self._scrape_loop()))

    async def stop(self) -> None:
        await cancel_and_wait(self._tasks)
        self._tasks.clear()
        await self.scraper.close()

    async def _watch(self, name: str) -> None:
        while True:
            try:
                async for snapshot in self.registry.watch(name):
                    self.view.apply(name, snapshot)
                    self.changed.set()
                return
            except MeshError as exc:
                log.warning("watch of %s failed, retrying: %s", name, exc)
                await asyncio.sleep(1.0)

    async def _scrape_loop(self) -> None:
        while True:
            urls = self.view.metrics_urls()
            try:
                await self.scraper.scrape(urls)
            except Exception:  # a bad endpoint must never stop the view
                log.exception("scraping metrics failed")
            for url in urls:
                state = self.scraper.state(url)
                if state is not None and state.sample is not None:
                    self._last_totals[url] = _totals(state.sample)
            self.changed.set()
            await asyncio.sleep(self.scrape_interval)

    # -- what the view and the summary read ------------------------------------------------

    def instances(self) -> list[ServiceInstance]:
        current = self.view.services
        return [inst for name in self.services for inst in current.get(name, [])]

    def serving(self) -> dict[str, int]:
        """SERVING instances per service."""
        counts = dict.fromkeys(self.services, 0)
        for inst in self.instances():
            if inst.health is HealthStatus.SERVING:
                counts[inst.name] += 1
        return counts

    def rows(self) -> list[InstanceRow]:
        rows = []
        for inst in self.instances():
            url = inst.metadata.get(METRICS_URL_KEY)
            state = self.scraper.state(url) if url else None
            window = state.window if state else None
            totals = _totals(state.sample) if state and state.sample else None
            has_calls = window is not None and window.calls_per_second > 0
            p50 = histogram_quantile(0.5, window.bucket_rates) if window and has_calls else None
            p99 = histogram_quantile(0.99, window.bucket_rates) if window and has_calls else None
            problem = None if url else "no metrics_url"
            if state is not None and state.error:
                problem = state.error
            rows.append(
                InstanceRow(
                    instance=inst,
                    calls_per_second=window.calls_per_second if window else None,
                    p50_ms=None if p50 is None else p50 * 1000,
                    p99_ms=None if p99 is None else p99 * 1000,
                    calls_total=totals[0] if totals else None,
                    errors_total=totals[1] if totals else None,
                    metrics_problem=problem,
                )
            )
        return rows

    def server_totals(self) -> tuple[int, int] | None:
        """Calls and errors every instance ever seen has reported (the last scrape of each).

        ``None`` when no instance exposed metrics (``metrics.enabled: false``), rather than a misleading 0.
        """
        if not self._last_totals:
            return None
        return sum(c for c, _ in self._last_totals.values()), sum(e for _, e in self._last_totals.values())
