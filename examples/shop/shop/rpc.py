"""Small helpers the servicers share for turning bad input into clear gRPC errors."""

from __future__ import annotations

import re
from typing import NoReturn

import grpc

EMAIL_RE = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
CURRENCY_RE = re.compile(r"^[A-Z]{3}$")


async def reject(context: grpc.aio.ServicerContext[object, object], field: str, problem: str) -> NoReturn:
    """Abort the call with INVALID_ARGUMENT naming the field and what to do."""
    await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"{field}: {problem}")
    raise AssertionError("unreachable: abort raises")


async def not_found(context: grpc.aio.ServicerContext[object, object], what: str, key: str) -> NoReturn:
    """Abort the call with NOT_FOUND for ``what`` ``key``."""
    await context.abort(grpc.StatusCode.NOT_FOUND, f"{what} {key!r} does not exist")
    raise AssertionError("unreachable: abort raises")


def check_email(email: str) -> str | None:
    """Why ``email`` is not acceptable, or ``None``."""
    if not EMAIL_RE.match(email) or len(email) > 254:
        return f"{email!r} is not an email address; write e.g. ada@example.com"
    return None


def check_name(name: str) -> str | None:
    """Why ``name`` is not acceptable, or ``None``."""
    if not name.strip() or len(name) > 100:
        return "must be 1 to 100 characters"
    return None


def budget(context: grpc.aio.ServicerContext[object, object], cap: float) -> float:
    """Timeout for a downstream call: ``cap`` seconds, but never past the caller's own deadline."""
    remaining = context.time_remaining()
    if remaining is None:
        return cap
    return max(0.01, min(cap, remaining - 0.02))
