"""Registry data is shown, never interpreted: markup in any field stays text in the page."""

from __future__ import annotations

from pathlib import Path

import pytest
from playwright.async_api import Browser

from grpcmesh import ServiceInstance, open_registry
from grpcmesh.dashboard import Dashboard

pytestmark = pytest.mark.slow

PAYLOAD = "<img/src=x/onerror=window.__pwned=1>"


async def test_markup_in_registry_data_is_shown_as_text(tmp_path: Path, browser: Browser) -> None:
    url = f"memory://{tmp_path.name}"
    hostile = ServiceInstance(
        name="orders",
        id="o1",
        address="127.0.0.1",
        port=7000,
        version=PAYLOAD,
        endpoints=(PAYLOAD,),
        metadata={PAYLOAD: PAYLOAD, "metrics_url": "http://127.0.0.1:1/<script>window.__pwned=2</script>"},
    )
    async with open_registry(url) as registry, Dashboard(url, port=0) as dashboard:
        await registry.register(hostile)
        page = await browser.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        await page.goto(dashboard.url)
        row = page.locator('tr.instance[data-instance="orders/o1"]')
        await row.wait_for()
        await row.click()
        await page.locator('#detail-body[data-instance="orders/o1"]').wait_for()
        await page.wait_for_timeout(1500)  # a scrape round and a re-render
        assert await page.evaluate("window.__pwned") is None
        assert await page.locator("img").count() == 0
        assert await page.locator("main script").count() == 0
        assert PAYLOAD in await row.inner_text()
        assert PAYLOAD in await page.locator("#detail-body").inner_text()
        assert PAYLOAD in await page.locator("#events").inner_text()
        assert errors == [], errors
