"""Keeps the dashboard's :class:`MeshView` current from the registry and the metrics endpoints.

Three kinds of task, all through the ``Registry`` protocol only (so every backend works):

* a re-list loop: ``list_services()`` every ``relist_interval``; starts a watch for each new
  service, stops it for a service that vanished;
* one watch per service: each snapshot becomes registry events and a fresh state push;
* a scrape loop: every ``scrape_interval`` fetches every instance's ``metrics_url``, adds
  a point per service to the history and pushes the state with the new rates and edges.

Each loop survives any exception: it is logged once (with the loop and service it hit) and
the loop carries on, logging again only after it has recovered.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import Any

from grpcmesh._tasks import cancel_and_wait
from grpcmesh.dashboard.history import DEFAULT_SECONDS, MeshHistory
from grpcmesh.dashboard.hub import Hub
from grpcmesh.dashboard.scraper import MetricsScraper
from grpcmesh.dashboard.view import MeshView, RegistryEvent
from grpcmesh.errors import MeshError
from grpcmesh.model import ServiceInstance
from grpcmesh.registry import Registry

log = logging.getLogger("grpcmesh.dashboard")

RETRY_DELAY = 1.0
FIRST_SNAPSHOT_WAIT = 5.0
"""How long a re-list waits for a new service's first snapshot before going on without it."""
MAX_SERVICES = 500
"""Services watched at most; a registry listing more is shown truncated, with one warning."""


class _Failures:
    """Logs a loop's failure once per streak: the first with its traceback, then nothing until
    the loop has succeeded again (so a broken registry does not log every second)."""

    def __init__(self) -> None:
        self._failing: set[str] = set()

    def failed(self, where: str, exc: BaseException) -> None:
        if where in self._failing:
            log.debug("%s failed again: %s", where, type(exc).__name__)
            return
        self._failing.add(where)
        if isinstance(exc, MeshError):
            log.warning("%s failed, will retry: %s", where, exc)
        else:
            log.warning("%s failed, will retry", where, exc_info=exc)

    def ok(self, where: str) -> None:
        if where in self._failing:
            self._failing.discard(where)
            log.info("%s works again", where)


def _dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"))


class MeshCollector:
    """Feeds a :class:`MeshView` and publishes ``state`` and ``registry`` messages on a :class:`Hub`."""

    def __init__(
        self,
        registry: Registry,
        hub: Hub,
        *,
        scrape_interval: float = 1.0,
        relist_interval: float = 1.0,
        scraper: MetricsScraper | None = None,
        history_seconds: float = DEFAULT_SECONDS,
    ) -> None:
        self.registry = registry
        self.hub = hub
        self.view = MeshView()
        self.history = MeshHistory(history_seconds, scrape_interval)
        self._failures = _Failures()
        self._refused_warned: set[tuple[str, str, str]] = set()
        self._truncated_warned = False
        self._loading = False
        """True while the first listing loads what was registered before the dashboard started."""
        self.scrape_interval = scrape_interval
        self.relist_interval = relist_interval
        self.scraper = scraper or MetricsScraper(timeout=max(0.2, scrape_interval * 0.8))
        self._watches: dict[str, asyncio.Task[None]] = {}
        self._tasks: list[asyncio.Task[None]] = []

    # -- what pages read ------------------------------------------------------------

    def state(self, *, latest_only: bool = False) -> dict[str, Any]:
        """Services with instances, rates and history, and the edges (what ``/api/state`` serves).

        The live stream sends the full history once, when a page connects, then ``latest_only``
        states (each service's newest point): a page costs ~1 KB/s instead of the whole window.
        """
        return self.view.to_json(self.scraper.state, self.history, latest_only=latest_only)

    def state_json(self, *, latest_only: bool = False) -> str:
        return _dumps(self.state(latest_only=latest_only))

    def history_json(self) -> str:
        return _dumps([event.to_json() for event in self.view.events])

    # -- lifecycle --------------------------------------------------------------------

    async def start(self) -> None:
        """Load the current services, then keep following them in the background."""
        self._loading = True
        try:
            await self._relist()
        except Exception as exc:  # the page still opens; the re-list loop keeps trying
            self._failures.failed("listing the registry's services", exc)
        finally:
            self._loading = False
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._relist_loop()), loop.create_task(self._scrape_loop())]

    async def stop(self) -> None:
        await cancel_and_wait([*self._tasks, *self._watches.values()])
        self._tasks.clear()
        self._watches.clear()
        await self.scraper.close()

    # -- registry ---------------------------------------------------------------------

    async def _relist_loop(self) -> None:
        while True:
            await asyncio.sleep(self.relist_interval)
            try:
                await self._relist()
            except Exception as exc:  # the loop must outlive any registry fault
                self._failures.failed("listing the registry's services", exc)
            else:
                self._failures.ok("listing the registry's services")

    async def _relist(self) -> None:
        listed = sorted(set(await self.registry.list_services()))
        if len(listed) > MAX_SERVICES:
            if not self._truncated_warned:
                self._truncated_warned = True
                log.warning(
                    "the registry lists %d services; the dashboard follows the first %d", len(listed), MAX_SERVICES
                )
            listed = listed[:MAX_SERVICES]
        names = set(listed)
        for name in sorted(names - set(self._watches)):
            first = asyncio.get_running_loop().create_future()
            self._watches[name] = asyncio.get_running_loop().create_task(self._watch(name, first))
            # the page's first state already holds this service (unless its watch is slow)
            await asyncio.wait([first], timeout=FIRST_SNAPSHOT_WAIT)
        for name in sorted(set(self._watches) - names):
            await cancel_and_wait((self._watches.pop(name),))
            self._on_snapshot(name, [])

    async def _watch(self, name: str, first: asyncio.Future[None]) -> None:
        try:
            while True:
                try:
                    async for snapshot in self.registry.watch(name):
                        self._on_snapshot(name, snapshot)
                        self._failures.ok(f"watching service {name!r}")
                        if not first.done():
                            first.set_result(None)
                    return  # the registry was closed
                except Exception as exc:  # the watch must outlive any registry (or view) fault
                    self._failures.failed(f"watching service {name!r}", exc)
                    if not first.done():
                        first.set_result(None)
                    await asyncio.sleep(RETRY_DELAY)
        finally:
            if not first.done():
                first.set_result(None)

    def _on_snapshot(self, name: str, snapshot: list[ServiceInstance]) -> None:
        events: list[RegistryEvent] = self.view.apply(name, snapshot)
        for event in events:
            self.history.note(event, mark=not self._loading)
            self.hub.publish("registry", _dumps(event.to_json()))
        if events:
            self.hub.publish("state", self.state_json(latest_only=True))

    # -- metrics ----------------------------------------------------------------------

    async def _scrape_loop(self) -> None:
        while True:
            started = time.monotonic()
            try:
                await self.scrape_once()
            except Exception as exc:  # a dashboard keeps showing the registry even if scraping breaks
                self._failures.failed("scraping metrics", exc)
            else:
                self._failures.ok("scraping metrics")
            await asyncio.sleep(max(0.0, self.scrape_interval - (time.monotonic() - started)))

    async def scrape_once(self) -> None:
        """One round: scrape, record a history point per service, push the new state."""
        self._warn_refused()
        await self.scraper.scrape(self.view.metrics_urls())
        self.history.record(time.time(), self.view.service_rates(self.scraper.state))
        self.hub.publish("state", self.state_json(latest_only=True))

    def _warn_refused(self) -> None:
        """One warning per instance whose ``metrics_url`` is refused (while it stays registered)."""
        current: set[tuple[str, str, str]] = set()
        for inst, problem in self.view.refused_metrics():
            key = (inst.name, inst.id, problem)
            current.add(key)
            if key not in self._refused_warned:
                log.warning("not scraping metrics of %r %r: %s", inst.name, inst.id, problem)
        self._refused_warned = current
