"""Fixtures for client tests: a SQLite registry file and Echo server processes registered in it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from grpcmesh import Registry, open_registry
from tests.helpers import read_line_with, start_python, stop_process

SERVICE = "echo-service"


@dataclass
class Instance:
    id: str
    port: int
    proc: asyncio.subprocess.Process = field(repr=False)

    async def stop(self) -> None:
        await stop_process(self.proc)

    async def kill(self) -> None:
        self.proc.kill()
        await self.proc.wait()


StartInstance = Callable[..., Awaitable[Instance]]


@pytest.fixture
def registry_url(tmp_path: Path) -> str:
    return f"sqlite://{tmp_path / 'registry.db'}"


@pytest.fixture
async def registry(registry_url: str) -> AsyncIterator[Registry]:
    reg = open_registry(registry_url)
    yield reg
    await reg.close()


@pytest.fixture
async def start_instance(registry_url: str) -> AsyncIterator[StartInstance]:
    started: list[Instance] = []

    async def start(instance_id: str, *extra: str) -> Instance:
        proc = await start_python("-m", "tests.client.echo_instance", registry_url, SERVICE, instance_id, *extra)
        try:
            line = await read_line_with(proc, "ready")
        except BaseException:
            await stop_process(proc)
            raise
        instance = Instance(instance_id, int(line.split()[1]), proc)
        started.append(instance)
        return instance

    yield start
    await asyncio.gather(*(i.stop() for i in started))
