"""End to end: the dashboard in headless Chromium while the example shop runs with traffic.

The shop's real processes (user, two order instances, payment, notification: each a separate
``python -m shop serve`` on the embedded SQLite registry, started the way ``grpcmesh demo``
starts them) and the shop's traffic generator (a client outside the mesh). The page must draw
the observed edges user→order, order→payment, order→notification and order→user with rates
above zero and an edge from the external node; SIGKILLing one order instance must show as a
``removed`` marker on order-service's charts, and the killed instance's share of the calls
must move to the surviving order instance. The screenshot taken under load is what
``docs/dashboard.png`` shows (set ``GRPCMESH_UPDATE_SCREENSHOT=1`` to rewrite it).
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from playwright.async_api import Browser, Page

from grpcmesh.dashboard import Dashboard
from grpcmesh.demo.processes import Child, spawn
from grpcmesh.demo.system import DemoSystem, check_shop_dir, default_shop_dir
from grpcmesh.model import HealthStatus
from grpcmesh.registry import open_registry
from tests.dashboard.conftest import ARTIFACTS
from tests.helpers import ROOT

pytestmark = pytest.mark.slow

LABEL_KEY = "demo_label"
PROCESSES = ["user-service", "order-service", "order-service", "payment-service", "notification-service"]
OBSERVED_EDGES = [
    "user-service->order-service",
    "order-service->payment-service",
    "order-service->notification-service",
    "order-service->user-service",
]
SCREENSHOT = ROOT / "docs" / "dashboard.png"


class Shop:
    def __init__(self, system: DemoSystem) -> None:
        self.system = system
        self.services: dict[str, Child] = {}
        self.traffic: Child | None = None

    async def start(self) -> None:
        self.system.logs_dir.mkdir(parents=True, exist_ok=True)
        counts: dict[str, int] = {}
        for name in PROCESSES:
            counts[name] = counts.get(name, 0) + 1
            label = f"{name}#{counts[name]}"
            env = self.system.env()
            env["GRPCMESH_SERVICE_METADATA"] = json.dumps({LABEL_KEY: label})
            log_path = self.system.logs_dir / f"{label.replace('#', '-')}.log"
            self.services[label] = await spawn(label, self.system.service_argv(name), env, log_path=log_path)

    async def start_traffic(self, rate: float) -> None:
        self.traffic = await spawn(
            "traffic",
            self.system.traffic_argv(rate),
            self.system.env(serving=False),
            log_path=self.system.logs_dir / "traffic.log",
        )

    async def stop(self) -> None:
        if self.traffic is not None:
            await self.traffic.stop(10)
        await asyncio.gather(*(child.stop(15) for child in self.services.values()))

    def logs(self) -> str:
        return "\n".join(f"--- {label}\n{child.log_tail()}" for label, child in self.services.items())


@pytest.fixture
async def shop(tmp_path: Path) -> AsyncIterator[Shop]:
    system = DemoSystem(check_shop_dir(default_shop_dir()), tmp_path / "shop", auth_key="dashboard-e2e-key")
    running = Shop(system)
    try:
        await running.start()
        yield running
    finally:
        await running.stop()


async def wait_serving(shop: Shop, timeout: float = 90.0) -> dict[str, str]:
    """Until every process's instance is SERVING; returns label -> instance id."""
    deadline = time.monotonic() + timeout
    async with open_registry(shop.system.registry_url) as registry:
        while True:
            found: dict[str, str] = {}
            for name in set(PROCESSES):
                for inst in await registry.get_service(name):
                    if inst.health is HealthStatus.SERVING and LABEL_KEY in inst.metadata:
                        found[inst.metadata[LABEL_KEY]] = inst.id
            if set(found) == set(shop.services):
                return found
            for label, child in shop.services.items():
                assert child.running, f"{label} exited:\n{child.log_tail()}"
            assert time.monotonic() < deadline, f"not all SERVING: {found}\n{shop.logs()}"
            await asyncio.sleep(0.5)


async def edge_calls(page: Page, edge: str) -> float:
    value = await page.locator(f'#graph [data-edge="{edge}"]').get_attribute("data-calls")
    return float(value or 0)


async def wait_edges_flowing(page: Page, edges: list[str], timeout_ms: float) -> None:
    await page.wait_for_function(
        """edges => edges.every(e => {
            const g = document.querySelector(`#graph [data-edge="${e}"]`);
            return g !== null && g.dataset.observed === "true" && Number(g.dataset.calls) > 0;
        })""",
        arg=edges,
        timeout=timeout_ms,
    )


async def instance_rate(http: aiohttp.ClientSession, url: str, service: str, iid: str) -> float | None:
    async with http.get(url + "api/state") as response:
        state: dict[str, Any] = await response.json()
    for s in state["services"]:
        for inst in s["instances"]:
            if s["name"] == service and inst["id"] == iid and inst["rates"] is not None:
                return float(inst["rates"]["calls_per_second"])
    return None


async def mean_rate(http: aiohttp.ClientSession, url: str, service: str, iid: str, seconds: int) -> float:
    """The instance's calls/s averaged over ``seconds`` one-second scrape windows."""
    values = []
    for _ in range(seconds):
        await asyncio.sleep(1.0)
        values.append(await instance_rate(http, url, service, iid) or 0.0)
    return sum(values) / len(values)


async def test_observed_edges_history_and_kill_in_headless_chromium(shop: Shop, browser: Browser) -> None:
    ids = await wait_serving(shop)
    ARTIFACTS.mkdir(exist_ok=True)
    async with (
        Dashboard(shop.system.registry_url, port=0, scrape_interval=1.0, history_seconds=300) as dashboard,
        aiohttp.ClientSession() as http,
    ):
        page = await browser.new_page(viewport={"width": 1360, "height": 1000})
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        await page.goto(dashboard.url)
        await shop.start_traffic(rate=10)

        # the observed edges appear with live rates, and the traffic generator is an external caller
        await wait_edges_flowing(page, OBSERVED_EDGES, timeout_ms=60_000)
        await wait_edges_flowing(page, ["external->order-service"], timeout_ms=20_000)
        for edge in OBSERVED_EDGES:
            label = await page.locator(f'#graph [data-edge="{edge}"] text.edge-label').text_content()
            assert label is not None
            assert "/s" in label, (edge, label)
        # every service has its three charts with points drawn
        for service in ("user-service", "order-service", "payment-service"):
            card = page.locator(f'section.service[data-service="{service}"]')
            for chart in ("calls", "errors", "p99"):
                await card.locator(f'svg[data-chart="{chart}"] polyline').wait_for(state="attached", timeout=10_000)

        # instance detail: metadata, endpoints, dependencies, health history, last scrape
        victim_id, survivor_id = ids["order-service#1"], ids["order-service#2"]
        await page.locator(f'tr.instance[data-instance="order-service/{survivor_id}"]').click()
        detail = page.locator("#detail-body")
        await page.wait_for_function(
            "id => document.querySelector('#detail-body').dataset.instance === 'order-service/' + id", arg=survivor_id
        )
        text = await detail.inner_text()
        for expected in ("order-service#2", "payment-service", "SERVING", "last scrape", "ok"):
            assert expected in text, (expected, text)
        await page.wait_for_timeout(8000)  # more points on the charts
        # the stream sends one new point per second; the page keeps them as a series
        drawn = await page.locator(
            'section.service[data-service="order-service"] svg[data-chart="calls"] polyline'
        ).get_attribute("points")
        assert drawn is not None
        assert len(drawn.split()) >= 5, drawn
        await page.screenshot(path=str(ARTIFACTS / "dashboard-shop.png"))
        if os.environ.get("GRPCMESH_UPDATE_SCREENSHOT"):
            shutil.copyfile(ARTIFACTS / "dashboard-shop.png", SCREENSHOT)

        # SIGKILL one order instance: a removed marker on order-service's charts, calls shift to the survivor
        before = await mean_rate(http, dashboard.url, "order-service", survivor_id, seconds=5)
        assert before > 0
        await shop.services["order-service#1"].kill()
        marker = f'section.service[data-service="order-service"] [data-marker="removed:order-service/{victim_id}"]'
        await page.locator(marker).first.wait_for(state="attached", timeout=20_000)
        await asyncio.sleep(2.0)  # callers' channels have dropped the dead endpoint
        after = await mean_rate(http, dashboard.url, "order-service", survivor_id, seconds=5)
        print(f"surviving order instance: {before:.2f} calls/s before the kill, {after:.2f} after")
        assert after > 1.3 * before, (before, after)  # it now serves the whole order traffic (~2x)
        await wait_edges_flowing(page, ["user-service->order-service", "order-service->payment-service"], 10_000)
        assert await page.locator(f'tr.instance[data-instance="order-service/{victim_id}"]').count() == 0
        await page.screenshot(path=str(ARTIFACTS / "dashboard-shop-after-kill.png"))
        assert errors == [], errors
