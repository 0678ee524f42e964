"""Keeps the dashboard's :class:`MeshView` current from the registry and the metrics endpoints.

Three kinds of task, all through the ``Registry`` protocol only (so every backend works):

* a re-list loop: ``list_services()`` every ``relist_interval``; starts a watch for each new
  service, stops it for a service that vanished;
* one watch per service: each snapshot becomes registry events and a fresh state push;
* a scrape loop: every ``scrape_interval`` fetches every instance's ``metrics_url`` and
  pushes the state with the new rates.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import Any

from grpcmesh._tasks import cancel_and_wait
from grpcmesh.dashboard.hub import Hub
from grpcmesh.dashboard.scraper import MetricsScraper
from grpcmesh.dashboard.view import MeshView, RegistryEvent
from grpcmesh.errors import MeshError
from grpcmesh.model import ServiceInstance
from grpcmesh.registry import Registry

log = logging.getLogger("grpcmesh.dashboard")

RETRY_DELAY = 1.0


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
    ) -> None:
        self.registry = registry
        self.hub = hub
        self.view = MeshView()
        self.scrape_interval = scrape_interval
        self.relist_interval = relist_interval
        self.scraper = scraper or MetricsScraper(timeout=max(0.2, scrape_interval * 0.8))
        self._watches: dict[str, asyncio.Task[None]] = {}
        self._tasks: list[asyncio.Task[None]] = []

    # -- what pages read ------------------------------------------------------------

    def state_json(self) -> str:
        return _dumps(self.view.to_json(self.scraper.state))

    def history_json(self) -> str:
        return _dumps([event.to_json() for event in self.view.events])

    # -- lifecycle --------------------------------------------------------------------

    async def start(self) -> None:
        """Load the current services, then keep following them in the background."""
        try:
            await self._relist()
        except MeshError as exc:
            log.warning("registry not readable yet, will keep trying: %s", exc)
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
            except MeshError as exc:
                log.warning("listing services failed, retrying: %s", exc)

    async def _relist(self) -> None:
        names = set(await self.registry.list_services())
        for name in sorted(names - set(self._watches)):
            first = asyncio.get_running_loop().create_future()
            self._watches[name] = asyncio.get_running_loop().create_task(self._watch(name, first))
            await first  # the page's first state already holds this service
        for name in sorted(set(self._watches) - names):
            await cancel_and_wait((self._watches.pop(name),))
            self._on_snapshot(name, [])

    async def _watch(self, name: str, first: asyncio.Future[None]) -> None:
        try:
            while True:
                try:
                    async for snapshot in self.registry.watch(name):
                        self._on_snapshot(name, snapshot)
                        if not first.done():
                            first.set_result(None)
                    return  # the registry was closed
                except MeshError as exc:
                    log.warning("watch of %s failed, retrying: %s", name, exc)
                    if not first.done():
                        first.set_result(None)
                    await asyncio.sleep(RETRY_DELAY)
        finally:
            if not first.done():
                first.set_result(None)

    def _on_snapshot(self, name: str, snapshot: list[ServiceInstance]) -> None:
        events: list[RegistryEvent] = self.view.apply(name, snapshot)
        for event in events:
            self.hub.publish("registry", _dumps(event.to_json()))
        if events:
            self.hub.publish("state", self.state_json())

    # -- metrics ----------------------------------------------------------------------

    async def _scrape_loop(self) -> None:
        while True:
            started = time.monotonic()
            try:
                await self.scraper.scrape(self.view.metrics_urls())
            except Exception:  # a dashboard keeps showing the registry even if scraping breaks
                log.exception("scraping metrics failed; will retry")
            self.hub.publish("state", self.state_json())
            await asyncio.sleep(max(0.0, self.scrape_interval - (time.monotonic() - started)))
