"""Scrapes instances' Prometheus endpoints and keeps the latest window of each.

Keyed by URL, not by instance: when several instances share one process (and so one
``/metrics``), the endpoint is fetched once per round.

A metrics endpoint is named by whoever wrote the registry record, so its answer is not
trusted: redirects are not followed, the body is capped in size and the request in time,
and an error says what went wrong (``HTTP 500``, ``timed out``...) without ever quoting
the response. A failing endpoint is logged once when it starts failing, not every round.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from grpcmesh._extras import require
from grpcmesh.dashboard.metrics import (
    DEFAULT_IGNORED_SERVICES,
    EdgeKey,
    MalformedExposition,
    MetricsSample,
    Window,
    edge_windows_between,
    parse_sample,
    window_between,
)

if TYPE_CHECKING:
    import aiohttp

log = logging.getLogger("grpcmesh.dashboard")

MAX_EXPOSITION_BYTES = 4 * 1024 * 1024
MAX_CONCURRENT_SCRAPES = 16
PARSE_IN_THREAD_BYTES = 64 * 1024
"""Expositions larger than this are parsed off the event loop."""


class ScrapeFailed(Exception):
    """A scrape that failed for a reason safe to show (never the response's content)."""


@dataclass
class EndpointState:
    """What is known about one metrics endpoint."""

    sample: MetricsSample | None = None
    window: Window | None = None
    edges: dict[EdgeKey, Window] = field(default_factory=dict)
    """Client-side windows per (caller, callee) pair this endpoint's process reported."""
    error: str | None = None
    last_scrape_at: float | None = None
    """Unix time of the last attempt (successful or not)."""


def check_metrics_url(url: str) -> str | None:
    """Why ``url`` cannot be scraped (only absolute http(s) URLs can), or ``None`` if it can."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018  (raises ValueError on a port out of range)
    except ValueError:
        return "metrics_url is not a valid URL"
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return "metrics_url is not an http(s) URL such as http://127.0.0.1:9464/metrics"
    return None


def describe_failure(exc: BaseException, timeout: float) -> str:
    """A short reason for a failed scrape that quotes nothing the endpoint sent."""
    aiohttp = require("aiohttp", "dashboard", "the dashboard")
    if isinstance(exc, ScrapeFailed | MalformedExposition):
        return str(exc)
    if isinstance(exc, TimeoutError | asyncio.TimeoutError):
        return f"timed out after {timeout:g}s"
    if isinstance(exc, aiohttp.ClientResponseError):
        return f"HTTP {exc.status}"
    if isinstance(exc, aiohttp.ClientConnectionError | OSError):
        return "cannot connect"
    if isinstance(exc, UnicodeDecodeError):
        return "malformed metrics exposition (not UTF-8)"
    return f"scrape failed ({type(exc).__name__})"


class MetricsScraper:
    """Fetches a set of ``/metrics`` URLs on demand, turning consecutive scrapes into windows."""

    def __init__(
        self,
        *,
        timeout: float = 1.0,
        ignored_services: tuple[str, ...] = DEFAULT_IGNORED_SERVICES,
        max_bytes: int = MAX_EXPOSITION_BYTES,
    ) -> None:
        self._timeout = timeout
        self._ignored = ignored_services
        self._max_bytes = max_bytes
        self._session: aiohttp.ClientSession | None = None
        self._endpoints: dict[str, EndpointState] = {}
        self._limit = asyncio.Semaphore(MAX_CONCURRENT_SCRAPES)

    def state(self, url: str) -> EndpointState | None:
        return self._endpoints.get(url)

    async def scrape(self, urls: Iterable[str]) -> None:
        """Fetch every URL concurrently; forget URLs no longer asked for."""
        wanted = set(urls)
        for gone in set(self._endpoints) - wanted:
            del self._endpoints[gone]
        if not wanted:
            return
        if self._session is None:
            aiohttp = require("aiohttp", "dashboard", "the dashboard")
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=self._timeout), auto_decompress=False
            )
        ordered = sorted(wanted)
        started = time.time()
        outcomes = await asyncio.gather(*(self._fetch_sample(url) for url in ordered))
        # applied together once every fetch is done, so a reader between two awaits never sees
        # one endpoint of this round beside another still showing the last one
        for url, outcome in zip(ordered, outcomes, strict=True):
            self._apply(url, outcome, started)

    async def _fetch_sample(self, url: str) -> MetricsSample | str:
        """The endpoint's sample, or why it could not be had."""
        problem = check_metrics_url(url)
        if problem is not None:
            return problem
        try:
            async with self._limit:
                async with asyncio.timeout(self._timeout):
                    body = await self._fetch(url)
            text = body.decode("utf-8")
            if len(body) > PARSE_IN_THREAD_BYTES:
                return await asyncio.to_thread(parse_sample, text, time.monotonic(), ignored_services=self._ignored)
            return parse_sample(text, time.monotonic(), ignored_services=self._ignored)
        except Exception as exc:  # anything an endpoint can make us raise is its failure, not ours
            return describe_failure(exc, self._timeout)

    def _apply(self, url: str, outcome: MetricsSample | str, attempted_at: float) -> None:
        endpoint = self._endpoints.setdefault(url, EndpointState())
        endpoint.last_scrape_at = attempted_at
        if isinstance(outcome, str):
            self._failed(url, endpoint, outcome)
            return
        if endpoint.error is not None:
            log.info("metrics endpoint %r answers again", url)
        previous, endpoint.sample, endpoint.error = endpoint.sample, outcome, None
        if previous is not None and outcome.at > previous.at:
            endpoint.window = window_between(previous, outcome)
            endpoint.edges = edge_windows_between(previous, outcome)

    def _failed(self, url: str, endpoint: EndpointState, reason: str) -> None:
        if endpoint.error is None:  # once per failing streak, not every round
            log.warning("cannot scrape metrics endpoint %r: %s (will keep trying)", url, reason)
        endpoint.error = reason
        endpoint.window, endpoint.sample, endpoint.edges = None, None, {}

    async def _fetch(self, url: str) -> bytes:
        assert self._session is not None
        async with self._session.get(
            url, headers={"Accept": "text/plain", "Accept-Encoding": "identity"}, allow_redirects=False
        ) as response:
            if response.status != 200:
                raise ScrapeFailed(f"HTTP {response.status}")
            if response.content_length is not None and response.content_length > self._max_bytes:
                raise ScrapeFailed(f"response larger than {self._max_bytes} bytes")
            chunks: list[bytes] = []
            size = 0
            async for chunk in response.content.iter_chunked(64 * 1024):
                size += len(chunk)
                if size > self._max_bytes:
                    raise ScrapeFailed(f"response larger than {self._max_bytes} bytes")
                chunks.append(chunk)
            return b"".join(chunks)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
