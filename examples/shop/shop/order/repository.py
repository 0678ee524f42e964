"""Orders and their items in order-service's SQLite file."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence

from shop.ids import new_id
from shop.order.v1 import order_pb2
from shop.storage import Database, now_ms, transaction

SCHEMA = """
CREATE TABLE IF NOT EXISTS orders (
    id TEXT PRIMARY KEY,
    user_id TEXT NOT NULL,
    total_cents INTEGER NOT NULL,
    currency TEXT NOT NULL,
    status INTEGER NOT NULL,
    payment_id TEXT NOT NULL DEFAULT '',
    idempotency_key TEXT UNIQUE,
    created_at_unix_ms INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS orders_by_user ON orders (user_id, created_at_unix_ms);
CREATE TABLE IF NOT EXISTS order_items (
    order_id TEXT NOT NULL REFERENCES orders (id),
    position INTEGER NOT NULL,
    sku TEXT NOT NULL,
    name TEXT NOT NULL,
    quantity INTEGER NOT NULL,
    unit_price_cents INTEGER NOT NULL,
    PRIMARY KEY (order_id, position)
)
"""


def _load(conn: sqlite3.Connection, row: sqlite3.Row) -> order_pb2.Order:
    items = conn.execute("SELECT * FROM order_items WHERE order_id = ? ORDER BY position", (row["id"],)).fetchall()
    return order_pb2.Order(
        id=row["id"],
        user_id=row["user_id"],
        items=[
            order_pb2.OrderItem(
                sku=item["sku"], name=item["name"], quantity=item["quantity"], unit_price_cents=item["unit_price_cents"]
            )
            for item in items
        ],
        total_cents=row["total_cents"],
        currency=row["currency"],
        status=row["status"],
        payment_id=row["payment_id"],
        created_at_unix_ms=row["created_at_unix_ms"],
    )


def _select(conn: sqlite3.Connection, order_id: str) -> order_pb2.Order | None:
    row: sqlite3.Row | None = conn.execute("SELECT * FROM orders WHERE id = ?", (order_id,)).fetchone()
    return None if row is None else _load(conn, row)


class OrderRepository:
    """Orders, at most one per idempotency key."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def find_by_key(self, idempotency_key: str) -> order_pb2.Order | None:
        def select(conn: sqlite3.Connection) -> order_pb2.Order | None:
            row: sqlite3.Row | None = conn.execute(
                "SELECT * FROM orders WHERE idempotency_key = ?", (idempotency_key,)
            ).fetchone()
            return None if row is None else _load(conn, row)

        return await self._db.run(select) if idempotency_key else None

    async def create(
        self, user_id: str, items: Sequence[order_pb2.OrderItem], currency: str, idempotency_key: str = ""
    ) -> tuple[order_pb2.Order, bool]:
        """``(order, existed)``: a new PENDING order, or the one already stored under ``idempotency_key``."""
        order_id, created = new_id("ord"), now_ms()
        total = sum(item.quantity * item.unit_price_cents for item in items)

        def insert(conn: sqlite3.Connection) -> tuple[order_pb2.Order, bool]:
            with transaction(conn):
                if idempotency_key:
                    row: sqlite3.Row | None = conn.execute(
                        "SELECT * FROM orders WHERE idempotency_key = ?", (idempotency_key,)
                    ).fetchone()
                    if row is not None:
                        return _load(conn, row), True
                conn.execute(
                    "INSERT INTO orders (id, user_id, total_cents, currency, status, idempotency_key,"
                    " created_at_unix_ms) VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (
                        order_id,
                        user_id,
                        total,
                        currency,
                        order_pb2.ORDER_STATUS_PENDING,
                        idempotency_key or None,
                        created,
                    ),
                )
                conn.executemany(
                    "INSERT INTO order_items (order_id, position, sku, name, quantity, unit_price_cents)"
                    " VALUES (?, ?, ?, ?, ?, ?)",
                    [
                        (order_id, position, item.sku, item.name, item.quantity, item.unit_price_cents)
                        for position, item in enumerate(items)
                    ],
                )
                order = _select(conn, order_id)
                assert order is not None
                return order, False

        return await self._db.run(insert)

    async def record_payment(self, order_id: str, status: int, payment_id: str) -> order_pb2.Order:
        def update(conn: sqlite3.Connection) -> order_pb2.Order:
            with transaction(conn):
                conn.execute(
                    "UPDATE orders SET status = ?, payment_id = ? WHERE id = ?", (status, payment_id, order_id)
                )
                order = _select(conn, order_id)
            if order is None:
                raise LookupError(f"order {order_id!r} vanished while recording its payment")
            return order

        return await self._db.run(update)

    async def get(self, order_id: str) -> order_pb2.Order | None:
        return await self._db.run(lambda conn: _select(conn, order_id))

    async def for_user(self, user_id: str, limit: int) -> list[order_pb2.Order]:
        def select(conn: sqlite3.Connection) -> list[order_pb2.Order]:
            rows = conn.execute(
                "SELECT * FROM orders WHERE user_id = ? ORDER BY created_at_unix_ms DESC, id LIMIT ?", (user_id, limit)
            ).fetchall()
            return [_load(conn, row) for row in rows]

        return await self._db.run(select)
