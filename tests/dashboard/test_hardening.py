"""Hostile registry data and hostile metrics endpoints must not make the dashboard leak, fetch
other pages, log a traceback every second or stop (issue 16's dashboard items).

Every endpoint here is a real aiohttp server on 127.0.0.1; the registry is a real in-memory one.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from aiohttp import web

from grpcmesh import ServiceInstance, open_registry
from grpcmesh.dashboard.collector import MeshCollector
from grpcmesh.dashboard.hub import Hub
from grpcmesh.dashboard.metrics import MalformedExposition, parse_sample
from grpcmesh.dashboard.scraper import MetricsScraper
from grpcmesh.dashboard.view import metrics_target
from grpcmesh.registry.memory import MemoryRegistry

SECRET = "INTERNAL_TOKEN=s3cr3t-value"
GOOD = (
    "# TYPE grpc_server_handled_total counter\n"
    'grpc_server_handled_total{grpc_service="shop.Orders",grpc_method="Get",grpc_type="unary",grpc_code="OK"} 5\n'
)
BAD_BUCKET = (
    "# TYPE grpc_server_handling_seconds histogram\n"
    'grpc_server_handling_seconds_bucket{grpc_service="shop.Orders",grpc_method="Get",grpc_type="unary",le="abc"} 1\n'
    'grpc_server_handling_seconds_count{grpc_service="shop.Orders",grpc_method="Get",grpc_type="unary"} 1\n'
)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@asynccontextmanager
async def http_server(routes: dict[str, Handler]) -> AsyncIterator[tuple[str, list[str]]]:
    """A real HTTP server on 127.0.0.1; yields its base URL and the paths it was asked for."""
    hits: list[str] = []

    @web.middleware
    async def record(request: web.Request, handler: Handler) -> web.StreamResponse:
        hits.append(request.path)
        return await handler(request)

    app = web.Application(middlewares=[record])
    for path, handler in routes.items():
        app.router.add_get(path, handler)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}", hits
    finally:
        await runner.cleanup()


def text(body: str, status: int = 200, reason: str | None = None) -> Handler:
    async def handler(_request: web.Request) -> web.Response:
        return web.Response(text=body, status=status, reason=reason)

    return handler


def instance(metrics_url: str | None, address: str = "127.0.0.1", iid: str = "o1", **extra: object) -> ServiceInstance:
    metadata = {"metrics_url": metrics_url} if metrics_url else {}
    return ServiceInstance(name="orders", id=iid, address=address, port=7000, metadata=metadata, **extra)


async def collect(registry_url: str, rounds: int = 3, **kwargs: object) -> tuple[MeshCollector, str]:
    """Run a collector over ``registry_url`` for a few scrape rounds; returns it and its last state JSON."""
    registry = open_registry(registry_url)
    collector = MeshCollector(registry, Hub(), scrape_interval=60, relist_interval=60, **kwargs)  # type: ignore[arg-type]
    await collector.start()
    try:
        for _ in range(rounds):
            await collector.scrape_once()
        return collector, collector.state_json()
    finally:
        await collector.stop()
        await registry.close()


def test_metrics_target_accepts_only_the_instances_own_address() -> None:
    assert metrics_target(instance("http://127.0.0.1:9/metrics")) == ("http://127.0.0.1:9/metrics", None)
    # a loopback instance may name any loopback spelling
    assert metrics_target(instance("http://localhost:9/m"))[0] == "http://localhost:9/m"
    assert metrics_target(instance("http://[::1]:9/m"))[0] == "http://[::1]:9/m"
    assert metrics_target(instance("http://10.0.0.5:9/m", address="10.0.0.5"))[0] == "http://10.0.0.5:9/m"
    assert metrics_target(instance("http://HOST.example:9/m", address="host.example"))[0] is not None
    # the wildcard address means "this instance's own address"
    assert metrics_target(instance("http://0.0.0.0:9/m", address="10.0.0.5"))[0] == "http://10.0.0.5:9/m"
    for url, address in [
        ("http://169.254.169.254/latest/meta-data", "10.0.0.5"),  # cloud metadata service
        ("http://127.0.0.1:9/metrics", "10.0.0.5"),  # the dashboard's own machine
        ("http://internal.example/admin", "10.0.0.5"),
        ("http://10.0.0.6:9/m", "10.0.0.5"),
        ("http://user:pw@10.0.0.5:9/m", "10.0.0.5"),
        ("file:///etc/passwd", "10.0.0.5"),
        ("http://10.0.0.5:99999/m", "10.0.0.5"),
    ]:
        url_to_fetch, problem = metrics_target(instance(url, address=address))
        assert url_to_fetch is None, url
        assert problem is not None
        assert "pw" not in problem


async def test_a_metrics_url_on_another_host_is_never_fetched(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    async with http_server({"/internal": text(SECRET)}) as (base, hits):
        url = f"memory://{tmp_path.name}"
        async with open_registry(url) as registry:
            # an instance registered at a documentation address names a page on the dashboard's own host
            await registry.register(instance(f"{base}/internal", address="192.0.2.10"))
            with caplog.at_level(logging.WARNING, logger="grpcmesh.dashboard"):
                _, state = await collect(url, rounds=3)
        assert hits == []
    assert SECRET not in state
    row = json.loads(state)["services"][0]["instances"][0]
    assert row["metrics"]["status"] == "refused"
    refused = [r for r in caplog.records if "not scraping metrics" in r.getMessage()]
    assert len(refused) == 1  # once, not once per round


@pytest.mark.parametrize(
    ("route", "expected"),
    [
        (text(SECRET, status=500, reason=SECRET.replace("=", "-")), "HTTP 500"),
        (text("# TYPE x counter\n" + SECRET + " {{{\n"), "malformed"),
        (text(GOOD.replace(" 5\n", " NaN\n") + "# " + SECRET + "\n"), "not a finite count"),
        (text(BAD_BUCKET + "# " + SECRET + "\n"), "numeric, non-negative 'le'"),
    ],
    ids=["http-error", "garbage", "nan-counter", "malformed-bucket"],
)
async def test_failed_scrapes_never_echo_the_response_and_warn_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, route: Handler, expected: str
) -> None:
    async with http_server({"/metrics": route}) as (base, hits):
        url = f"memory://{tmp_path.name}"
        async with open_registry(url) as registry:
            await registry.register(instance(f"{base}/metrics"))
            with caplog.at_level(logging.DEBUG, logger="grpcmesh.dashboard"):
                _, state = await collect(url, rounds=4)
        assert len(hits) >= 4  # the background loop scrapes once more on its own
    assert "s3cr3t" not in state
    detail = json.loads(state)["services"][0]["instances"][0]["metrics"]
    assert detail["status"] == "error"
    assert expected in detail["detail"]
    assert all("s3cr3t" not in r.getMessage() and r.exc_info is None for r in caplog.records)
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING and "cannot scrape" in r.getMessage()]
    assert len(warnings) == 1


async def test_redirects_are_not_followed(tmp_path: Path) -> None:
    async def redirect(_request: web.Request) -> web.Response:
        raise web.HTTPFound("/internal")

    async with http_server({"/metrics": redirect, "/internal": text(GOOD)}) as (base, hits):
        scraper = MetricsScraper(timeout=2)
        try:
            await scraper.scrape([f"{base}/metrics"])
        finally:
            await scraper.close()
        assert hits == ["/metrics"]
    state = scraper.state(f"{base}/metrics")
    assert state is not None
    assert state.error == "HTTP 302"


async def test_responses_are_capped_in_size_and_time(tmp_path: Path) -> None:
    async def endless(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        await response.prepare(request)
        for _ in range(1000):  # 64 MiB if read to the end, without a Content-Length
            await response.write(b"#" * 65536)
        return response

    async def slow(_request: web.Request) -> web.Response:
        await asyncio.sleep(3)
        return web.Response(text=GOOD)

    async with http_server({"/big": endless, "/slow": slow}) as (base, _):
        scraper = MetricsScraper(timeout=0.5, max_bytes=256 * 1024)
        try:
            await asyncio.wait_for(scraper.scrape([f"{base}/big", f"{base}/slow"]), 10)
        finally:
            await scraper.close()
    big, slow_state = scraper.state(f"{base}/big"), scraper.state(f"{base}/slow")
    assert big is not None
    assert big.error is not None
    assert "larger than" in big.error or "timed out" in big.error
    assert slow_state is not None
    assert slow_state.error == "timed out after 0.5s"


@pytest.mark.parametrize(
    "hostile",
    [
        "x{" * 5000,
        'grpc_server_handled_total{grpc_code="OK"} 1e999\n',
        'grpc_server_handled_total{grpc_code="OK"} -3\n',
        'grpc_server_handled_total{grpc_code="OK"} 1.7e308\n',
        'grpc_server_handling_seconds_bucket{le="-1"} 2\n',
        "\x00\xff",
        "a b c d e f\n",
    ],
)
def test_parse_turns_any_parser_failure_into_one_error_type(hostile: str) -> None:
    with pytest.raises(MalformedExposition) as failure:
        parse_sample(hostile, 0.0)
    assert hostile.strip()[-6:] not in str(failure.value)


class FlakyRegistry(MemoryRegistry):
    """A real in-memory registry whose listing and watches fail in unexpected ways for a while."""

    def __init__(self, namespace: str, failures: int) -> None:
        super().__init__(namespace)
        self.list_failures = failures
        self.watch_failures = failures

    async def list_services(self) -> list[str]:
        if self.list_failures > 0:
            self.list_failures -= 1
            raise RuntimeError("listing exploded")
        return await super().list_services()

    async def watch(self, name: str) -> AsyncIterator[list[ServiceInstance]]:
        if self.watch_failures > 0:
            self.watch_failures -= 1
            raise TypeError("a record the decoder could not handle")
        async for snapshot in super().watch(name):
            yield snapshot


async def test_collector_loops_survive_any_exception_and_log_it_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    from grpcmesh.dashboard import collector as collector_module

    monkeypatch.setattr(collector_module, "RETRY_DELAY", 0.05)
    registry = FlakyRegistry(tmp_path.name, failures=3)
    await registry.register(instance(None))
    collector = MeshCollector(registry, Hub(), scrape_interval=0.1, relist_interval=0.1)
    with caplog.at_level(logging.DEBUG, logger="grpcmesh.dashboard"):
        await collector.start()
        try:
            async with asyncio.timeout(10):
                while "orders" not in collector.view.services:
                    await asyncio.sleep(0.05)
        finally:
            await collector.stop()
            await registry.close()
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert sum("listing the registry's services failed" in w for w in warnings) == 1
    assert sum("watching service 'orders' failed" in w for w in warnings) == 1
    assert any("works again" in r.getMessage() for r in caplog.records)


async def test_a_registry_with_too_many_services_is_followed_truncated_with_one_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    from grpcmesh.dashboard import collector as collector_module

    monkeypatch.setattr(collector_module, "MAX_SERVICES", 3)
    registry = MemoryRegistry(tmp_path.name)
    for n in range(5):
        await registry.register(ServiceInstance(name=f"svc-{n}", id="i", address="127.0.0.1", port=7000 + n))
    collector = MeshCollector(registry, Hub(), scrape_interval=60, relist_interval=0.05)
    with caplog.at_level(logging.WARNING, logger="grpcmesh.dashboard"):
        await collector.start()
        try:
            await asyncio.sleep(0.3)  # a few re-listings
            assert sorted(collector.view.services) == ["svc-0", "svc-1", "svc-2"]
        finally:
            await collector.stop()
            await registry.close()
    assert sum("lists 5 services" in r.getMessage() for r in caplog.records) == 1
