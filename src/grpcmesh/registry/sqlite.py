"""The embedded default registry: one SQLite file shared by every process on a machine.

Why SQLite: it needs no server, survives crashes (WAL journal), and lets any number of
processes read and write one file safely. How it stays live:

* each registration row carries ``expires_at`` and its *owner* (a random token per registry
  object); the owner's heartbeat pushes it forward every ``ttl / 3``. A killed owner stops
  heartbeating, its rows expire, readers ignore expired rows at once and the next watcher
  poll deletes them (so watchers are told);
* every write bumps a per-service revision and a global revision. Watchers poll the global
  revision (one indexed read of a one-row table, in a worker thread, every
  ``poll_interval``) and reload only the services whose revision moved.

Owners look after their rows on every heartbeat: a row deleted by someone else (or expired
while the owner was paused) is written again, logged; a row another live registry now owns
(two processes registered the same instance id) is reported with a WARNING naming the id and
left to that owner instead of flipping between them. ``deregister`` and ``close`` delete only
rows this registry still owns.

**The file deleted or replaced while processes run** is detected by file identity
(``st_dev``/``st_ino`` of the path, checked before every statement): the registry *reopens*
the file now at the path (creating it if needed), logs a WARNING, re-registers its own
instances there at once and reloads every watched service, so all processes converge on the
new file instead of splitting the mesh into two views.

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
from grpcmesh.registry import sqlite_store as store
from grpcmesh.registry._hub import WatchHub
from grpcmesh.registry._warn import WarnOnce
from grpcmesh.registry.base import DEFAULT_TTL, BaseRegistry, Snapshot, check_ttl, sort_snapshot

log = logging.getLogger("grpcmesh.registry.sqlite")

T = TypeVar("T")
Key = tuple[str, str]

DEFAULT_POLL_INTERVAL = 0.05


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
        self._identity: tuple[int, int] | None = None
        self._reopened = False  # set on the worker thread, handled on the event loop
        self._owned: dict[Key, tuple[ServiceInstance, float]] = {}
        self._contested: set[Key] = set()
        self._heartbeat_failing = False
        self._hub: WatchHub[int] = WatchHub("sqlite", self._load, guard=self._check_watch, on_idle=self._stop_polling)
        self._global_revision = -1
        self._feeds_added = 0
        self._next_expiry = 0.0
        self._heartbeat_task: asyncio.Task[None] | None = None
        self._restore_task: asyncio.Task[None] | None = None
        self._poll_task: asyncio.Task[None] | None = None
        self._warned = WarnOnce()
        self._lock = asyncio.Lock()

    def __repr__(self) -> str:
        return f"SqliteRegistry({str(self.path)!r})"

    # -- worker-thread plumbing -------------------------------------------------------

    async def _run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        self._ensure_open()
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._executor, self._call, fn)
        except sqlite3.Error as exc:
            raise RegistryUnavailableError(f"sqlite registry {self.path}: {exc}") from exc
        finally:
            if self._reopened:
                self._reopened = False
                self._file_replaced()

    def _call(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        if self._conn is not None and store.file_identity(self.path) != self._identity:
            self._conn.close()  # the file at the path is not the one we have open
            self._conn = None
            self._reopened = True
        if self._conn is None:
            self._conn = store.connect(self.path)
            self._identity = store.file_identity(self.path)
        return fn(self._conn)

    def _file_replaced(self) -> None:
        log.warning(
            "sqlite registry file %s was deleted or replaced while in use; reopened the file now at that path, "
            "re-registering %d own instance(s) and reloading %d watched service(s)",
            self.path,
            len(self._owned),
            len(self._hub),
        )
        self._global_revision = -1
        for topic in self._hub.topics():
            topic.state = -1  # revisions of the old file mean nothing in the new one
        if self._owned and (self._restore_task is None or self._restore_task.done()):
            self._restore_task = asyncio.get_running_loop().create_task(self._heartbeat_logged())

    # -- registration -----------------------------------------------------------------

    async def register(self, instance: ServiceInstance, *, ttl: float = DEFAULT_TTL) -> None:
        ttl = check_ttl(ttl)
        record = encode_instance(instance).decode()
        owner = self._owner

        def write(conn: sqlite3.Connection) -> None:
            with store.transaction(conn):
                store.claim(conn, instance.name, instance.id, record, owner, time.time() + ttl)
                store.bump(conn, [instance.name])

        async with self._lock:
            await self._run(write)
            self._owned[instance.key] = (instance, ttl)
            self._contested.discard(instance.key)
        self._start_heartbeat()

    async def deregister(self, instance: ServiceInstance) -> None:
        async with self._lock:
            self._owned.pop(instance.key, None)
            self._contested.discard(instance.key)
            owner = self._owner
            await self._run(lambda conn: store.delete_owned(conn, [instance.key], owner))

    def _start_heartbeat(self) -> None:
        if self._heartbeat_task is None or self._heartbeat_task.done():
            self._heartbeat_task = asyncio.get_running_loop().create_task(self._heartbeat_loop())

    async def _heartbeat_loop(self) -> None:
        while self._owned:
            await asyncio.sleep(min(ttl for _, ttl in self._owned.values()) / 3)
            await self._heartbeat_logged()

    async def _heartbeat_logged(self) -> None:
        try:
            await self._heartbeat()
        except Exception as exc:  # registrations must not lapse silently: log once per streak, beat again
            if not self._heartbeat_failing:
                log.warning(
                    "sqlite registry %s heartbeat of %d instance(s) failed, retrying: %r",
                    self.path,
                    len(self._owned),
                    exc,
                    exc_info=not isinstance(exc, RegistryUnavailableError),
                )
            self._heartbeat_failing = True
        else:
            if self._heartbeat_failing:
                log.info("sqlite registry %s heartbeat works again", self.path)
            self._heartbeat_failing = False

    async def _heartbeat(self) -> None:
        async with self._lock:
            owned = dict(self._owned)
            if not owned:
                return
            owner = self._owner

            def beat(conn: sqlite3.Connection) -> tuple[list[Key], list[Key]]:
                now = time.time()
                with store.transaction(conn):
                    mine = set(conn.execute("SELECT name, id FROM instances WHERE owner = ?", (owner,)))
                    restored, contested = [], []
                    for key, (instance, ttl) in owned.items():
                        if key in mine:
                            conn.execute(
                                "UPDATE instances SET expires_at = ? WHERE name = ? AND id = ?", (now + ttl, *key)
                            )
                            continue
                        other = conn.execute(
                            "SELECT expires_at FROM instances WHERE name = ? AND id = ?", key
                        ).fetchone()
                        if other is not None and store.expiry_problem(other[0]) is None and other[0] >= now:
                            contested.append(key)  # another live owner has it: report, don't flip
                            continue
                        store.claim(conn, *key, encode_instance(instance).decode(), owner, now + ttl)
                        restored.append(key)
                    if restored:
                        store.bump(conn, sorted({name for name, _ in restored}))
                    return restored, contested

            restored, contested = await self._run(beat)
        for name, iid in restored:
            log.warning(
                "sqlite registration %s/%s had vanished (deleted by another process, or expired while this owner "
                "was paused longer than its TTL); registered it again",
                name,
                iid,
            )
        for key in contested:
            if key not in self._contested:
                self._contested.add(key)
                log.warning(
                    "sqlite registry: instance id %s of %s has two live owners (another process registered the same "
                    "id); leaving it to the other one. Give each process its own instance id",
                    key[1],
                    key[0],
                )

    # -- reading ----------------------------------------------------------------------

    async def get_service(self, name: str) -> list[ServiceInstance]:
        self._check_name(name)
        rows = await self._run(lambda conn: store.live_rows(conn, name))
        return self._decode(rows)

    async def list_services(self) -> list[str]:
        """Services with at least one usable live instance (names holding only bad rows are left out)."""
        rows = await self._run(store.all_live_rows)
        return sorted({instance.name for instance in self._decode(rows)})

    def _decode(self, rows: list[store.Row]) -> list[ServiceInstance]:
        """The valid instances among ``rows``; each bad row is skipped with one warning."""
        instances = []
        for name, iid, record, expires_at in rows:
            try:
                problem = store.expiry_problem(expires_at)
                if problem is not None:
                    raise InvalidRecordError(problem)
                instance = decode_instance(record)
                if instance.key != (name, iid):
                    raise InvalidRecordError(f"record is for {instance.name}/{instance.id}")
            except InvalidRecordError as exc:
                shown = f"{str(name)[:100]!r}/{str(iid)[:100]!r}"
                marker = (shown, hash(str(record)), repr(expires_at)[:50])
                self._warned.warning(log, marker, "skipping bad registry row %s in %s: %s", shown, self.path, exc)
                continue
            instances.append(instance)
        return sort_snapshot(instances)

    async def _load(self, name: str) -> tuple[Snapshot, int]:
        """First snapshot of a newly watched name, and the revision it was read at."""
        revision, rows = await self._run(lambda conn: (store.revision(conn, name), store.live_rows(conn, name)))
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
        known = {name: topic.state for name, topic in topics.items()}
        last_global = self._global_revision
        feeds_added = self._feeds_added
        purge = time.time() >= self._next_expiry

        def poll(conn: sqlite3.Connection) -> tuple[int, float, dict[str, tuple[int, list[store.Row]]]]:
            if purge:
                store.purge_expired(conn)
            current = store.revision(conn, store.GLOBAL)
            changed: dict[str, tuple[int, list[store.Row]]] = {}
            if current != last_global or current < 0:
                for name, seen in known.items():
                    revision = store.revision(conn, name)
                    if revision != seen or revision < 0:
                        changed[name] = (revision, store.live_rows(conn, name))
            return current, store.next_expiry(conn), changed

        if not purge and self._global_revision >= 0:
            # Fast path: one read of the global revision.
            current = await self._run(lambda conn: store.revision(conn, store.GLOBAL))
            if current == last_global and time.time() < self._next_expiry:
                return
        current, next_expiry, changed = await self._run(poll)
        if feeds_added == self._feeds_added and self._global_revision == last_global:
            self._global_revision = current  # else a new feed (or a new file) was not compared: look again
        self._next_expiry = next_expiry
        for name, (revision, rows) in changed.items():
            if topics[name].state == known[name]:  # not reset by a file reopen meanwhile
                topics[name].state = revision
            await topics[name].publish(self._decode(rows))

    # -- shutdown ---------------------------------------------------------------------

    async def close(self) -> None:
        if self._closed:
            return
        for task in (self._heartbeat_task, self._restore_task, self._poll_task):
            if task is not None:
                task.cancel()  # at once: no poll or heartbeat races the deregistration below
        async with self._lock:
            owned = list(self._owned)
            self._owned.clear()
            if owned:
                owner = self._owner
                try:
                    await self._run(lambda conn: store.delete_owned(conn, owned, owner))
                except RegistryUnavailableError as exc:
                    log.warning("could not deregister on close (they will expire after their TTL): %s", exc)
            self._closed = True
        await self._hub.close()
        await cancel_and_wait((self._heartbeat_task, self._restore_task, self._poll_task))
        conn, self._conn = self._conn, None
        if conn is not None:
            await asyncio.get_running_loop().run_in_executor(self._executor, conn.close)
        self._executor.shutdown(wait=False)


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
            f"registry: sqlite URL has host {url.netloc.rpartition('@')[2]!r}; "
            "write sqlite:///abs/path.db (three slashes) or sqlite:relative/path.db"
        )
    try:
        poll_interval = float(options.get("poll_interval", DEFAULT_POLL_INTERVAL))
    except ValueError:
        raise ConfigError(f"registry: poll_interval={options['poll_interval']!r} is not a number of seconds") from None
    if not 0.001 <= poll_interval <= 60:
        raise ConfigError("registry: poll_interval must be between 0.001 and 60 seconds")
    return SqliteRegistry(url.path or None, poll_interval=poll_interval)
