"""One SQLite file per service, used from a single worker thread so the event loop never blocks.

Both instances of a service share their service's file (WAL mode lets several processes
read while one writes), so an order created through one instance is visible through the
other and everything survives a restart.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import os
import sqlite3
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")

DATA_DIR_ENV = "SHOP_DATA_DIR"


def database_path(service: str) -> Path:
    """Where ``service`` keeps its data: ``$SHOP_DATA_DIR/<service>.db`` (default ``./shop-data``)."""
    return Path(os.environ.get(DATA_DIR_ENV) or "shop-data") / f"{service}.db"


def now_ms() -> int:
    """Milliseconds since the Unix epoch (what the protos store)."""
    return int(time.time() * 1000)


@contextlib.contextmanager
def transaction(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """``BEGIN IMMEDIATE`` ... ``COMMIT`` (rolled back on error): writers queue up instead of failing."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield conn
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


class Database:
    """An SQLite file with a schema, reached through :meth:`run` on one worker thread."""

    def __init__(self, path: Path, schema: str) -> None:
        self.path = path
        self._schema = schema
        self._executor = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix=f"sqlite-{path.stem}")
        self._conn: sqlite3.Connection | None = None

    async def run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``fn(connection)`` on the worker thread."""
        return await asyncio.get_running_loop().run_in_executor(self._executor, self._call, fn)

    def _call(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        if self._conn is None:
            self._conn = self._connect()
        return fn(self._conn)

    def _connect(self) -> sqlite3.Connection:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        deadline = time.monotonic() + 10.0
        while True:  # two instances creating a fresh file race on the WAL switch; retry briefly
            conn = sqlite3.connect(self.path, timeout=10.0, isolation_level=None, check_same_thread=False)
            conn.row_factory = sqlite3.Row
            try:
                conn.execute("PRAGMA busy_timeout=10000")
                conn.execute("PRAGMA journal_mode=WAL")
                conn.execute("PRAGMA synchronous=NORMAL")
                with transaction(conn):
                    for statement in self._schema.split(";"):
                        if statement.strip():
                            conn.execute(statement)
                return conn
            except sqlite3.OperationalError as exc:
                conn.close()
                if "locked" not in str(exc) or time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    async def close(self) -> None:
        """Close the connection and stop the worker thread."""

        def _close() -> None:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

        await asyncio.get_running_loop().run_in_executor(self._executor, _close)
        self._executor.shutdown(wait=True)
