"""End to end: the dashboard against a running mesh, driven by headless Chromium (Playwright).

The page must show every instance, show calls/s under load, and drop an instance whose
process was SIGKILLed within 2 s (its registration expires after a 1 s TTL).
"""

from __future__ import annotations

import asyncio
import time

import pytest
from playwright.async_api import Browser, Page

from grpcmesh.dashboard import Dashboard
from tests.dashboard.conftest import ARTIFACTS, CHILD, Mesh, drive_load

KILLED_WITHIN = 10.0
"""Seconds for a SIGKILLed instance (1 s TTL) to leave the page: ~2 s when idle, margin for loaded CI."""


def row(page: Page, key: str) -> str:
    return f'tr.instance[data-instance="{key}"]'


async def wait_for_calls(page: Page, key: str, timeout_ms: float) -> None:
    """Until the instance's row reports a non-zero calls/s rate."""
    await page.wait_for_function(
        """key => {
            const tr = document.querySelector(`tr.instance[data-instance="${key}"]`);
            return tr !== null && Number(tr.dataset.calls) > 0;
        }""",
        arg=key,
        timeout=timeout_ms,
    )


@pytest.mark.slow
async def test_dashboard_in_headless_chromium(mesh: Mesh, browser: Browser) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    async with Dashboard(mesh.url, port=0, scrape_interval=1.0) as dashboard:
        page = await browser.new_page(viewport={"width": 1280, "height": 900})
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        await page.goto(dashboard.url)

        # every instance is shown, and the graph has the services and their dependencies
        for key in mesh.instance_keys:
            await page.locator(row(page, key)).wait_for(state="visible", timeout=10_000)
        edges = [
            "gateway->order-service",
            "order-service->payment-service",
            "payment-service->notification-service",
            "user-service->order-service",
            "order-service->user-service",
        ]
        for edge in edges:
            assert await page.locator(f'#graph [data-edge="{edge}"]').count() == 1, edge
        assert await page.locator("#graph g.node:not(.external)").count() == 5
        # the layout survives the cycle: every node is drawn inside the visible graph, none overlap
        boxes = await page.eval_on_selector_all(
            "#graph g.node",
            "nodes => nodes.map(n => { const r = n.getBoundingClientRect(); return [r.x, r.y, r.right, r.bottom]; })",
        )
        frame = await page.eval_on_selector(
            ".graph-wrap", "w => { const r = w.getBoundingClientRect(); return [r.x, r.y, r.right, r.bottom]; }"
        )
        for x0, y0, x1, y1 in boxes:
            assert frame[0] <= x0, (boxes, frame)
            assert x1 <= frame[2] + 0.5, (boxes, frame)
            assert frame[1] <= y0, (boxes, frame)
            assert y1 <= frame[3] + 0.5, (boxes, frame)
        for i, a in enumerate(boxes):
            for b in boxes[i + 1 :]:
                assert a[2] <= b[0] or b[2] <= a[0] or a[3] <= b[1] or b[3] <= a[1], (a, b)
        assert await page.locator("#connection").get_attribute("data-state") == "live"
        notification = page.locator(row(page, "notification-service/notification-1"))
        assert await notification.locator("td.calls").inner_text() == "\N{EN DASH}"  # no metrics_url, no rates
        assert "no metrics_url" in await notification.inner_text()

        # under a bounded load, live rates appear without reloading the page
        stop = asyncio.Event()
        load = asyncio.create_task(drive_load(mesh.targets, stop))
        try:
            for iid in ("order-1", "order-2", "payment-1", "gateway-1"):
                service = {"order": "order-service", "payme": "payment-service", "gatew": "gateway"}[iid[:5]]
                await wait_for_calls(page, f"{service}/{iid}", timeout_ms=15_000)
            await page.wait_for_function(
                """() => Number(document.querySelector(
                    'tr.instance[data-instance="payment-service/payment-1"]').dataset.errorRatio) > 0""",
                timeout=10_000,
            )
            order_p99 = await page.locator(row(page, "order-service/order-1")).get_attribute("data-p99")
            assert order_p99
            assert float(order_p99) > 0
            assert await page.locator("#events li.added").count() >= len(mesh.instance_keys)
            await page.screenshot(path=str(ARTIFACTS / "dashboard-under-load.png"), full_page=True)

            # SIGKILL the child's server: its registration expires (1 s TTL) and the page drops it
            assert mesh.child is not None
            killed_key = f"{CHILD[0]}/{CHILD[1]}"
            mesh.child.kill()
            killed_at = time.monotonic()
            await page.locator(row(page, killed_key)).wait_for(state="detached", timeout=KILLED_WITHIN * 1000)
            gone_after = time.monotonic() - killed_at
            print(f"killed instance left the page after {gone_after:.2f}s")
            assert gone_after < KILLED_WITHIN
            await page.locator(f'#events li.removed[data-event="removed:{killed_key}"]').wait_for(timeout=2_000)
            # the rest of the mesh is still shown
            for key in mesh.instance_keys:
                if key != killed_key:
                    assert await page.locator(row(page, key)).count() == 1, key
            await page.screenshot(path=str(ARTIFACTS / "dashboard-after-kill.png"), full_page=True)
        finally:
            stop.set()
            made = await load
        assert 0 < made <= 3000
        assert errors == [], errors
