"""The dashboard's HTTP side (aiohttp): the static page, a JSON state, and a Server-Sent Events stream.

Why SSE rather than WebSocket: updates only flow server -> browser, SSE is plain HTTP, and
the browser's ``EventSource`` reconnects by itself.

Why a Host check: a page served on 127.0.0.1 can still be read by a hostile website through
DNS rebinding; refusing requests whose ``Host`` is not a loopback name closes that hole.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
from collections.abc import Awaitable, Callable
from importlib import resources
from types import TracebackType
from typing import TYPE_CHECKING

from grpcmesh._extras import require
from grpcmesh.dashboard.collector import MeshCollector
from grpcmesh.dashboard.history import DEFAULT_SECONDS
from grpcmesh.dashboard.hub import Hub
from grpcmesh.errors import ConfigError
from grpcmesh.registry import Registry, open_registry

if TYPE_CHECKING:
    from aiohttp import web
else:
    web = require("aiohttp.web", "dashboard", "the dashboard")

log = logging.getLogger("grpcmesh.dashboard")

STATIC_FILES = {
    "index.html": "text/html",
    "dashboard.js": "text/javascript",
    "dashboard.css": "text/css",
}
KEEPALIVE_SECONDS = 15.0
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; object-src 'none'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
}

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _is_loopback(host: str) -> bool:
    name = host.strip("[]").lower()
    if name == "localhost" or name.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def _host_without_port(host_header: str) -> str:
    if host_header.startswith("["):
        return host_header.split("]", 1)[0] + "]"
    return host_header.rsplit(":", 1)[0] if host_header.count(":") == 1 else host_header


async def _read_static() -> dict[str, bytes]:
    def read() -> dict[str, bytes]:
        folder = resources.files("grpcmesh.dashboard").joinpath("static")
        return {name: folder.joinpath(name).read_bytes() for name in STATIC_FILES}

    return await asyncio.to_thread(read)


def _sse(event: str, data: str) -> bytes:
    return f"event: {event}\ndata: {data}\n\n".encode()


class Dashboard:
    """A live web view of a mesh: ``await start()``, open :attr:`url`, ``await stop()``.

    ``registry`` is a URL (opened and closed by the dashboard) or an open :class:`Registry`
    (left open). Binds ``127.0.0.1`` unless told otherwise; ``port=0`` picks a free port.
    """

    def __init__(
        self,
        registry: str | Registry,
        *,
        host: str = "127.0.0.1",
        port: int = 8080,
        scrape_interval: float = 1.0,
        relist_interval: float = 1.0,
        history_seconds: float = DEFAULT_SECONDS,
    ) -> None:
        if not 0 <= port <= 65535:
            raise ConfigError(f"dashboard port {port!r} is not a TCP port; use 0 (any free port) to 65535")
        if not 0.1 <= scrape_interval <= 60:
            raise ConfigError(f"dashboard scrape_interval {scrape_interval!r} must be between 0.1 and 60 seconds")
        if not 0.1 <= relist_interval <= 60:
            raise ConfigError(f"dashboard relist_interval {relist_interval!r} must be between 0.1 and 60 seconds")
        if not 60 <= history_seconds <= 3600:
            raise ConfigError(f"dashboard history_seconds {history_seconds!r} must be between 60 and 3600 seconds")
        self._history_seconds = history_seconds
        self._registry_arg = registry
        self._host = host
        self._port = port
        self._scrape_interval = scrape_interval
        self._relist_interval = relist_interval
        self._registry: Registry | None = None
        self._collector: MeshCollector | None = None
        self._runner: web.AppRunner | None = None
        self._hub = Hub()
        self._static: dict[str, bytes] = {}
        self._url: str | None = None

    @property
    def url(self) -> str:
        """``http://host:port/`` once started."""
        if self._url is None:
            raise RuntimeError("the dashboard is not running; await start() first")
        return self._url

    async def start(self) -> None:
        if self._runner is not None:
            return
        self._static = await _read_static()
        registry = open_registry(self._registry_arg) if isinstance(self._registry_arg, str) else self._registry_arg
        self._registry = registry
        try:
            self._collector = MeshCollector(
                registry,
                self._hub,
                scrape_interval=self._scrape_interval,
                relist_interval=self._relist_interval,
                history_seconds=self._history_seconds,
            )
            await self._collector.start()
            self._runner = web.AppRunner(self._make_app(), shutdown_timeout=1.0, access_log=None)
            await self._runner.setup()
            site = web.TCPSite(self._runner, self._host, self._port)
            await site.start()
        except BaseException:
            await self.stop()
            raise
        sockets = self._runner.addresses
        port = sockets[0][1] if sockets else self._port
        host = f"[{self._host}]" if ":" in self._host else self._host
        self._url = f"http://{host}:{port}/"
        log.info("dashboard serving on %s", self._url)

    async def stop(self) -> None:
        self._hub.close_all()
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()
        collector, self._collector = self._collector, None
        if collector is not None:
            await collector.stop()
        registry, self._registry = self._registry, None
        if registry is not None and isinstance(self._registry_arg, str):
            await registry.close()
        self._url = None

    async def __aenter__(self) -> Dashboard:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    # -- HTTP -------------------------------------------------------------------------

    def _make_app(self) -> web.Application:
        middlewares = [self._security_headers]
        if _is_loopback(self._host):
            middlewares.insert(0, self._loopback_host_only)
        app = web.Application(middlewares=middlewares)
        app.router.add_get("/", self._index)
        app.router.add_get("/static/{name}", self._static_file)
        app.router.add_get("/api/state", self._state)
        app.router.add_get("/api/events", self._events)
        return app

    @web.middleware
    async def _loopback_host_only(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if not _is_loopback(_host_without_port(request.host)):
            raise web.HTTPMisdirectedRequest(text="this dashboard only answers requests addressed to localhost\n")
        return await handler(request)

    @web.middleware
    async def _security_headers(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        response = await handler(request)
        if not response.prepared:  # a stream sets its own before it starts
            response.headers.update(SECURITY_HEADERS)
        return response

    async def _index(self, request: web.Request) -> web.Response:
        return web.Response(body=self._static["index.html"], content_type="text/html", charset="utf-8")

    async def _static_file(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        if name not in STATIC_FILES or name == "index.html":
            raise web.HTTPNotFound()
        return web.Response(body=self._static[name], content_type=STATIC_FILES[name], charset="utf-8")

    def _require_collector(self) -> MeshCollector:
        if self._collector is None:
            raise web.HTTPServiceUnavailable(text="dashboard is stopping\n")
        return self._collector

    async def _state(self, request: web.Request) -> web.Response:
        collector = self._require_collector()
        return web.Response(text=collector.state_json(), content_type="application/json")

    async def _events(self, request: web.Request) -> web.StreamResponse:
        collector = self._require_collector()
        response = web.StreamResponse(
            headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
        )
        response.headers.update(SECURITY_HEADERS)
        await response.prepare(request)
        try:
            with self._hub.subscribe() as queue:
                await response.write(_sse("history", collector.history_json()))
                await response.write(_sse("state", collector.state_json()))
                while True:
                    try:
                        message = await asyncio.wait_for(queue.get(), KEEPALIVE_SECONDS)
                    except TimeoutError:
                        await response.write(b": keep-alive\n\n")
                        continue
                    if message is None:
                        break
                    await response.write(_sse(*message))
        except ConnectionError:
            pass  # the page went away
        return response


async def serve_dashboard(
    registry_url: str,
    host: str = "127.0.0.1",
    port: int = 8080,
    *,
    on_ready: Callable[[str], None] | None = None,
    history_seconds: float = DEFAULT_SECONDS,
) -> None:
    """Run a dashboard until cancelled (Ctrl-C); ``on_ready`` receives its URL once it listens."""
    dashboard = Dashboard(registry_url, host=host, port=port, history_seconds=history_seconds)
    await dashboard.start()
    try:
        if on_ready is not None:
            on_ready(dashboard.url)
        await asyncio.Event().wait()
    finally:
        await dashboard.stop()
