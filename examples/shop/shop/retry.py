"""Retry of idempotent downstream calls when the instance serving them went away mid-call.

The mesh's channel already retries, on another instance, a call that could not be *sent*.
A call that was sent and then lost its instance (``kill -9`` under it) fails with
UNAVAILABLE; only the caller knows whether doing it again is safe. In the shop it always
is: downstream calls are reads or carry an idempotency key. So they are retried on
UNAVAILABLE (nothing else), within the caller's own deadline — except when the mesh says the
service has no SERVING instance at all (``grpcmesh.NoEndpointsError``): it answers that at
once, and waiting to ask again would only delay the caller (an optional dependency that is
down costs its callers nothing).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

import grpc

from grpcmesh import NoEndpointsError

T = TypeVar("T")

RETRYABLE = frozenset({grpc.StatusCode.UNAVAILABLE})
BACKOFF = 0.05


async def retry_idempotent(call: Callable[[float], Awaitable[T]], timeout: float, attempts: int = 3) -> T:
    """``await call(timeout_left)`` up to ``attempts`` times while it fails with UNAVAILABLE."""
    deadline = time.monotonic() + timeout
    for attempt in range(1, attempts + 1):
        try:
            return await call(max(0.01, deadline - time.monotonic()))
        except grpc.aio.AioRpcError as exc:
            if (
                exc.code() not in RETRYABLE
                or isinstance(exc, NoEndpointsError)
                or attempt == attempts
                or time.monotonic() + BACKOFF >= deadline
            ):
                raise
        await asyncio.sleep(BACKOFF * attempt)
    raise AssertionError("unreachable: the last attempt returns or raises")
