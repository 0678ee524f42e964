"""End to end: grpcio's own xDS client, given only a bootstrap file, calls services in the registry."""

from __future__ import annotations

import asyncio
import collections
import os
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from grpcmesh.model import HealthStatus
from grpcmesh.xds import XdsServer
from tests.helpers import read_line_with, stop_process
from tests.xds.conftest import SERVICE, EchoFleet

pytestmark = pytest.mark.slow

CLIENT_SECONDS = 120  # the client's own bound; tests stop it long before


class XdsClient:
    """The plain client in a child process, and every reply it printed."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.failures: list[str] = []

    async def next_reply(self, timeout: float = 15.0) -> str:
        """The instance id of the next successful call (failed calls are recorded)."""
        assert self.proc.stdout is not None
        while True:
            line = (await asyncio.wait_for(self.proc.stdout.readline(), timeout)).decode().strip()
            if not line:
                raise AssertionError(f"xDS client exited (rc={self.proc.returncode})")
            if line.startswith("OK "):
                return line[3:]
            if line.startswith("FAIL"):
                self.failures.append(line)

    async def replies(self, count: int) -> collections.Counter[str]:
        seen: collections.Counter[str] = collections.Counter()
        for _ in range(count):
            seen[await self.next_reply()] += 1
        return seen

    async def until(self, predicate: str, instance: str, timeout: float = 20.0) -> float:
        """Seconds until ``instance`` is seen ("seen") or absent from 30 calls in a row ("gone")."""
        start = time.monotonic()
        streak = 0
        while time.monotonic() - start < timeout:
            reply = await self.next_reply()
            if predicate == "seen" and reply == instance:
                return time.monotonic() - start
            streak = streak + 1 if reply != instance else 0
            if predicate == "gone" and streak >= 30:
                return time.monotonic() - start
        raise AssertionError(f"{instance} not {predicate} within {timeout}s")


async def start_client(client_dir: Path, bootstrap_file: Path) -> XdsClient:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GRPC_XDS")}
    env.update(GRPC_XDS_BOOTSTRAP=str(bootstrap_file), PYTHONPATH=str(client_dir), PYTHONUNBUFFERED="1")
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        str(client_dir / "xds_client.py"),
        f"xds:///{SERVICE}",
        str(CLIENT_SECONDS),
        stdout=asyncio.subprocess.PIPE,
        env=env,
        cwd=client_dir,
    )
    await read_line_with(proc, "STARTED")
    return XdsClient(proc)


@pytest.fixture
async def control_plane(registry_url: str) -> AsyncIterator[XdsServer]:
    async with XdsServer(registry_url) as server:
        yield server


@pytest.fixture
def bootstrap_file(control_plane: XdsServer, tmp_path: Path) -> Path:
    path = tmp_path / "bootstrap.json"
    path.write_text(control_plane.bootstrap_json(node_id="plain-grpcio-client"))
    return path


async def test_plain_grpc_client_balances_and_follows_the_registry(
    fleet: EchoFleet, control_plane: XdsServer, bootstrap_file: Path, client_dir: Path
) -> None:
    for instance_id in ("a", "b", "c"):
        await fleet.add(instance_id)
    client = await start_client(client_dir, bootstrap_file)
    try:
        # Balancing across all three instances (gRPC's round robin: about 10 calls each).
        for instance_id in ("a", "b", "c"):
            await client.until("seen", instance_id, timeout=30)
        spread = await client.replies(30)
        assert set(spread) == {"a", "b", "c"}
        assert min(spread.values()) >= 5, spread

        # An instance leaves: deregistered first, stopped once the client has moved off it.
        await fleet.remove("c")
        await client.until("gone", "c")
        await fleet.stop_server("c")
        assert set(await client.replies(30)) == {"a", "b"}

        # A new instance gets calls.
        await fleet.add("d")
        await client.until("seen", "d")
        assert set(await client.replies(30)) == {"a", "b", "d"}

        # An instance that stops SERVING gets no more calls, though still registered.
        await fleet.registry.register(fleet.instances["b"].replace(health=HealthStatus.NOT_SERVING))
        await client.until("gone", "b")
        assert set(await client.replies(20)) == {"a", "d"}

        assert client.failures == []
        assert control_plane.servicer is not None
        (session,) = control_plane.servicer.sessions
        assert session.node_id == "plain-grpcio-client"
        assert list(session.nacks) == []
        for type_url, state in session.states.items():
            assert state.acked_version == state.sent_version != "", type_url
    finally:
        await stop_process(client.proc)


async def test_control_plane_survives_client_disconnect_and_reconnect(
    fleet: EchoFleet, control_plane: XdsServer, bootstrap_file: Path, client_dir: Path
) -> None:
    await fleet.add("a")
    await fleet.add("b")
    servicer = control_plane.servicer
    assert servicer is not None

    first = await start_client(client_dir, bootstrap_file)
    try:
        assert set(await first.replies(10)) <= {"a", "b"}
        assert servicer.active_streams == 1
    finally:
        first.proc.kill()  # abrupt: no goodbye on the ADS stream
        await first.proc.wait()

    async def streams_closed() -> None:
        while servicer.active_streams:
            await asyncio.sleep(0.05)

    await asyncio.wait_for(streams_closed(), 10)
    assert control_plane._watches is not None
    assert control_plane._watches.watched == set()

    await fleet.add("c")
    second = await start_client(client_dir, bootstrap_file)
    try:
        for instance_id in ("a", "b", "c"):
            await second.until("seen", instance_id, timeout=30)
        assert second.failures == []
        assert servicer.total_streams == 2
    finally:
        await stop_process(second.proc)
