"""Steady, bounded traffic against the shop, with its statistics as JSON lines on stdout.

At ``rate`` operations per second (and at most ``concurrency`` in flight) it creates users,
creates orders for them and reads orders back, each through the mesh like any client. Every
``report_every`` seconds it prints one JSON object (``"final": true`` on the last, printed
after SIGTERM/SIGINT once in-flight calls have finished), which ``grpcmesh demo`` reads.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import json
import math
import random
import signal
import sys
import time
import uuid
from collections import Counter, deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc

import grpcmesh
from shop.order.v1 import order_pb2, order_pb2_grpc
from shop.retry import retry_idempotent
from shop.user.v1 import user_pb2, user_pb2_grpc

CATALOG = [
    ("sku-mug", "Mug", 1299),
    ("sku-tee", "T-shirt", 2499),
    ("sku-cap", "Cap", 1899),
    ("sku-socks", "Socks", 799),
    ("sku-hoodie", "Hoodie", 5999),
    ("sku-piano", "Grand piano", 2_500_000),  # above payment-service's limit: declined, not an error
]
CALL_TIMEOUT = 5.0
MAX_SAMPLES = 50_000
WINDOW_SECONDS = 5.0


def percentile(sorted_values: list[float], q: float) -> float | None:
    """Nearest-rank percentile of an already sorted list (``None`` when empty)."""
    if not sorted_values:
        return None
    rank = min(len(sorted_values) - 1, max(0, math.ceil(q * len(sorted_values)) - 1))
    return sorted_values[rank]


@dataclass
class Stats:
    """What the traffic saw: every top-level call's outcome and latency."""

    calls: int = 0
    failed: int = 0
    by_operation: Counter[str] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    last_error: str = ""
    samples: list[float] = field(default_factory=list)
    recent: deque[tuple[float, float]] = field(default_factory=deque)
    """(monotonic time, latency ms) of the last WINDOW_SECONDS."""

    def record(self, operation: str, latency_ms: float, error: grpc.aio.AioRpcError | None) -> None:
        self.calls += 1
        self.by_operation[operation] += 1
        if error is not None:
            self.failed += 1
            self.errors[error.code().name] += 1
            self.last_error = f"{operation}: {error.code().name} {error.details()}"
        if len(self.samples) < MAX_SAMPLES:
            bisect.insort(self.samples, latency_ms)
        else:  # keep a uniform sample of every latency seen
            index = random.randrange(self.calls)
            if index < MAX_SAMPLES:
                del self.samples[random.randrange(MAX_SAMPLES)]
                bisect.insort(self.samples, latency_ms)
        now = time.monotonic()
        self.recent.append((now, latency_ms))
        while self.recent and self.recent[0][0] < now - WINDOW_SECONDS:
            self.recent.popleft()

    def report(self, started: float, users: int, orders: int, final: bool = False) -> dict[str, Any]:
        window = sorted(latency for _, latency in self.recent)
        elapsed = max(1e-9, time.monotonic() - started)
        return {
            "final": final,
            "elapsed_s": round(elapsed, 2),
            "calls": self.calls,
            "failed": self.failed,
            "errors": dict(self.errors),
            "last_error": self.last_error,
            "by_operation": dict(self.by_operation),
            "p50_ms": percentile(self.samples, 0.50),
            "p99_ms": percentile(self.samples, 0.99),
            "window_calls_per_s": round(len(window) / WINDOW_SECONDS, 2),
            "window_p50_ms": percentile(window, 0.50),
            "window_p99_ms": percentile(window, 0.99),
            "users": users,
            "orders": orders,
        }


class Shopper:
    """Picks and runs one operation at a time; remembers the users and orders it created."""

    def __init__(self, mesh: grpcmesh.Mesh, stats: Stats, rng: random.Random) -> None:
        self.users_stub = user_pb2_grpc.UserServiceStub(mesh.channel("user-service"))
        self.orders_stub = order_pb2_grpc.OrderServiceStub(mesh.channel("order-service"))
        self.stats = stats
        self.rng = rng
        self.user_ids: list[str] = []
        self.order_ids: list[str] = []

    async def one(self) -> None:
        roll = self.rng.random()
        if not self.user_ids or roll < 0.3:
            await self._timed("CreateUser", self._create_user())
        elif roll < 0.8 or not self.order_ids:
            await self._timed("CreateOrder", self._create_order())
        else:
            await self._timed("GetOrder", self._get_order())

    async def _timed(self, operation: str, call: Any) -> None:
        started = time.perf_counter()
        error: grpc.aio.AioRpcError | None = None
        try:
            await call
        except grpc.aio.AioRpcError as exc:
            error = exc
        self.stats.record(operation, (time.perf_counter() - started) * 1000, error)

    async def _create_user(self) -> None:
        tag = uuid.uuid4().hex[:10]
        request = user_pb2.CreateUserRequest(
            name=f"Customer {tag[:4]}", email=f"customer-{tag}@shop.example", idempotency_key=f"traffic-{tag}"
        )
        reply = await retry_idempotent(lambda t: self.users_stub.CreateUser(request, timeout=t), CALL_TIMEOUT)
        self.user_ids.append(reply.user.id)
        if reply.initial_order_id:
            self.order_ids.append(reply.initial_order_id)

    async def _create_order(self) -> None:
        picks = self.rng.sample(CATALOG[:-1], k=self.rng.randint(1, 3))
        if self.rng.random() < 0.05:
            picks.append(CATALOG[-1])
        request = order_pb2.CreateOrderRequest(
            user_id=self.rng.choice(self.user_ids),
            items=[
                order_pb2.OrderItem(sku=sku, name=name, quantity=self.rng.randint(1, 3), unit_price_cents=price)
                for sku, name, price in picks
            ],
            currency="EUR",
            idempotency_key=f"traffic-{uuid.uuid4().hex}",
        )
        reply = await retry_idempotent(lambda t: self.orders_stub.CreateOrder(request, timeout=t), CALL_TIMEOUT)
        self.order_ids.append(reply.order_id)

    async def _get_order(self) -> None:
        request = order_pb2.GetOrderRequest(id=self.rng.choice(self.order_ids))
        await retry_idempotent(lambda t: self.orders_stub.GetOrder(request, timeout=t), CALL_TIMEOUT)


def _emit(report: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(report, separators=(",", ":")) + "\n")
    sys.stdout.flush()


async def run(config: Path, rate: float, concurrency: int, report_every: float, seed: int | None = None) -> Stats:
    """Generate traffic until SIGTERM/SIGINT; returns the final statistics."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    stats = Stats()
    started = time.monotonic()
    async with grpcmesh.Mesh.from_config(config) as mesh:
        shopper = Shopper(mesh, stats, random.Random(seed))
        slots = asyncio.Semaphore(concurrency)
        in_flight: set[asyncio.Task[None]] = set()

        async def guarded() -> None:
            try:
                await shopper.one()
            finally:
                slots.release()

        async def reporter() -> None:
            while True:
                await asyncio.sleep(report_every)
                _emit(stats.report(started, len(shopper.user_ids), len(shopper.order_ids)))

        reporting = asyncio.create_task(reporter())
        next_at = time.monotonic()
        while not stop.is_set():
            await slots.acquire()
            if stop.is_set():
                slots.release()
                break
            task = asyncio.create_task(guarded())
            in_flight.add(task)
            task.add_done_callback(in_flight.discard)
            next_at = max(next_at + 1.0 / rate, time.monotonic() - 1.0)  # never burst to catch up
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), max(0.0, next_at - time.monotonic()))
        if in_flight:
            await asyncio.wait(in_flight, timeout=CALL_TIMEOUT * 2)
        reporting.cancel()
        _emit(stats.report(started, len(shopper.user_ids), len(shopper.order_ids), final=True))
    return stats
