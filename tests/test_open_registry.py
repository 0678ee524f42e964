"""open_registry: URL schemes and their errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from grpcmesh import ConfigError, UnknownSchemeError, open_registry
from grpcmesh.registry.memory import MemoryRegistry
from grpcmesh.registry.sqlite import SqliteRegistry


async def test_memory_and_sqlite_urls(tmp_path: Path) -> None:
    async with open_registry("memory://") as reg:
        assert isinstance(reg, MemoryRegistry)
    reg2 = open_registry(f"sqlite://{tmp_path}/x.db?poll_interval=0.2")
    assert isinstance(reg2, SqliteRegistry)
    assert reg2.path == tmp_path / "x.db"
    assert reg2.poll_interval == 0.2
    await reg2.close()


def test_unknown_scheme_lists_known_ones() -> None:
    with pytest.raises(UnknownSchemeError, match=r"unknown registry scheme 'zookeeper'.*memory://.*sqlite://"):
        open_registry("zookeeper://localhost:2181")


def test_missing_scheme() -> None:
    with pytest.raises(UnknownSchemeError, match="has no scheme"):
        open_registry("localhost:2379")


def test_sqlite_bad_options() -> None:
    with pytest.raises(ConfigError, match="poll_interval"):
        open_registry("sqlite:///tmp/x.db?poll_interval=fast")
    with pytest.raises(ConfigError, match="does not take option"):
        open_registry("sqlite:///tmp/x.db?colour=red")
    with pytest.raises(ConfigError, match="three slashes"):
        open_registry("sqlite://tmp/x.db")


async def test_memory_namespace_is_shared_in_process() -> None:
    from grpcmesh import ServiceInstance

    async with open_registry("memory://ns-shared") as a, open_registry("memory://ns-shared") as b:
        await a.register(ServiceInstance(name="s", address="127.0.0.1", port=1, id="x"))
        assert [i.id for i in await b.get_service("s")] == ["x"]
    async with open_registry("memory://ns-other") as c:
        assert await c.get_service("s") == []
