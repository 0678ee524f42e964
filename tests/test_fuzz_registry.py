"""Fuzzing the registry's readers with hostile records (hypothesis).

Generated records (JSON of any shape and nesting, every field of any type, huge values,
arbitrary unicode and bytes) go to :func:`decode_instance` and, written the way an attacker
with store access would, into a running memory and SQLite registry that a watch and an
:class:`EndpointWatcher` follow. The only acceptable outcomes: a decoded instance, an
:class:`InvalidRecordError`, or a skipped record; never a hang (every example is bounded in
time) and no growth of memory across examples (tracemalloc, bound stated below).
"""

from __future__ import annotations

import asyncio
import gc
import json
import sqlite3
import tracemalloc
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from grpcmesh import InvalidRecordError, ServiceInstance
from grpcmesh.discovery import Backoff, EndpointWatcher
from grpcmesh.model import decode_instance
from grpcmesh.registry.memory import MemoryRegistry
from grpcmesh.registry.sqlite import SqliteRegistry

pytestmark = pytest.mark.filterwarnings("ignore::hypothesis.errors.HypothesisWarning")  # huge examples' repr

FIELDS = ["name", "id", "address", "port", "version", "metadata", "endpoints", "dependencies", "weight", "health", "v"]

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**40), max_value=10**40),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=40),
    st.sampled_from(["user-service", "127.0.0.1", "SERVING", "v1", "", " ", "a" * 300, "\u202e", "\x00", "[/x]"]),
)
json_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=10), inner, max_size=5),
    max_leaves=30,
)


@st.composite
def hostile_record(draw: st.DrawFn) -> bytes:
    kind = draw(st.sampled_from(["fields", "any-json", "deep", "bytes", "huge"]))
    if kind == "fields":  # a plausible record with some fields of any type
        record: dict[str, Any] = {"name": "svc", "id": "x", "address": "127.0.0.1", "port": 1}
        for field in draw(st.lists(st.sampled_from(FIELDS), min_size=1, max_size=4)):
            record[field] = draw(json_values)
        return json.dumps(record, allow_nan=True).encode()
    if kind == "any-json":
        return json.dumps(draw(json_values), allow_nan=True).encode()
    if kind == "deep":
        depth = draw(st.integers(min_value=900, max_value=30_000))
        opener, closer = draw(st.sampled_from([("[", "]"), ('{"a":', "}")]))
        return (opener * depth + "1" * (opener != "[") + closer * depth).encode()
    if kind == "bytes":
        return draw(st.binary(max_size=200))
    size = draw(st.integers(min_value=1 << 20, max_value=3 << 20))  # around the 1 MiB cap
    return b'{"name":"svc","id":"x","address":"127.0.0.1","port":1,"version":"' + b"v" * size + b'"}'


@settings(max_examples=300, deadline=2_000, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(hostile_record())
def test_decode_instance_raises_only_invalid_record_error(raw: bytes) -> None:
    try:
        instance = decode_instance(raw)
    except InvalidRecordError as exc:
        message = str(exc)
    else:
        assert isinstance(instance, ServiceInstance)
        assert decode_instance(instance.to_json()) == instance
        return
    assert len(message) < 2_000  # the message never echoes a huge record


class _Rig:
    """One event loop, a memory and a SQLite registry, a watch and an EndpointWatcher on each."""

    def __init__(self, tmp: Path) -> None:
        self.loop = asyncio.new_event_loop()
        self.path = tmp / "fuzz.db"
        self.memory = MemoryRegistry("fuzz-" + uuid.uuid4().hex)
        self.sqlite = SqliteRegistry(self.path, poll_interval=0.01)
        self.watchers = {
            reg: EndpointWatcher(reg, "svc", backoff=Backoff(0.01, 0.05)) for reg in (self.memory, self.sqlite)
        }
        self.serial = 0

    def run(self, coro: Any, timeout: float = 10.0) -> Any:
        return self.loop.run_until_complete(asyncio.wait_for(coro, timeout))

    def write_bad(self, raw: bytes, expires_at: object) -> None:
        self.serial += 1
        iid = f"bad-{self.serial}"
        self.memory._store.instances.setdefault("svc", {})[iid] = raw  # type: ignore[assignment]
        conn = sqlite3.connect(self.path, isolation_level=None)
        try:
            conn.execute(
                "INSERT OR REPLACE INTO instances VALUES ('svc', ?, ?, 'attacker', ?)",
                (iid, raw.decode("utf-8", "replace") if len(raw) % 2 else raw, expires_at),
            )
            conn.execute("UPDATE revisions SET revision = revision + 1")
        finally:
            conn.close()

    async def good_change_is_seen(self) -> None:
        self.serial += 1
        good = ServiceInstance(name="svc", id=f"good-{self.serial}", address="127.0.0.1", port=1)
        for reg, watcher in self.watchers.items():
            await reg.register(good)
            while good.id not in {e.id for e in watcher.endpoints}:
                await watcher.wait_changed(watcher.version)
            assert all(e.id.startswith("good-") for e in watcher.endpoints)
            await reg.deregister(good)
            while good.id in {e.id for e in watcher.endpoints}:
                await watcher.wait_changed(watcher.version)

    async def close(self) -> None:
        for watcher in self.watchers.values():
            await watcher.close()
        await self.memory.close()
        await self.sqlite.close()


@pytest.fixture(scope="module")
def rig(tmp_path_factory: pytest.TempPathFactory) -> Iterator[_Rig]:
    rig = _Rig(tmp_path_factory.mktemp("fuzz"))
    rig.run(rig.sqlite.list_services())  # creates the file and its schema
    for watcher in rig.watchers.values():
        rig.run(watcher.wait_for_endpoints(0.01))  # starts it
        while not watcher.synced:
            rig.run(watcher.wait_changed(watcher.version))
    try:
        yield rig
    finally:
        rig.run(rig.close())
        rig.loop.close()


expiries = st.one_of(
    st.floats(allow_nan=False), st.integers(-(2**63), 2**63 - 1), st.text(max_size=10), st.binary(max_size=8)
)

_MEMORY_GROWTH_BOUND = 64 * 1024 * 1024
"""Python memory still allocated after all examples, beyond where it started: far below what a
leak per example (a feed, a task, a warned-about record kept for ever) would add up to."""


@settings(
    max_examples=60,
    deadline=15_000,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.function_scoped_fixture],
)
@given(raw=hostile_record(), expires_at=expiries)
def test_running_watchers_skip_hostile_records_and_keep_delivering(rig: _Rig, raw: bytes, expires_at: object) -> None:
    rig.write_bad(raw, expires_at)
    rig.run(rig.good_change_is_seen())  # bounded: fails rather than hangs after 10 s


def test_memory_stays_bounded_across_hostile_examples(rig: _Rig) -> None:
    gc.collect()  # measure what is kept, not garbage waiting for the collector
    tracemalloc.start()
    try:
        start, _ = tracemalloc.get_traced_memory()
        for n in range(200):
            rig.write_bad(b"[" * 5_000 if n % 2 else json.dumps({"name": "svc", "id": n}).encode(), "soon")
            if n % 20 == 0:
                rig.run(rig.good_change_is_seen())
        rig.run(rig.good_change_is_seen())
        gc.collect()
        current, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert current - start < _MEMORY_GROWTH_BOUND
    assert len(rig.sqlite._warned) <= rig.sqlite._warned.capacity
    assert len(rig.memory._store.warned) <= rig.memory._store.warned.capacity
