"""Notifications in notification-service's SQLite file."""

from __future__ import annotations

import sqlite3

from shop.ids import new_id
from shop.notification.v1 import notification_pb2
from shop.storage import Database, now_ms, transaction

SCHEMA = """
CREATE TABLE IF NOT EXISTS notifications (
    id TEXT PRIMARY KEY,
    user_id TEXT NOT NULL,
    channel INTEGER NOT NULL,
    subject TEXT NOT NULL,
    body TEXT NOT NULL,
    dedupe_key TEXT UNIQUE,
    created_at_unix_ms INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS notifications_by_user ON notifications (user_id, created_at_unix_ms)
"""


def _notification(row: sqlite3.Row) -> notification_pb2.Notification:
    return notification_pb2.Notification(
        id=row["id"],
        user_id=row["user_id"],
        channel=row["channel"],
        subject=row["subject"],
        body=row["body"],
        created_at_unix_ms=row["created_at_unix_ms"],
    )


class NotificationRepository:
    """Store notifications (at most one per dedupe key) and list a user's newest first."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def add(
        self, user_id: str, channel: int, subject: str, body: str, dedupe_key: str = ""
    ) -> tuple[notification_pb2.Notification, bool]:
        """``(notification, duplicate)``: the stored one, and whether the dedupe key had been used."""
        new = (new_id("ntf"), user_id, channel, subject, body, dedupe_key or None, now_ms())

        def insert(conn: sqlite3.Connection) -> tuple[sqlite3.Row, bool]:
            with transaction(conn):
                if dedupe_key:
                    row: sqlite3.Row | None = conn.execute(
                        "SELECT * FROM notifications WHERE dedupe_key = ?", (dedupe_key,)
                    ).fetchone()
                    if row is not None:
                        return row, True
                conn.execute(
                    "INSERT INTO notifications (id, user_id, channel, subject, body, dedupe_key, created_at_unix_ms)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?)",
                    new,
                )
                stored: sqlite3.Row = conn.execute("SELECT * FROM notifications WHERE id = ?", (new[0],)).fetchone()
                return stored, False

        row, duplicate = await self._db.run(insert)
        return _notification(row), duplicate

    async def for_user(self, user_id: str, limit: int) -> list[notification_pb2.Notification]:
        def select(conn: sqlite3.Connection) -> list[sqlite3.Row]:
            return conn.execute(
                "SELECT * FROM notifications WHERE user_id = ? ORDER BY created_at_unix_ms DESC, id LIMIT ?",
                (user_id, limit),
            ).fetchall()

        return [_notification(row) for row in await self._db.run(select)]
