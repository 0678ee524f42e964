"""The embedded default registry: one SQLite file shared by every process on a machine.

Why SQLite: it needs no server, survives crashes (WAL journal), and lets any number of
processes read and write one file safely. How it stays live:

* each registration row carries ``expires_at``; its owner's heartbeat pushes it forward
  every ``ttl / 3``. A killed owner stops heartbeating, its rows expire, readers ignore
  expired rows at once and the next watcher poll deletes them (so watchers are told);
* every write bumps a per-service revision and a global revision. Watchers poll the global
  revision (one indexed read of a one-row table, in a worker thread, every
  ``poll_interval``) and reload only the services whose revision moved.

All SQLite calls run on one worker thread per registry, so the event loop never blocks.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import os
import sqlite3
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import SplitResult

from grpcmesh._backoff import Backoff
from grpcmesh._tasks import cancel_and_wait
from grpcmesh.errors import ConfigError, InvalidRecordError, RegistryUnavailableError
from grpcmesh.model import ServiceInstance, decode_instance, encode_instance
from grpcmesh.registry._hub import WatchHub
from grpcmesh.registry._warn import WarnOnce
from grpcmesh.registry.base import DEFAULT_TTL, BaseRegistry, Snapshot, check_ttl, sort_snapshot

log = logging.getLogger("grpcmesh.registry.sqlite")

T = TypeVar("T")

DEFAULT_POLL_INTERVAL = 0.05

_SCHEMA = """
CREATE TABLE IF NOT EXISTS instances (
    name TEXT NOT NULL,
    id TEXT NOT NULL,
    record TEXT NOT NULL,
    owner TEXT NOT NULL,
    expires_at REAL NOT NULL,
    PRIMARY KEY (name, id)
);
CREATE INDEX IF NOT EXISTS instances_expiry ON instances (expires_at);
CREATE INDEX IF NOT EXISTS instances_owner ON instances (owner);
CREATE TABLE IF NOT EXISTS revisions (name TEXT PRIMARY KEY, revision INTEGER NOT NULL);
"""
_GLOBAL = ""  # the revisions row that counts every change


def default_path() -> Path:
    """Where ``sqlite://`` keeps its file: the user's data directory."""
    import platformdirs

    return Path(platformdirs.user_data_dir("grpcmesh")) / "registry.db"


class SqliteRegistry(BaseRegistry):
    """Registry in a SQLite file that many processes share."""

    def __init__(self, path: str | os.PathLike[str] | None = None, *, poll_interval: float = DEFAULT_POLL_INTERVAL):
        self.path = Path(path) if path is not None else default_path()
        self.poll_interval = poll_interval
        self._owner = uuid.uuid4().hex
        self._executor = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="grpcmesh-sqlite")
        self._conn: sqlite3.Connection | None = None
        self._owned: dict[tuple[str, str], tuple[ServiceInstance, float]] = {}
        self._hub: WatchHub[int] = WatchHub("sqlite", self._load, guard=self._check_watch, on_idle=self._stop_polling)
        self._global_revision = -1
        self._feeds_added = 0
        self._next_expiry = 0.0
        self._heartbeat_task: asyncio.Task[None] | None = None
        self._poll_task: asyncio.Task[None] | None = None
        self._warned = WarnOnce()
        self._lock = asyncio.Lock()

    # -- worker-thread plumbing -------------------------------------------------------

    async def _run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        self._ensure_open()
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._executor, self._call, fn)
        except sqlite3.Error as exc:
            raise RegistryUnavailableError(f"sqlite registry {self.path}: {exc}") from exc

    def _call(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        if self._conn is None:
            self._conn = self._connect()
        return fn(self._conn)

    def _connect(self) -> sqlite3.Connection:
        """Open the file, switch it to WAL and create the schema.

        Processes racing to create a fresh file can get SQLITE_BUSY from the journal-mode
        switch without the busy handler being consulted, so that step is retried.
        """
        self.path.parent.mkdir(parents=True, exist_ok=True)
        deadline = time.monotonic() + 10.0
        while True:
            conn = sqlite3.connect(self.path, timeout=10.0, isolation_level=None)
            try:
                conn.execute("PRAGMA busy_timeout=10000")
                conn.execute("PRAGMA journal_mode=WAL")
                conn.execute("PRAGMA synchronous=NORMAL")
                with _transaction(conn):
                    for statement in _SCHEMA.split(";"):
                        if statement.strip():
                            conn.execute(statement)
                    conn.execute("INSERT OR IGNORE INTO revisions (name, revision) VALUES (?, 0)", (_GLOBAL,))
                return conn
            except sqlite3.OperationalError as exc:
                conn.close()
                if "locked" not in str(exc) or time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    # -- registration -----------------------------------------------------------------

    async def register(self, instance: ServiceInstance, *, ttl: float = DEFAULT_TTL) -> None:
        ttl = check_ttl(ttl)
        record = encode_instance(instance).decode()
        owner = self._owner

        def write(conn: sqlite3.Connection) -> None:
            with _transaction(conn):
                conn.execute(
                    "INSERT OR REPLACE INTO instances (name, id, record, owner, expires_at) VALUES (?, ?, ?, ?, ?)",
                    (instance.name, instance.id, record, owner, time.time() + ttl),
                )
                _bump(conn, [instance.name])

        async with self._lock:
            await self._run(write)
            self._owned[instance.key] = (instance, ttl)
        self._start_heartbeat()

    async def deregister(self, instance: ServiceInstance) -> None:
        async with self._lock:
            self._owned.pop(instance.key, None)
            await self._run(lambda conn: _delete(conn, [instance.key]))

    def _start_heartbeat(self) -> None:
        if self._heartbeat_task is None or self._heartbeat_task.done():
            self._heartbeat_task = asyncio.get_running_loop().create_task(self._heartbeat_loop())

    async def _heartbeat_loop(self) -> None:
        failing = False
        while self._owned:
            interval = min(ttl for _, ttl in self._owned.values()) / 3
            await asyncio.sleep(interval)
            try:
                await self._heartbeat()
            except Exception as exc:  # registrations must not lapse silently: log, beat again next time
                if not failing:
                    log.warning("sqlite registry %s heartbeat failed, retrying: %r", self.path, exc)
                failing = True
            else:
                failing = False

    async def _heartbeat(self) -> None:
        async with self._lock:
            owned = dict(self._owned)
            if not owned:
                return
            owner = self._owner

            def beat(conn: sqlite3.Connection) -> list[tuple[str, str]]:
                now = time.time()
                with _transaction(conn):
                    alive = {
                        (name, iid)
                        for name, iid in conn.execute("SELECT name, id FROM instances WHERE owner = ?", (owner,))
                    }
                    lost = [key for key in owned if key not in alive]
                    for (name, iid), (_, ttl) in owned.items():
                        if (name, iid) in alive:
                            conn.execute(
                                "UPDATE instances SET expires_at = ? WHERE name = ? AND id = ?", (now + ttl, name, iid)
                            )
                    for key in lost:
                        instance, ttl = owned[key]
                        conn.execute(
                            "INSERT OR REPLACE INTO instances (name, id, record, owner, expires_at) VALUES (?,?,?,?,?)",
                            (key[0], key[1], encode_instance(instance).decode(), owner, now + ttl),
                        )
                    if lost:
                        _bump(conn, sorted({name for name, _ in lost}))
                    return lost

            lost = await self._run(beat)
        for name, iid in lost:
            log.warning("registration %s/%s had expired (owner paused longer than its TTL); re-registered", name, iid)

    # -- reading ----------------------------------------------------------------------

    async def get_service(self, name: str) -> list[ServiceInstance]:
        self._check_name(name)
        rows = await self._run(lambda conn: _live_rows(conn, name))
        return self._decode(rows)

    async def list_services(self) -> list[str]:
        return await self._run(
            lambda conn: [
                row[0]
                for row in conn.execute(
                    "SELECT DISTINCT name FROM instances WHERE expires_at >= ? ORDER BY name", (time.time(),)
                )
            ]
        )

    def _decode(self, rows: list[tuple[str, str, str]]) -> list[ServiceInstance]:
        instances = []
        for name, iid, record in rows:
            try:
                instance = decode_instance(record)
                if instance.key != (name, iid):
                    raise InvalidRecordError(f"record is for {instance.name}/{instance.id}, stored under {name}/{iid}")
            except InvalidRecordError as exc:
                self._warned.warning(
                    log, (name, iid, record), "skipping bad registry record %s/%s in %s: %s", name, iid, self.path, exc
                )
                continue
            instances.append(instance)
        return sort_snapshot(instances)

    async def _load(self, name: str) -> tuple[Snapshot, int]:
        """First snapshot of a newly watched name, and the revision it was read at."""
        revision, rows = await self._run(lambda conn: (_revision(conn, name), _live_rows(conn, name)))
        # A poll already under way did not look at this name: make the next one compare every
        # watched name's revision instead of trusting the global revision it recorded.
        self._feeds_added += 1
        self._global_revision = -1
        if self._poll_task is None or self._poll_task.done():
            self._poll_task = asyncio.get_running_loop().create_task(self._poll_loop())
        return self._decode(rows), revision

    async def _stop_polling(self) -> None:
        """The last watcher left: no poller runs for a registry nobody watches."""
        task, self._poll_task = self._poll_task, None
        await cancel_and_wait((task,))

    async def _poll_loop(self) -> None:
        backoff = Backoff(self.poll_interval, max(self.poll_interval, 2.0))
        while not self._closed:
            try:
                await self._poll_once()
            except Exception as exc:  # nothing may end the watches of this registry silently
                if backoff.attempts == 0:
                    if isinstance(exc, RegistryUnavailableError):
                        log.warning("sqlite registry poll failed, keeping last snapshots: %s", exc)
                    else:
                        log.exception("sqlite registry %s: unexpected error while polling; polling on", self.path)
                await backoff.sleep()
                continue
            if backoff.attempts:
                log.info("sqlite registry %s readable again", self.path)
                backoff.reset()
            await asyncio.sleep(self.poll_interval)

    async def _poll_once(self) -> None:
        topics = {topic.name: topic for topic in self._hub.topics()}
        names = list(topics)
        known = {name: topic.state for name, topic in topics.items()}
        last_global = self._global_revision
        feeds_added = self._feeds_added
        purge = time.time() >= self._next_expiry

        def poll(conn: sqlite3.Connection) -> tuple[int, float, dict[str, tuple[int, list[tuple[str, str, str]]]]]:
            if purge:
                _purge_expired(conn)
            next_expiry = conn.execute("SELECT MIN(expires_at) FROM instances").fetchone()[0]
            current = _revision(conn, _GLOBAL)
            changed: dict[str, tuple[int, list[tuple[str, str, str]]]] = {}
            if current != last_global:
                for name in names:
                    revision = _revision(conn, name)
                    if revision != known.get(name):
                        changed[name] = (revision, _live_rows(conn, name))
            return current, (next_expiry if next_expiry is not None else float("inf")), changed

        if not purge and self._global_revision >= 0:
            # Fast path: one read of the global revision.
            current = await self._run(lambda conn: _revision(conn, _GLOBAL))
            if current == last_global and time.time() < self._next_expiry:
                return
        current, next_expiry, changed = await self._run(poll)
        if feeds_added == self._feeds_added:  # else a new feed was not compared: check again next time
            self._global_revision = current
        self._next_expiry = next_expiry
        for name, (revision, rows) in changed.items():
            topics[name].state = revision
            await topics[name].publish(self._decode(rows))

    # -- shutdown ---------------------------------------------------------------------

    async def close(self) -> None:
        if self._closed:
            return
        for task in (self._heartbeat_task, self._poll_task):
            if task is not None:
                task.cancel()  # at once: no poll or heartbeat races the deregistration below
        async with self._lock:
            owned = list(self._owned)
            self._owned.clear()
            if owned:
                try:
                    await self._run(lambda conn: _delete(conn, owned))
                except RegistryUnavailableError as exc:
                    log.warning("could not deregister on close (they will expire after their TTL): %s", exc)
            self._closed = True
        await self._hub.close()
        await cancel_and_wait((self._heartbeat_task, self._poll_task))
        conn, self._conn = self._conn, None
        if conn is not None:
            await asyncio.get_running_loop().run_in_executor(self._executor, conn.close)
        self._executor.shutdown(wait=False)


class _transaction:
    """``BEGIN IMMEDIATE`` … ``COMMIT`` (or ``ROLLBACK``): writers queue instead of failing."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def __enter__(self) -> sqlite3.Connection:
        self.conn.execute("BEGIN IMMEDIATE")
        return self.conn

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        self.conn.execute("COMMIT" if exc_type is None else "ROLLBACK")


def _revision(conn: sqlite3.Connection, name: str) -> int:
    row = conn.execute("SELECT revision FROM revisions WHERE name = ?", (name,)).fetchone()
    return int(row[0]) if row else 0


def _bump(conn: sqlite3.Connection, names: list[str]) -> None:
    for name in [*names, _GLOBAL]:
        conn.execute(
            "INSERT INTO revisions (name, revision) VALUES (?, 1) "
            "ON CONFLICT(name) DO UPDATE SET revision = revision + 1",
            (name,),
        )


def _live_rows(conn: sqlite3.Connection, name: str) -> list[tuple[str, str, str]]:
    return list(
        conn.execute("SELECT name, id, record FROM instances WHERE name = ? AND expires_at >= ?", (name, time.time()))
    )


def _delete(conn: sqlite3.Connection, keys: list[tuple[str, str]]) -> None:
    with _transaction(conn):
        removed = set()
        for name, iid in keys:
            if conn.execute("DELETE FROM instances WHERE name = ? AND id = ?", (name, iid)).rowcount:
                removed.add(name)
        if removed:
            _bump(conn, sorted(removed))


def _purge_expired(conn: sqlite3.Connection) -> None:
    with _transaction(conn):
        names = [
            row[0] for row in conn.execute("DELETE FROM instances WHERE expires_at < ? RETURNING name", (time.time(),))
        ]
        if names:
            _bump(conn, sorted(set(names)))


def from_url(url: SplitResult, options: dict[str, Any]) -> SqliteRegistry:
    """``sqlite:///abs/file.db``, ``sqlite:relative/file.db``, or ``sqlite://`` (user data dir).

    Option ``poll_interval`` (seconds, default 0.05) sets how often watchers look for changes.
    """
    known = {"poll_interval"}
    unknown = sorted(set(options) - known)
    if unknown:
        raise ConfigError(f"registry: sqlite:// does not take option(s) {unknown}; it takes {sorted(known)}")
    if url.netloc:
        raise ConfigError(
            f"registry: sqlite URL has host {url.netloc!r}; write sqlite:///abs/path.db (three slashes) "
            "or sqlite:relative/path.db"
        )
    try:
        poll_interval = float(options.get("poll_interval", DEFAULT_POLL_INTERVAL))
    except ValueError:
        raise ConfigError(f"registry: poll_interval={options['poll_interval']!r} is not a number of seconds") from None
    if not 0.001 <= poll_interval <= 60:
        raise ConfigError("registry: poll_interval must be between 0.001 and 60 seconds")
    return SqliteRegistry(url.path or None, poll_interval=poll_interval)
