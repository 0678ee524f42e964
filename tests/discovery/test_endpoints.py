"""EndpointWatcher: filtering, health, and surviving a failing registry."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest

from grpcmesh import HealthStatus, InvalidInstanceError, RegistryUnavailableError, ServiceInstance, open_registry
from grpcmesh.discovery import Backoff, EndpointFilter, EndpointWatcher
from grpcmesh.registry.memory import MemoryRegistry


def instance(iid: str, **fields: Any) -> ServiceInstance:
    return ServiceInstance(name="svc", id=iid, address="127.0.0.1", port=9000, **fields)


async def settle(watcher: EndpointWatcher, ids: set[str], timeout: float = 5.0) -> None:
    async def wait() -> None:
        while {e.id for e in watcher.endpoints} != ids:
            await watcher.wait_changed(watcher.version)

    await asyncio.wait_for(wait(), timeout)


async def test_filters_by_version_metadata_and_health() -> None:
    registry = open_registry(f"memory://{uuid.uuid4().hex}")
    watcher = EndpointWatcher(registry, "svc", EndpointFilter.of("v2", {"zone": "a"}))
    await registry.register(instance("match", version="v2", metadata={"zone": "a", "x": "1"}))
    await registry.register(instance("old", version="v1", metadata={"zone": "a"}))
    await registry.register(instance("elsewhere", version="v2", metadata={"zone": "b"}))
    await registry.register(instance("sick", version="v2", metadata={"zone": "a"}, health=HealthStatus.NOT_SERVING))
    assert await watcher.wait_for_endpoints(5)
    await settle(watcher, {"match"})
    await registry.register(instance("sick", version="v2", metadata={"zone": "a"}))  # healthy again
    await settle(watcher, {"match", "sick"})
    await watcher.close()
    await registry.close()


async def test_filter_describes_itself_and_rejects_bad_input() -> None:
    assert EndpointFilter.of().describe() == "no filter"
    assert EndpointFilter.of("v1", {"zone": "a"}).describe() == "version='v1', metadata={'zone': 'a'}"
    with pytest.raises(InvalidInstanceError, match="metadata_match"):
        EndpointFilter.of(None, {"zone": 1})  # type: ignore[dict-item]


class FlakyRegistry(MemoryRegistry):
    """A real memory registry whose watches can be made to fail, as an unreachable backend would."""

    def __init__(self) -> None:
        super().__init__()
        self.broken = False
        self.opened = 0

    async def watch(self, name: str) -> AsyncIterator[list[ServiceInstance]]:
        self.opened += 1
        if self.broken:
            raise RegistryUnavailableError("registry unreachable (test)")
        async for snapshot in super().watch(name):
            if self.broken:
                raise RegistryUnavailableError("registry unreachable (test)")
            yield snapshot


async def test_registry_failure_keeps_last_endpoints_then_recovers(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "grpcmesh.discovery")
    registry = FlakyRegistry()
    watcher = EndpointWatcher(registry, "svc", backoff=Backoff(initial=0.02, maximum=0.05))
    await registry.register(instance("a"))
    assert await watcher.wait_for_endpoints(5)

    registry.broken = True
    await registry.register(instance("b"))  # the watch sees a change and fails
    await asyncio.sleep(0.3)
    assert {e.id for e in watcher.endpoints} == {"a"}  # last known set kept
    assert watcher.watch_errors >= 2
    assert registry.opened >= 3
    assert "keeping the last 1 endpoint" in caplog.text

    registry.broken = False
    await settle(watcher, {"a", "b"})
    assert "recovered" in caplog.text
    await watcher.close()
    await registry.close()


async def test_wait_for_endpoints_times_out_when_none_appear() -> None:
    registry = open_registry(f"memory://{uuid.uuid4().hex}")
    watcher = EndpointWatcher(registry, "svc")
    assert not await watcher.wait_for_endpoints(0.2)
    assert watcher.synced
    await watcher.close()
    await registry.close()


class GarbageRegistry(MemoryRegistry):
    """Yields one snapshot holding something that is not an instance (a backend bug), then behaves."""

    def __init__(self) -> None:
        super().__init__()
        self.garbage = True

    async def watch(self, name: str) -> AsyncIterator[list[ServiceInstance]]:
        if self.garbage:
            self.garbage = False
            yield [None]  # type: ignore[list-item]
        async for snapshot in super().watch(name):
            yield snapshot


async def test_any_exception_in_a_watch_is_logged_once_and_the_watch_reopened(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, "grpcmesh.discovery")
    registry = GarbageRegistry()
    watcher = EndpointWatcher(registry, "svc", backoff=Backoff(initial=0.02, maximum=0.05))
    await registry.register(instance("a"))
    assert await watcher.wait_for_endpoints(5)
    await registry.register(instance("b"))
    await settle(watcher, {"a", "b"})
    failures = [r for r in caplog.records if "registry watch of svc failed" in r.getMessage()]
    assert len(failures) == 1
    assert failures[0].exc_info is not None  # not a registry error: the traceback is kept, once
    assert watcher.watch_errors == 1
    await watcher.close()
    await registry.close()


async def test_bad_records_in_the_store_never_reach_the_endpoint_set() -> None:
    registry = MemoryRegistry("bad-records-" + uuid.uuid4().hex)
    watcher = EndpointWatcher(registry, "svc")
    await registry.register(instance("a"))
    assert await watcher.wait_for_endpoints(5)
    store = registry._store.instances["svc"]
    store["deep"] = b"[" * 10_000  # type: ignore[assignment]
    store["wrong"] = ServiceInstance.model_construct(name="svc", id="wrong", address="not an address", port="x")
    await registry.register(instance("b"))
    await settle(watcher, {"a", "b"})
    await watcher.close()
    await registry.close()
