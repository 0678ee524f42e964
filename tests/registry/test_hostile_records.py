"""Hostile registry data on every backend: bad records are skipped with a warning, never break a watch.

Bad records are written the way an attacker with access to the store would write them: a raw
etcd put (``etcdctl``), a raw SQLite row, a Consul agent registration with crafted ``Meta``,
or an object put straight into the memory store's dict.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import time

import pytest

from grpcmesh import InvalidInstanceError, MeshError, ServiceInstance
from tests.helpers import next_matching
from tests.registry.conftest import Backend

GOOD = {"name": "user-service", "address": "127.0.0.1", "port": 50051}

WRONG_TYPES: dict[str, list[object]] = {
    "name": [None, 7, ["user-service"], {"a": 1}],
    "id": [None, 7, ["x"], {"a": "b"}, True],
    "address": [None, 7, ["127.0.0.1"], {"ip": "127.0.0.1"}],
    "port": ["50051", None, 50051.5, [1], True, 10**30, -1],
    "version": [1, None, ["v1"], {"v": 1}],
    "metadata": ["zone=a", [["a", "b"]], {"a": 1}, {"a": None}, 5],
    "endpoints": ["GetUser", 5, {"a": "b"}, [1, 2], [None]],
    "dependencies": ["order-service", 5, [1], [None], [{"a": 1}]],
    "weight": ["100", None, 1.5, True, 10**30, [100]],
    "health": [1, None, "ALIVE", ["SERVING"], {"s": "SERVING"}],
}


def _record(iid: str, **fields: object) -> bytes:
    return json.dumps({**GOOD, "id": iid, **fields}).encode()


def hostile_records() -> dict[str, bytes]:
    """Bad records by instance id: deep nesting, every field of a wrong type, key/record mismatch."""
    records: dict[str, bytes] = {
        "deep-array": b"[" * 5_000 + b"]" * 5_000,
        "deep-object": b'{"a":' * 3_000 + b"1" + b"}" * 3_000,
        "deep-metadata": b'{"name":"user-service","id":"deep-metadata","address":"127.0.0.1","port":1,"metadata":'
        + b'{"a":' * 3_000
        + b"1"
        + b"}" * 3_000
        + b"}",
        "not-json": b"{not json",
        "not-an-object": b'["user-service"]',
        "nan-port": b'{"name":"user-service","id":"nan-port","address":"127.0.0.1","port":NaN}',
        "mismatch-id": _record("somebody-else"),
        "mismatch-name": json.dumps({**GOOD, "name": "order-service", "id": "mismatch-name"}).encode(),
    }
    for field, values in WRONG_TYPES.items():
        for n, value in enumerate(values):
            iid = f"wrong-{field}-{n}"
            records[iid] = _record(iid, **{field: value})
    return records


def ids(snapshot: list[ServiceInstance]) -> list[str]:
    return [i.id for i in snapshot]


def inst(iid: str, port: int = 50051, name: str = "user-service") -> ServiceInstance:
    return ServiceInstance(name=name, id=iid, address="127.0.0.1", port=port)


async def test_hostile_records_are_skipped_and_the_watch_keeps_delivering(
    backend: Backend, caplog: pytest.LogCaptureFixture
) -> None:
    assert backend.corrupt is not None
    assert backend.remove is not None
    records = hostile_records()
    async with backend.open() as reg, backend.open() as writer:
        await writer.register(inst("good"))
        stream = aiter(reg.watch("user-service"))
        assert ids(await next_matching(stream, lambda s: True)) == ["good"]
        with caplog.at_level(logging.WARNING):
            for iid, raw in records.items():
                await asyncio.to_thread(backend.corrupt, "user-service", iid, raw)
            await writer.register(inst("later", port=50052))
            snap = await next_matching(stream, lambda s: "later" in ids(s), timeout=30)
            assert ids(snap) == ["good", "later"]
            assert ids(await reg.get_service("user-service")) == ["good", "later"]
            assert await reg.list_services() == ["user-service"]
            # Deleting the bad records (and a good one) is seen too: the watch is alive.
            for iid in records:
                await asyncio.to_thread(backend.remove, "user-service", iid)
            await writer.deregister(inst("good"))
            snap = await next_matching(stream, lambda s: ids(s) == ["later"], timeout=30)
            await writer.register(inst("last", port=50053))
            snap = await next_matching(stream, lambda s: "last" in ids(s), timeout=30)
        assert ids(snap) == ["last", "later"]
    assert "skipping bad" in caplog.text
    assert "mismatch-id" in caplog.text
    assert "mismatch-name" in caplog.text
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], "a bad record is a warning, not an error"
    # One warning per bad record, not one per read.
    assert len([r for r in caplog.records if "deep-array" in r.getMessage()]) == 1


async def test_a_service_holding_only_bad_records_is_not_listed(backend: Backend) -> None:
    assert backend.corrupt is not None
    async with backend.open() as reg:
        await reg.register(inst("a", name="real-service"))
        await asyncio.to_thread(backend.corrupt, "junk-service", "x", b"[" * 5_000)
        await asyncio.to_thread(backend.corrupt, "junk-service", "y", b"{not json")
        assert await reg.list_services() == ["real-service"]
        assert await reg.get_service("junk-service") == []


async def test_a_huge_record_is_refused_before_parsing(backend: Backend, caplog: pytest.LogCaptureFixture) -> None:
    if backend.name == "consul":
        pytest.skip("Consul's Meta limits (64 values of 512 characters) make a huge record impossible")
    assert backend.corrupt is not None
    huge = _record("huge", metadata={"blob": "x" * (1_100_000)})
    async with backend.open() as reg:
        await reg.register(inst("good"))
        with caplog.at_level(logging.WARNING):
            await asyncio.to_thread(backend.corrupt, "user-service", "huge", huge)
            assert ids(await reg.get_service("user-service")) == ["good"]
        assert "at most 1048576" in caplog.text


@pytest.mark.parametrize("ttl", [math.inf, -math.inf, math.nan, 0, -5, 0.5, 10**9, "10", None, True])
async def test_ttl_must_be_a_sane_number_of_seconds(backend: Backend, ttl: object) -> None:
    async with backend.open() as reg:
        with pytest.raises(InvalidInstanceError, match="ttl") as caught:
            await reg.register(inst("a"), ttl=ttl)  # type: ignore[arg-type]
        assert isinstance(caught.value, MeshError)
        assert await reg.get_service("user-service") == []


async def test_an_owner_restores_its_record_deleted_by_someone_else(
    backend: Backend, caplog: pytest.LogCaptureFixture
) -> None:
    assert backend.remove is not None
    ttl = 3.0  # owners look after their records every ttl / 3
    async with backend.open() as owner, backend.open() as watcher:
        await owner.register(inst("mine"), ttl=ttl)
        stream = aiter(watcher.watch("user-service"))
        await next_matching(stream, lambda s: ids(s) == ["mine"])
        with caplog.at_level(logging.WARNING):
            if backend.name == "memory":
                async with backend.open() as other:  # another registry object deregisters it
                    await other.deregister(inst("mine"))
            else:
                await asyncio.to_thread(backend.remove, "user-service", "mine")
            # Generous margin: one upkeep round is ttl / 3; a loaded machine may need a few.
            await next_matching(stream, lambda s: ids(s) == ["mine"], timeout=ttl * 4)
            assert ids(await watcher.get_service("user-service")) == ["mine"]
        assert "mine" in caplog.text


async def test_two_live_owners_of_one_id_are_reported_and_do_not_flip(
    backend: Backend, caplog: pytest.LogCaptureFixture
) -> None:
    ttl = 3.0
    async with backend.open() as old, backend.open() as new, backend.open() as watcher:
        await old.register(inst("shared-id", port=1111), ttl=ttl)
        stream = aiter(watcher.watch("user-service"))
        await next_matching(stream, lambda s: [i.port for i in s] == [1111])
        with caplog.at_level(logging.WARNING):
            await new.register(inst("shared-id", port=2222), ttl=ttl)  # e.g. a rolling restart reusing the id
            await next_matching(stream, lambda s: [i.port for i in s] == [2222])
            deadline = time.monotonic() + ttl * 4  # several upkeep rounds of the old owner
            while "two live owners" not in caplog.text and time.monotonic() < deadline:
                await asyncio.sleep(0.1)
        assert "two live owners" in caplog.text
        assert "shared-id" in caplog.text
        await asyncio.sleep(ttl * 2 / 3)  # two more upkeep rounds: the record must not flip back
        assert [i.port for i in await watcher.get_service("user-service")] == [2222]
        await old.close()  # the old owner's stop must not delete its successor's record
        assert [i.port for i in await watcher.get_service("user-service")] == [2222]
