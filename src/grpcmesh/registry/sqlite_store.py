"""The SQLite file of the embedded registry: schema, connection and the statements the registry runs.

Every function here runs on the registry's worker thread. Rows are read defensively: the
file is shared by every process on the machine, so any column of any row may hold anything
(a text ``expires_at``, a number as ``record``); such a row is reported back as bad and
affects only itself.
"""

from __future__ import annotations

import math
import os
import sqlite3
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

__all__ = [
    "GLOBAL",
    "Row",
    "bump",
    "claim",
    "connect",
    "delete_owned",
    "file_identity",
    "live_rows",
    "next_expiry",
    "purge_expired",
    "revision",
    "transaction",
]

SCHEMA = """
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
GLOBAL = ""  # the revisions row that counts every change
_NUMERIC = "typeof(expires_at) IN ('integer', 'real')"

_LIVE_ROWS_OF_NAME = (
    "SELECT name, id, record, expires_at FROM instances "  # noqa: S608 - constants only, no user input
    f"WHERE name = ? AND (NOT {_NUMERIC} OR expires_at >= ?)"
)

Row = tuple[Any, Any, Any, Any]
"""``(name, id, record, expires_at)`` exactly as stored: any type, checked by the reader."""


class transaction:
    """``BEGIN IMMEDIATE`` … ``COMMIT`` (or ``ROLLBACK``): writers queue instead of failing."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def __enter__(self) -> sqlite3.Connection:
        self.conn.execute("BEGIN IMMEDIATE")
        return self.conn

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        self.conn.execute("COMMIT" if exc_type is None else "ROLLBACK")


def connect(path: Path) -> sqlite3.Connection:
    """Open the file, switch it to WAL and create the schema.

    Processes racing to create a fresh file can get SQLITE_BUSY from the journal-mode
    switch without the busy handler being consulted, so that step is retried.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    deadline = time.monotonic() + 10.0
    while True:
        conn = sqlite3.connect(path, timeout=10.0, isolation_level=None)
        try:
            conn.execute("PRAGMA busy_timeout=10000")
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            with transaction(conn):
                for statement in SCHEMA.split(";"):
                    if statement.strip():
                        conn.execute(statement)
                conn.execute("INSERT OR IGNORE INTO revisions (name, revision) VALUES (?, 0)", (GLOBAL,))
            return conn
        except sqlite3.OperationalError as exc:
            conn.close()
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def file_identity(path: Path) -> tuple[int, int] | None:
    """``(st_dev, st_ino)`` of the file now at ``path`` (None if there is none)."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return (st.st_dev, st.st_ino)


def revision(conn: sqlite3.Connection, name: str) -> int:
    """The change counter of ``name`` (-1 if the stored value is not a number: always "changed")."""
    row = conn.execute("SELECT revision FROM revisions WHERE name = ?", (name,)).fetchone()
    if row is None:
        return 0
    return row[0] if isinstance(row[0], int) else -1


def bump(conn: sqlite3.Connection, names: Iterable[str]) -> None:
    for name in [*names, GLOBAL]:
        conn.execute(
            "INSERT INTO revisions (name, revision) VALUES (?, 1) "
            "ON CONFLICT(name) DO UPDATE SET revision = "
            "CASE WHEN typeof(revision) = 'integer' THEN revision + 1 ELSE 1 END",
            (name,),
        )


def live_rows(conn: sqlite3.Connection, name: str) -> list[Row]:
    """Rows of ``name`` not yet expired, plus rows whose ``expires_at`` is not a number (bad rows)."""
    return list(
        conn.execute(
            _LIVE_ROWS_OF_NAME,
            (name, time.time()),
        )
    )


def all_live_rows(conn: sqlite3.Connection) -> list[Row]:
    return list(
        conn.execute(
            f"SELECT name, id, record, expires_at FROM instances WHERE {_NUMERIC} AND expires_at >= ?",  # noqa: S608
            (time.time(),),
        )
    )


def expiry_problem(expires_at: Any) -> str | None:
    """Why a stored ``expires_at`` is unusable, or None when it is a finite number."""
    if isinstance(expires_at, bool) or not isinstance(expires_at, (int, float)):
        return f"expires_at is {type(expires_at).__name__}, not a number"
    if not math.isfinite(expires_at):
        return f"expires_at is {expires_at!r}"
    return None


def next_expiry(conn: sqlite3.Connection) -> float:
    value = conn.execute(f"SELECT MIN(expires_at) FROM instances WHERE {_NUMERIC}").fetchone()[0]  # noqa: S608
    return float(value) if isinstance(value, (int, float)) else float("inf")


def claim(conn: sqlite3.Connection, name: str, iid: str, record: str, owner: str, expires_at: float) -> None:
    conn.execute(
        "INSERT OR REPLACE INTO instances (name, id, record, owner, expires_at) VALUES (?, ?, ?, ?, ?)",
        (name, iid, record, owner, expires_at),
    )


def delete_owned(conn: sqlite3.Connection, keys: Iterable[tuple[str, str]], owner: str) -> None:
    """Delete ``keys`` where ``owner`` still owns them (never a successor's registration)."""
    with transaction(conn):
        removed = set()
        for name, iid in keys:
            if conn.execute(
                "DELETE FROM instances WHERE name = ? AND id = ? AND owner = ?", (name, iid, owner)
            ).rowcount:
                removed.add(name)
        if removed:
            bump(conn, sorted(removed))


def purge_expired(conn: sqlite3.Connection) -> None:
    with transaction(conn):
        names = [
            row[0]
            for row in conn.execute(
                f"DELETE FROM instances WHERE {_NUMERIC} AND expires_at < ? RETURNING name",  # noqa: S608
                (time.time(),),
            )
        ]
        if names:
            bump(conn, sorted({str(n) for n in names}))
