"""Payments in payment-service's SQLite file, unique per idempotency key."""

from __future__ import annotations

import sqlite3

from shop.ids import new_id
from shop.payment.v1 import payment_pb2
from shop.storage import Database, now_ms, transaction

SCHEMA = """
CREATE TABLE IF NOT EXISTS payments (
    id TEXT PRIMARY KEY,
    idempotency_key TEXT NOT NULL UNIQUE,
    order_id TEXT NOT NULL,
    user_id TEXT NOT NULL,
    amount_cents INTEGER NOT NULL,
    currency TEXT NOT NULL,
    status INTEGER NOT NULL,
    decline_reason TEXT NOT NULL,
    created_at_unix_ms INTEGER NOT NULL
)
"""

_COLUMNS = (
    "id",
    "idempotency_key",
    "order_id",
    "user_id",
    "amount_cents",
    "currency",
    "status",
    "decline_reason",
    "created_at_unix_ms",
)


def _payment(row: sqlite3.Row) -> payment_pb2.Payment:
    return payment_pb2.Payment(**{column: row[column] for column in _COLUMNS})


class PaymentRepository:
    """Store a payment once per idempotency key; a second store with the same key returns the first."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def store_once(self, payment: payment_pb2.Payment) -> tuple[payment_pb2.Payment, bool]:
        """``(stored payment, replayed)``: the new payment, or the one already stored under its key.

        One ``BEGIN IMMEDIATE`` transaction does the lookup and the insert, so two instances
        charging the same key at once still store exactly one payment.
        """
        payment.id = payment.id or new_id("pay")
        payment.created_at_unix_ms = payment.created_at_unix_ms or now_ms()

        def store(conn: sqlite3.Connection) -> tuple[sqlite3.Row, bool]:
            with transaction(conn):
                row: sqlite3.Row | None = conn.execute(
                    "SELECT * FROM payments WHERE idempotency_key = ?", (payment.idempotency_key,)
                ).fetchone()
                if row is not None:
                    return row, True
                values = tuple(getattr(payment, column) for column in _COLUMNS)
                conn.execute(
                    f"INSERT INTO payments ({', '.join(_COLUMNS)}) VALUES ({', '.join('?' * len(_COLUMNS))})", values
                )
                inserted: sqlite3.Row = conn.execute("SELECT * FROM payments WHERE id = ?", (payment.id,)).fetchone()
                return inserted, False

        row, replayed = await self._db.run(store)
        return _payment(row), replayed

    async def get(self, payment_id: str) -> payment_pb2.Payment | None:
        def select(conn: sqlite3.Connection) -> sqlite3.Row | None:
            row: sqlite3.Row | None = conn.execute("SELECT * FROM payments WHERE id = ?", (payment_id,)).fetchone()
            return row

        row = await self._db.run(select)
        return None if row is None else _payment(row)
