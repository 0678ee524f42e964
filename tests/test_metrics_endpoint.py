"""The ``/metrics`` endpoint (asyncio, no web framework): answers scrapes, shrugs off bad clients."""

from __future__ import annotations

import asyncio
import urllib.request

from prometheus_client import CollectorRegistry, Counter

from grpcmesh.middleware import MetricsServer


def fetch(url: str) -> tuple[int, str, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, response.headers["Content-Type"], response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.headers["Content-Type"], error.read()


async def raw(port: int, payload: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(payload)
    await writer.drain()
    try:
        return await asyncio.wait_for(reader.read(), 10)
    finally:
        writer.close()


async def test_scrapes_and_hostile_clients() -> None:
    registry = CollectorRegistry()
    Counter("answers", "Things answered", registry=registry).inc(42)
    async with MetricsServer(registry) as server:
        assert server.port
        url = f"http://127.0.0.1:{server.port}"
        # A client that connects and never sends a byte must not hold up a scrape.
        idle_reader, idle_writer = await asyncio.open_connection("127.0.0.1", server.port)
        status, content_type, body = await asyncio.to_thread(fetch, f"{url}/metrics")
        assert status == 200
        assert content_type.startswith("text/plain")
        assert b"answers_total 42.0" in body
        status, _, _ = await asyncio.to_thread(fetch, f"{url}/secret")
        assert status == 404
        garbage = await raw(server.port, b"\x00\xff garbage\r\n\r\n")
        assert garbage == b"" or garbage.split(b" ")[1].startswith(b"4"), garbage  # refused or closed
        assert await raw(server.port, b"GET /" + b"a" * 100_000 + b" HTTP/1.1\r\n\r\n") == b""
        head = await raw(server.port, b"HEAD /metrics HTTP/1.1\r\n\r\n")
        assert head.split(b" ")[1] == b"200", head
        assert head.endswith(b"\r\n\r\n")
        status, _, body = await asyncio.to_thread(fetch, f"{url}/metrics?x=1")
        assert status == 200
        assert b"answers_total" in body
    # Stopped with the idle client still connected: it was closed, not waited for.
    assert await asyncio.wait_for(idle_reader.read(), 5) == b""
    idle_writer.close()
