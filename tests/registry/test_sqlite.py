"""sqlite-specific behaviour beyond the conformance suite."""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from pathlib import Path

import pytest

from grpcmesh import ServiceInstance, open_registry
from grpcmesh.registry.sqlite import SqliteRegistry
from tests.helpers import next_matching


def inst(name: str, iid: str) -> ServiceInstance:
    return ServiceInstance(name=name, id=iid, address="127.0.0.1", port=5000)


async def test_watches_opened_while_the_registry_changes_all_converge(tmp_path: Path) -> None:
    """A watch added while a poll is under way must not miss a change made meanwhile."""
    url = f"sqlite://{tmp_path}/r.db"
    names = [f"svc-{n}" for n in range(60)]
    async with open_registry(url) as writer, open_registry(url) as watcher:
        streams = []

        async def open_watch(name: str) -> None:
            stream = aiter(watcher.watch(name))
            await next_matching(stream, lambda s: True)
            streams.append((name, stream))

        async def churn() -> None:
            for name in names:
                await writer.register(inst(name, "first"))
                await asyncio.sleep(0)

        await asyncio.gather(churn(), *(open_watch(name) for name in names))
        for name in names:
            await writer.register(inst(name, "second"))
        for _name, stream in streams:
            await next_matching(stream, lambda s: [i.id for i in s] == ["first", "second"], timeout=5)


async def test_unexpected_poll_error_is_logged_and_polling_goes_on(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    url = f"sqlite://{tmp_path}/r.db"
    async with open_registry(url) as writer, open_registry(url) as watcher:
        assert isinstance(watcher, SqliteRegistry)
        stream = aiter(watcher.watch("svc"))
        await next_matching(stream, lambda s: s == [])
        original = watcher._poll_once
        failures = 0

        async def flaky() -> None:
            nonlocal failures
            if failures < 2:
                failures += 1
                raise ValueError("boom")
            await original()

        watcher._poll_once = flaky  # type: ignore[method-assign]
        await asyncio.sleep(watcher.poll_interval * 4)  # a poll already under way has finished
        with caplog.at_level(logging.ERROR):
            await writer.register(inst("svc", "a"))
            await next_matching(stream, lambda s: [i.id for i in s] == ["a"], timeout=5)
        assert failures == 2
        assert "unexpected error while polling" in caplog.text


async def test_a_change_between_a_new_watch_and_a_running_poll_is_not_missed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Regression: a poll that started before a watch was added recorded the global revision and
    the new watch then never saw a change made between its first read and that poll."""
    from grpcmesh.registry import sqlite_store as backend

    url = f"sqlite://{tmp_path}/r.db"
    async with open_registry(url) as writer, open_registry(url) as watcher:
        assert isinstance(watcher, SqliteRegistry)
        await writer.register(inst("y", "first"))
        watcher._poll_task = asyncio.create_task(asyncio.Event().wait())  # we drive the polls ourselves
        first_watch = aiter(watcher.watch("x"))
        await next_matching(first_watch, lambda s: True)
        await watcher._poll_once()  # records the global revision

        real_live_rows = backend.live_rows

        def live_rows_then_change(conn: object, name: str) -> list[backend.Row]:
            rows = real_live_rows(conn, name)  # type: ignore[arg-type]
            if name == "y":  # right after the new watch's first read, another process changes y
                monkeypatch.setattr(backend, "live_rows", real_live_rows)
                other = SqliteRegistry(tmp_path / "r.db")
                other._call(lambda c: backend.transaction(c).__enter__())
                record = inst("y", "second").to_json().decode()
                other._call(
                    lambda c: c.execute("INSERT INTO instances VALUES ('y', 'second', ?, 'other', 9e18)", (record,))
                )
                other._call(lambda c: backend.bump(c, ["y"]))
                other._call(lambda c: c.execute("COMMIT"))
                other._call(lambda c: c.close())
            return rows

        monkeypatch.setattr(backend, "live_rows", live_rows_then_change)
        new_watch = aiter(watcher.watch("y"))
        watch_first = asyncio.create_task(anext(new_watch))
        await asyncio.sleep(0)  # the watch submits its read first...
        await watcher._poll_once()  # ...then a poll that does not know the new watch runs
        assert [i.id for i in await watch_first] == ["first"]
        await watcher._poll_once()  # the next poll must notice y changed
        snapshot = await asyncio.wait_for(anext(new_watch), 2)
        assert [i.id for i in snapshot] == ["first", "second"]
        watcher._poll_task.cancel()


def _raw(path: Path, sql: str, *params: object) -> None:
    """One statement on the file behind every registry's back (as another program would)."""
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute(sql, params)
    finally:
        conn.close()


@pytest.mark.parametrize(
    ("column", "value"),
    [("expires_at", "soon"), ("expires_at", b"\x00"), ("record", 5), ("record", b"\xff\xfe"), ("name", 7), ("id", 3.5)],
)
async def test_a_row_with_a_wrong_type_affects_only_itself(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, column: str, value: object
) -> None:
    path = tmp_path / "r.db"
    async with SqliteRegistry(path) as writer, SqliteRegistry(path) as watcher:
        await writer.register(inst("x", "victim"))
        await writer.register(inst("y", "bystander"))
        victim = aiter(watcher.watch("x"))
        bystander = aiter(watcher.watch("y"))
        await next_matching(victim, lambda s: len(s) == 1)
        await next_matching(bystander, lambda s: len(s) == 1)
        with caplog.at_level(logging.WARNING):
            _raw(path, f"UPDATE instances SET {column} = ? WHERE id = 'victim'", value)
            _raw(path, "UPDATE revisions SET revision = revision + 1")
            await writer.register(inst("y", "later"))  # unrelated service: its watchers keep updating
            snap = await next_matching(bystander, lambda s: len(s) == 2)
            assert sorted(i.id for i in snap) == ["bystander", "later"]
            await writer.register(inst("x", "fresh"))  # the damaged service too, minus the bad row
            snap = await next_matching(victim, lambda s: [i.id for i in s] == ["fresh"])
            assert await watcher.list_services() == ["x", "y"]
            await asyncio.sleep(0.3)  # several polls: the bad row must not make each one fail
        assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
        assert len([r for r in caplog.records if "victim" in r.getMessage()]) <= 1


@pytest.mark.parametrize("how", ["deleted", "replaced"])
async def test_the_file_deleted_or_replaced_is_reopened_and_owners_register_again(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, how: str
) -> None:
    path = tmp_path / "r.db"
    async with SqliteRegistry(path) as owner, SqliteRegistry(path) as watcher:
        await owner.register(inst("x", "a"), ttl=1.5)
        stream = aiter(watcher.watch("x"))
        await next_matching(stream, lambda s: [i.id for i in s] == ["a"])
        with caplog.at_level(logging.WARNING):
            for suffix in ("", "-wal", "-shm"):
                Path(f"{path}{suffix}").unlink(missing_ok=True)
            if how == "replaced":
                async with SqliteRegistry(tmp_path / "other.db") as elsewhere:
                    await elsewhere.register(inst("x", "stranger"), ttl=1000)
                    (tmp_path / "other.db").rename(path)  # an unrelated file now at the path
            # Every process converges on the file now at the path: the watcher sees the owner's
            # instance again (within a few heartbeats of 0.5 s; generous margin for a loaded machine).
            await next_matching(stream, lambda s: "a" in [i.id for i in s], timeout=10)
        async with SqliteRegistry(path) as newcomer:
            assert "a" in [i.id for i in await newcomer.get_service("x")]
        assert "deleted or replaced" in caplog.text
