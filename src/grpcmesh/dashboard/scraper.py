"""Scrapes instances' Prometheus endpoints and keeps the latest window of each.

Keyed by URL, not by instance: when several instances share one process (and so one
``/metrics``), the endpoint is fetched once per round.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import urlsplit

import aiohttp

from grpcmesh.dashboard.metrics import DEFAULT_IGNORED_SERVICES, MetricsSample, Window, parse_sample, window_between

log = logging.getLogger("grpcmesh.dashboard")

MAX_EXPOSITION_BYTES = 8 * 1024 * 1024


@dataclass
class EndpointState:
    """What is known about one metrics endpoint."""

    sample: MetricsSample | None = None
    window: Window | None = None
    error: str | None = None


def check_metrics_url(url: str) -> str | None:
    """Why ``url`` cannot be scraped (only absolute http(s) URLs can), or ``None`` if it can."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        return f"metrics_url {url!r} is not an http(s) URL such as http://127.0.0.1:9464/metrics"
    return None


class MetricsScraper:
    """Fetches a set of ``/metrics`` URLs on demand, turning consecutive scrapes into windows."""

    def __init__(
        self,
        *,
        timeout: float = 1.0,
        ignored_services: tuple[str, ...] = DEFAULT_IGNORED_SERVICES,
    ) -> None:
        self._timeout = timeout
        self._ignored = ignored_services
        self._session: aiohttp.ClientSession | None = None
        self._endpoints: dict[str, EndpointState] = {}

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
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self._timeout))
        await asyncio.gather(*(self._scrape_one(url) for url in sorted(wanted)))

    async def _scrape_one(self, url: str) -> None:
        endpoint = self._endpoints.setdefault(url, EndpointState())
        problem = check_metrics_url(url)
        if problem is not None:
            endpoint.error, endpoint.window, endpoint.sample = problem, None, None
            return
        try:
            text = await self._fetch(url)
            sample = parse_sample(text, time.monotonic(), ignored_services=self._ignored)
        except (aiohttp.ClientError, TimeoutError, ValueError, UnicodeDecodeError) as exc:
            if endpoint.error is None:
                log.info("cannot scrape %s: %s", url, exc)
            endpoint.error = f"scrape failed: {str(exc) or type(exc).__name__}"
            endpoint.window, endpoint.sample = None, None
            return
        previous, endpoint.sample, endpoint.error = endpoint.sample, sample, None
        if previous is not None and sample.at > previous.at:
            endpoint.window = window_between(previous, sample)

    async def _fetch(self, url: str) -> str:
        assert self._session is not None
        async with self._session.get(url, headers={"Accept": "text/plain"}) as response:
            response.raise_for_status()
            body = await response.content.read(MAX_EXPOSITION_BYTES + 1)
            if len(body) > MAX_EXPOSITION_BYTES:
                raise ValueError(f"exposition larger than {MAX_EXPOSITION_BYTES} bytes")
            return body.decode(response.charset or "utf-8")

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
