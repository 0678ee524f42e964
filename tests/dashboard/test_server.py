"""The dashboard's HTTP side without a browser: JSON state, the SSE stream, headers, the CLI."""

from __future__ import annotations

import asyncio
import json
import re
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from grpcmesh import ServiceInstance, open_registry
from grpcmesh.dashboard import Dashboard
from grpcmesh.errors import ConfigError
from tests.helpers import python_env, read_line_with, stop_process


def _instance(iid: str, **extra: object) -> ServiceInstance:
    fields: dict[str, object] = {"name": "orders", "id": iid, "address": "127.0.0.1", "port": 7000, "version": "v1"}
    return ServiceInstance(**{**fields, **extra})


async def _sse_messages(response: aiohttp.ClientResponse) -> AsyncIterator[tuple[str, Any]]:
    event = ""
    async for raw in response.content:
        line = raw.decode().rstrip("\n")
        if line.startswith("event: "):
            event = line[len("event: ") :]
        elif line.startswith("data: "):
            yield event, json.loads(line[len("data: ") :])


async def _next(stream: AsyncIterator[tuple[str, Any]], event: str, timeout: float = 5.0) -> Any:
    async def scan() -> Any:
        async for name, data in stream:
            if name == event:
                return data
        raise AssertionError("stream ended")

    return await asyncio.wait_for(scan(), timeout)


async def test_state_and_live_registry_events(tmp_path: Path) -> None:
    url = f"sqlite://{tmp_path / 'registry.db'}"
    async with open_registry(url) as registry:
        await registry.register(_instance("o1", dependencies=("payments",)))
        async with Dashboard(url, port=0) as dashboard, aiohttp.ClientSession() as http:
            async with http.get(dashboard.url + "api/state") as response:
                state = await response.json()
            assert [s["name"] for s in state["services"]] == ["orders", "payments"]
            assert state["services"][0]["instances"][0]["id"] == "o1"
            assert state["edges"] == [
                {"from": "orders", "to": "payments", "declared": True, "observed": False, "rates": None}
            ]

            async with http.get(dashboard.url + "api/events") as events:
                assert events.headers["Content-Type"].startswith("text/event-stream")
                stream = _sse_messages(events)
                history = await _next(stream, "history")
                assert [(e["kind"], e["id"]) for e in history] == [("added", "o1")]
                streamed = await _next(stream, "state")
                # the stream carries what /api/state serves: edges and each service's history
                assert streamed["edges"] == state["edges"]
                assert set(streamed["services"][0]["history"]) == {"points", "markers"}
                assert streamed["history_seconds"] == 600
                assert streamed["history_latest_only"] is False  # a connecting page gets the whole history
                later = await _next(stream, "state")
                assert later["history_latest_only"] is True  # then only the newest point per second
                assert all(len(s["history"]["points"]) <= 1 for s in later["services"])

                await registry.register(_instance("o2"))
                added = await _next(stream, "registry")
                assert added["kind"] == "added"
                assert added["id"] == "o2"

                await registry.register(_instance("o2", version="v2"))
                changed = await _next(stream, "registry")
                assert changed["kind"] == "changed"
                assert changed["version"] == "v2"

                # a new service appears through the periodic re-listing
                await registry.register(ServiceInstance(name="payments", id="p1", address="127.0.0.1", port=7001))
                added = await _next(stream, "registry")
                assert added["service"] == "payments"
                assert added["kind"] == "added"

                await registry.deregister(_instance("o1"))
                removed = await _next(stream, "registry")
                assert removed["kind"] == "removed"
                assert removed["id"] == "o1"


async def test_page_is_self_contained_and_guarded(tmp_path: Path) -> None:
    async with Dashboard(f"memory://{tmp_path.name}", port=0) as dashboard, aiohttp.ClientSession() as http:
        async with http.get(dashboard.url) as response:
            assert response.status == 200
            page = await response.text()
            assert "default-src 'self'" in response.headers["Content-Security-Policy"]
        # works offline: nothing is loaded from another origin
        assert not re.search(r"""(src|href)=["']?(https?:)?//""", page)
        for name, kind in [("dashboard.js", "text/javascript"), ("dashboard.css", "text/css")]:
            async with http.get(f"{dashboard.url}static/{name}") as response:
                assert response.status == 200
                assert response.content_type == kind
                assert "http://" not in (await response.text()).replace("http://www.w3.org/2000/svg", "")
        async with http.get(dashboard.url + "static/..%2Fserver.py") as response:
            assert response.status == 404
        # DNS-rebinding guard: only loopback Host headers are answered
        async with http.get(dashboard.url + "api/state", headers={"Host": "evil.example:8080"}) as response:
            assert response.status == 421
        port = dashboard.url.rsplit(":", 1)[1].strip("/")
        async with http.get(dashboard.url + "api/state", headers={"Host": f"localhost:{port}"}) as response:
            assert response.status == 200


async def test_bad_settings_name_the_setting() -> None:
    with pytest.raises(ConfigError, match="port"):
        Dashboard("memory://", port=70000)
    with pytest.raises(ConfigError, match="scrape_interval"):
        Dashboard("memory://", scrape_interval=0)


async def test_cli_serves_until_interrupted(tmp_path: Path) -> None:
    url = f"sqlite://{tmp_path / 'registry.db'}"
    async with open_registry(url) as registry:
        await registry.register(_instance("cli-1"))
        # Ctrl-C as a terminal delivers it. A child of a run started as a background job (nohup,
        # `cmd &` in a script, some CI runners) inherits SIGINT ignored, and Python rightly keeps
        # ignoring it; restore the default handler so the test does not depend on how it was run.
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            "import signal; signal.signal(signal.SIGINT, signal.default_int_handler); "
            "from grpcmesh.cli import main; main()",
            "dashboard",
            "--registry",
            url,
            "--port",
            "0",
            stdout=asyncio.subprocess.PIPE,
            env=python_env(),
        )
        try:
            line = await read_line_with(proc, "grpcmesh dashboard on")
            match = re.search(r"(http://127\.0\.0\.1:\d+/)", line)
            assert match, line
            async with aiohttp.ClientSession() as http, http.get(match.group(1) + "api/state") as response:
                state = await response.json()
            assert state["services"][0]["instances"][0]["id"] == "cli-1"
            proc.send_signal(signal.SIGINT)
            assert await asyncio.wait_for(proc.wait(), 10) == 0
        finally:
            await stop_process(proc)
