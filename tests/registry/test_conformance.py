"""The registry conformance suite: every backend must pass these tests unchanged."""

from __future__ import annotations

import asyncio
import itertools
import logging
import signal
import time

import pytest

from grpcmesh import HealthStatus, InvalidInstanceError, RegistryClosedError, ServiceInstance
from tests.helpers import next_matching, read_line_with, start_python, stop_process
from tests.registry.conftest import Backend

EXPIRY_MARGIN_SECONDS = 8.0
"""How long past its TTL a dead owner's registration may linger in these tests (load margin included)."""


def inst(name: str = "user-service", iid: str = "a", port: int = 50051, **kw: object) -> ServiceInstance:
    return ServiceInstance(name=name, id=iid, address="127.0.0.1", port=port, **kw)


def ids(snapshot: list[ServiceInstance]) -> list[str]:
    return [i.id for i in snapshot]


async def test_register_get_deregister(backend: Backend) -> None:
    async with backend.open() as reg:
        a = inst(
            iid="a", version="v1", metadata={"zone": "z1"}, endpoints=("GetUser",), dependencies=("order-service",)
        )
        b = inst(iid="b", port=50052)
        await reg.register(a)
        await reg.register(b)
        got = await reg.get_service("user-service")
        assert got == [a, b]
        assert await reg.get_service("order-service") == []
        await reg.deregister(a)
        assert await reg.get_service("user-service") == [b]
        await reg.deregister(a)  # absent: not an error
        assert await reg.get_service("user-service") == [b]


async def test_reregister_replaces(backend: Backend) -> None:
    async with backend.open() as reg:
        await reg.register(inst(iid="a", port=1000))
        changed = inst(iid="a", port=2000, metadata={"k": "v"}, health=HealthStatus.NOT_SERVING, weight=7)
        await reg.register(changed)
        assert await reg.get_service("user-service") == [changed]


async def test_list_services(backend: Backend) -> None:
    async with backend.open() as reg:
        await reg.register(inst(name="b-service"))
        await reg.register(inst(name="a-service"))
        await reg.register(inst(name="a-service", iid="second"))
        assert await reg.list_services() == ["a-service", "b-service"]


async def test_second_registry_on_same_store_sees_registrations(backend: Backend) -> None:
    async with backend.open() as writer, backend.open() as reader:
        await writer.register(inst(iid="w"))
        assert ids(await reader.get_service("user-service")) == ["w"]


async def test_watch_sees_add_change_remove_in_order(backend: Backend) -> None:
    async with backend.open() as writer, backend.open() as watcher:
        await writer.register(inst(iid="a"))
        stream = aiter(watcher.watch("user-service"))
        first = await next_matching(stream, lambda s: True)
        assert ids(first) == ["a"]
        await writer.register(inst(iid="b", port=50052))
        await next_matching(stream, lambda s: ids(s) == ["a", "b"])
        await writer.register(inst(iid="b", port=50099))
        snap = await next_matching(stream, lambda s: any(i.port == 50099 for i in s))
        assert ids(snap) == ["a", "b"]
        await writer.deregister(inst(iid="a"))
        snap = await next_matching(stream, lambda s: ids(s) == ["b"])
        assert snap[0].port == 50099


async def test_watch_empty_service_yields_empty_first(backend: Backend) -> None:
    async with backend.open() as reg:
        stream = aiter(reg.watch("nobody-service"))
        assert await next_matching(stream, lambda s: True) == []


async def test_watch_never_repeats_an_unchanged_snapshot(backend: Backend) -> None:
    async with backend.open() as reg:
        stream = aiter(reg.watch("user-service"))
        seen: list[list[str]] = []
        await reg.register(inst(iid="a"))
        await reg.register(inst(iid="b"))

        async def collect() -> None:
            async for snap in stream:
                seen.append(ids(snap))
                if ids(snap) == ["a", "b"]:
                    return

        await asyncio.wait_for(collect(), 5)
        assert all(x != y for x, y in itertools.pairwise(seen)), seen


async def test_watch_ends_cleanly_on_close(backend: Backend) -> None:
    reg = backend.open()
    await reg.register(inst())
    received: list[list[ServiceInstance]] = []

    async def consume() -> None:
        async for snap in reg.watch("user-service"):
            received.append(snap)

    task = asyncio.create_task(consume())
    await asyncio.sleep(0.3)
    await reg.close()
    await asyncio.wait_for(task, 5)  # ends, no exception
    assert received
    assert ids(received[0]) == ["a"]


async def test_use_after_close_is_a_clear_error(backend: Backend) -> None:
    reg = backend.open()
    await reg.close()
    with pytest.raises(RegistryClosedError):
        await reg.register(inst())
    with pytest.raises(RegistryClosedError):
        await reg.get_service("user-service")


async def test_close_deregisters_own_instances(backend: Backend) -> None:
    async with backend.open() as observer:
        owner = backend.open()
        await owner.register(inst(iid="mine"))
        assert ids(await observer.get_service("user-service")) == ["mine"]
        await owner.close()
        assert await observer.get_service("user-service") == []


async def test_invalid_service_name_is_rejected(backend: Backend) -> None:
    async with backend.open() as reg:
        with pytest.raises(InvalidInstanceError, match="name"):
            await reg.get_service("Not A Name")
        with pytest.raises(InvalidInstanceError, match="ttl"):
            await reg.register(inst(), ttl=0)


async def test_many_instances_of_one_service(backend: Backend) -> None:
    async with backend.open() as reg, backend.open() as watcher:
        stream = aiter(watcher.watch("big-service"))
        await next_matching(stream, lambda s: True)
        await asyncio.gather(
            *(reg.register(inst(name="big-service", iid=f"i{n:04d}", port=1 + n)) for n in range(1000))
        )
        got = await reg.get_service("big-service")
        assert len(got) == 1000
        assert ids(got) == sorted(ids(got))
        snap = await next_matching(stream, lambda s: len(s) == 1000, timeout=20)
        assert {i.port for i in snap} == set(range(1, 1001))


async def test_bad_records_are_skipped_with_a_warning(backend: Backend, caplog: pytest.LogCaptureFixture) -> None:
    if backend.corrupt is None:
        pytest.skip(f"{backend.name} stores validated objects, not encoded records: nothing can be corrupt")
    async with backend.open() as reg:
        await reg.register(inst(iid="good"))
        stream = aiter(reg.watch("user-service"))
        await next_matching(stream, lambda s: ids(s) == ["good"])
        with caplog.at_level(logging.WARNING):
            backend.corrupt("user-service", "junk", b"{not json")
            backend.corrupt("user-service", "wrong", b'{"name":"user-service","id":"wrong","address":"x y","port":0}')
            await reg.register(inst(iid="later"))
            snap = await next_matching(stream, lambda s: "later" in ids(s))
        assert ids(snap) == ["good", "later"]
        assert ids(await reg.get_service("user-service")) == ["good", "later"]
        assert "junk" in caplog.text
        assert "wrong" in caplog.text


async def test_owner_killed_expires_after_ttl(backend: Backend) -> None:
    if not backend.multiprocess:
        pytest.skip(f"{backend.name} lives inside one process: there is no other owner to kill")
    ttl = 2.0
    proc = await start_python("-m", "tests.registry.owner_proc", backend.url, "doomed-service", "2", str(ttl), "k")
    try:
        await read_line_with(proc, "ready")
        async with backend.open() as reg:
            stream = aiter(reg.watch("doomed-service"))
            await next_matching(stream, lambda s: ids(s) == ["k0", "k1"])
            await asyncio.sleep(ttl)  # heartbeats keep it alive past one TTL
            assert ids(await reg.get_service("doomed-service")) == ["k0", "k1"]
            proc.send_signal(signal.SIGKILL)
            # Expiry comes one TTL after the last heartbeat plus the backend's sweep; the margin
            # is generous so a loaded CI machine does not flake, while "never expires" still fails.
            killed = time.monotonic()
            await next_matching(stream, lambda s: s == [], timeout=ttl + EXPIRY_MARGIN_SECONDS)
            assert time.monotonic() - killed <= ttl + EXPIRY_MARGIN_SECONDS
    finally:
        await stop_process(proc)


async def test_concurrent_registrations_from_several_processes(backend: Backend) -> None:
    if not backend.multiprocess:
        pytest.skip(f"{backend.name} lives inside one process")
    procs = [
        await start_python("-m", "tests.registry.owner_proc", backend.url, "shared-service", "25", "10", f"p{n}-")
        for n in range(4)
    ]
    try:
        await asyncio.gather(*(read_line_with(p, "ready") for p in procs))
        async with backend.open() as reg:
            got = await reg.get_service("shared-service")
            assert len(got) == 100
            assert {i.id for i in got} == {f"p{n}-{i}" for n in range(4) for i in range(25)}
            stream = aiter(reg.watch("shared-service"))
            await next_matching(stream, lambda s: len(s) == 100)
            await stop_process(procs[0])  # graceful exit deregisters its 25
            snap = await next_matching(stream, lambda s: len(s) == 75, timeout=10)
            assert not any(i.id.startswith("p0-") for i in snap)
    finally:
        for p in procs:
            await stop_process(p)


def _background_tasks() -> set[asyncio.Task[object]]:
    current = asyncio.current_task()
    return {t for t in asyncio.all_tasks() if t is not current and not t.done()}


async def _settle_tasks(baseline: set[asyncio.Task[object]], timeout: float = 10.0) -> set[asyncio.Task[object]]:
    """Tasks started since ``baseline`` that are still running after waiting up to ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        extra = _background_tasks() - baseline
        if not extra or time.monotonic() > deadline:
            return extra
        await asyncio.sleep(0.05)


async def test_producer_stops_when_the_last_watcher_leaves(backend: Backend) -> None:
    async with backend.open() as writer, backend.open() as reg:
        await writer.register(inst(iid="a"))
        assert reg.watched_names() == []  # type: ignore[attr-defined]
        baseline = _background_tasks()
        first, second = aiter(reg.watch("user-service")), aiter(reg.watch("user-service"))
        assert ids(await next_matching(first, lambda s: True)) == ["a"]
        assert ids(await next_matching(second, lambda s: True)) == ["a"]
        assert reg.watched_names() == ["user-service"]  # type: ignore[attr-defined]
        await first.aclose()  # type: ignore[attr-defined]
        await writer.register(inst(iid="b", port=50052))
        await next_matching(second, lambda s: ids(s) == ["a", "b"])  # one watcher left: still fed
        await second.aclose()  # type: ignore[attr-defined]
        assert reg.watched_names() == []  # type: ignore[attr-defined]
        assert await _settle_tasks(baseline) == set()
        # A new watcher after that starts afresh and sees the current state.
        third = aiter(reg.watch("user-service"))
        assert ids(await next_matching(third, lambda s: True)) == ["a", "b"]
        await third.aclose()  # type: ignore[attr-defined]


async def test_300_watches_opened_and_closed_leave_no_state(backend: Backend) -> None:
    async with backend.open() as reg:
        await reg.register(inst(name="svc-0", iid="a"))
        baseline = _background_tasks()
        streams = [aiter(reg.watch(f"svc-{n % 60}")) for n in range(300)]
        for stream in streams:
            await next_matching(stream, lambda s: True, timeout=20)
        assert len(reg.watched_names()) == 60  # type: ignore[attr-defined]
        for stream in streams:
            await stream.aclose()  # type: ignore[attr-defined]
        assert reg.watched_names() == []  # type: ignore[attr-defined]
        assert await _settle_tasks(baseline) == set()
