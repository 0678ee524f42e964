"""Users in user-service's SQLite file."""

from __future__ import annotations

import sqlite3

from shop.ids import new_id
from shop.storage import Database, now_ms, transaction
from shop.user.v1 import user_pb2

SCHEMA = """
CREATE TABLE IF NOT EXISTS users (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    email TEXT NOT NULL UNIQUE,
    idempotency_key TEXT UNIQUE,
    created_at_unix_ms INTEGER NOT NULL
)
"""


class EmailTakenError(Exception):
    """Another user already has this email address."""


def _user(row: sqlite3.Row) -> user_pb2.User:
    return user_pb2.User(
        id=row["id"], name=row["name"], email=row["email"], created_at_unix_ms=row["created_at_unix_ms"]
    )


class UserRepository:
    """Create, read and update users; emails are unique (case-insensitively: stored lower-case)."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def create(self, name: str, email: str, idempotency_key: str = "") -> tuple[user_pb2.User, bool]:
        """``(user, existed)``: a new user, or the one already created under ``idempotency_key``."""
        user = user_pb2.User(id=new_id("usr"), name=name.strip(), email=email.lower(), created_at_unix_ms=now_ms())

        def insert(conn: sqlite3.Connection) -> tuple[user_pb2.User, bool]:
            try:
                with transaction(conn):
                    if idempotency_key:
                        row: sqlite3.Row | None = conn.execute(
                            "SELECT * FROM users WHERE idempotency_key = ?", (idempotency_key,)
                        ).fetchone()
                        if row is not None:
                            return _user(row), True
                    conn.execute(
                        "INSERT INTO users (id, name, email, idempotency_key, created_at_unix_ms)"
                        " VALUES (?, ?, ?, ?, ?)",
                        (user.id, user.name, user.email, idempotency_key or None, user.created_at_unix_ms),
                    )
                    return user, False
            except sqlite3.IntegrityError as exc:
                raise EmailTakenError(user.email) from exc

        return await self._db.run(insert)

    async def get(self, user_id: str) -> user_pb2.User | None:
        def select(conn: sqlite3.Connection) -> sqlite3.Row | None:
            row: sqlite3.Row | None = conn.execute("SELECT * FROM users WHERE id = ?", (user_id,)).fetchone()
            return row

        row = await self._db.run(select)
        return None if row is None else _user(row)

    async def update(self, user_id: str, *, name: str = "", email: str = "") -> user_pb2.User | None:
        """Change the non-empty fields; ``None`` when there is no such user."""

        def change(conn: sqlite3.Connection) -> sqlite3.Row | None:
            try:
                with transaction(conn):
                    if name:
                        conn.execute("UPDATE users SET name = ? WHERE id = ?", (name.strip(), user_id))
                    if email:
                        conn.execute("UPDATE users SET email = ? WHERE id = ?", (email.lower(), user_id))
                    row: sqlite3.Row | None = conn.execute("SELECT * FROM users WHERE id = ?", (user_id,)).fetchone()
                    return row
            except sqlite3.IntegrityError as exc:
                raise EmailTakenError(email.lower()) from exc

        row = await self._db.run(change)
        return None if row is None else _user(row)
