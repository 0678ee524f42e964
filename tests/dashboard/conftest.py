"""A running mesh for dashboard tests: metered Echo servers registered in a SQLite registry,
one of them in a child process so a test can SIGKILL it, plus a load driver.

Shaped like the shop example (gateway -> user/order -> payment -> notification) so the
screenshots read like a real system.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import pytest
from playwright.async_api import Browser, async_playwright

from grpcmesh import Registry, open_registry
from grpcmesh.protos import echo_pb2, echo_pb2_grpc
from grpcmesh.testing import start_echo_server
from tests.dashboard.metered_echo import MeteredEcho, instance_for, start_metered_echo
from tests.helpers import ROOT, read_line_with, start_python, stop_process

ARTIFACTS = ROOT / "test-artifacts"
CHILD_TTL = 1.0
"""The killed child's registration TTL: it must vanish well within the 2 s the page is allowed."""

# (service, instance id, version, dependencies) served in this process, with metrics
IN_PROCESS = [
    ("gateway", "gateway-1", "v3", ("order-service", "user-service")),
    ("user-service", "user-1", "v1", ("order-service",)),  # a cycle with order-service, as in the shop
    ("order-service", "order-1", "v2", ("payment-service", "user-service")),
    ("payment-service", "payment-1", "v1", ("notification-service",)),
]
CHILD = ("order-service", "order-2", ("payment-service", "user-service"))
NO_METRICS = ("notification-service", "notification-1")


CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture
async def browser(tmp_path: Path) -> AsyncIterator[Browser]:
    # Chromium writes its crash-reporter database and dconf cache under $HOME; keep them in tmp.
    home = tmp_path / "chromium-home"
    env: dict[str, str | float | bool] = {**os.environ, "HOME": str(home), "XDG_CONFIG_HOME": str(home / ".config")}
    env["XDG_CACHE_HOME"] = str(home / ".cache")
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True, env=env)
        try:
            yield browser
        finally:
            await browser.close()


@dataclass
class Mesh:
    url: str
    registry: Registry
    targets: dict[str, str] = field(default_factory=dict)
    """instance id -> host:port of its gRPC server."""
    child: asyncio.subprocess.Process | None = None

    @property
    def instance_keys(self) -> list[str]:
        return [f"{s}/{i}" for s, i, _, _ in IN_PROCESS] + [f"{CHILD[0]}/{CHILD[1]}", "/".join(NO_METRICS)]


@pytest.fixture
async def mesh(tmp_path: Path) -> AsyncIterator[Mesh]:
    url = f"sqlite://{tmp_path / 'registry.db'}"
    registry = open_registry(url)
    servers: list[MeteredEcho] = []
    plain: list[grpc.aio.Server] = []
    result = Mesh(url, registry)
    try:
        for service, iid, version, deps in IN_PROCESS:
            echo = await start_metered_echo(iid)
            servers.append(echo)
            result.targets[iid] = f"127.0.0.1:{echo.port}"
            await registry.register(instance_for(service, iid, echo.port, echo.metrics_url, deps, version=version))
        server, port = await start_echo_server(NO_METRICS[1])
        plain.append(server)
        await registry.register(instance_for(NO_METRICS[0], NO_METRICS[1], port, None, version="v1"))
        service, iid, deps = CHILD
        result.child = await start_python(
            "-m", "tests.dashboard.metered_echo", url, service, iid, str(CHILD_TTL), ",".join(deps)
        )
        line = await read_line_with(result.child, "ready")
        result.targets[iid] = f"127.0.0.1:{line.split()[1]}"
        yield result
    finally:
        if result.child is not None:
            await stop_process(result.child)
        await registry.close()
        for echo in servers:
            await echo.stop()
        for server in plain:
            await server.stop(None)


async def drive_load(
    targets: dict[str, str], stop: asyncio.Event, *, max_calls: int = 3000, max_seconds: float = 30.0
) -> int:
    """Unary calls to every target until ``stop``, ``max_calls`` or ``max_seconds``; returns calls made.

    Every 6th call to payment-1 fails (UNAVAILABLE), so the page has an error rate to show;
    order instances answer after a few ms, so p99 differs between services.
    """
    deadline = time.monotonic() + max_seconds
    made = 0
    channels = {iid: grpc.aio.insecure_channel(target) for iid, target in targets.items()}

    async def worker(iid: str) -> None:
        nonlocal made
        stub = echo_pb2_grpc.EchoStub(channels[iid])
        for n in itertools.count():
            if stop.is_set() or made >= max_calls or time.monotonic() > deadline:
                return
            request = echo_pb2.EchoRequest(
                message="load",
                delay_ms=(n % 7) * 2 if iid.startswith("order") else 0,
                fail_code=14 if iid == "payment-1" and n % 6 == 5 else 0,
            )
            made += 1
            with contextlib.suppress(grpc.aio.AioRpcError):
                await stub.Unary(request, timeout=2)
            await asyncio.sleep(0.03)

    try:
        await asyncio.gather(*(worker(iid) for iid in targets))
    finally:
        for channel in channels.values():
            await channel.close(None)
    return made
