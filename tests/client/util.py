"""Small helpers for client tests."""

from __future__ import annotations

import asyncio

from grpcmesh.client import MeshChannel


async def wait_for_endpoints(channel: MeshChannel, count: int, timeout: float = 10.0) -> None:
    """Wait until the channel knows exactly ``count`` endpoints."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    channel.watcher.start()
    while len(channel.endpoints) != count:
        if loop.time() > deadline:
            raise AssertionError(f"channel has {len(channel.endpoints)} endpoints, expected {count}")
        await asyncio.sleep(0.02)
