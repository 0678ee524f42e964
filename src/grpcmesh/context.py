"""What an incoming call hands on to the calls its handler makes: deadline and request context.

A mesh server binds the incoming call's deadline and an allowlist of its metadata
(``x-request-id`` and W3C ``baggage`` by default) to a :class:`contextvars.ContextVar` while
the handler runs. Mesh channels read it on every call, so a handler's own calls inherit
the caller's remaining time (less a small margin for the hop back) and its request id
without any extra argument. Tasks the handler spawns copy the context too; code that
starts background work which must outlive the call wraps the spawn in :func:`detached`.

Credentials are never carried over, even if a user adds them to the allowlist: each hop
authenticates as itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
import logging
import math
import random
import time
from collections.abc import Callable, Coroutine, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from grpcmesh.errors import ConfigError

log = logging.getLogger("grpcmesh.context")

__all__ = [
    "DEFAULT_DEADLINE_MARGIN",
    "DEFAULT_PROPAGATED_KEYS",
    "NEVER_PROPAGATED",
    "REQUEST_ID_HEADER",
    "IncomingCall",
    "Outgoing",
    "Propagation",
    "carried_traceparent",
    "current",
    "current_request_id",
    "detached",
    "spawn_detached",
]

REQUEST_ID_HEADER = "x-request-id"
TIMEOUT_HEADER = "x-mesh-timeout-ms"
"""The timeout a mesh channel gave a call, so the server can tell how long it queued (load shedding):
the ``grpc-timeout`` grpc sends for it, which the server's ``time_remaining()`` counts down from."""
DEFAULT_PROPAGATED_KEYS: tuple[str, ...] = (REQUEST_ID_HEADER, "baggage")
DEFAULT_DEADLINE_MARGIN = 0.01
"""Seconds kept back from an inherited deadline, so the reply can travel back before the caller gives up."""

NEVER_PROPAGATED = frozenset(
    {
        "authorization",
        "proxy-authorization",
        "cookie",
        "x-service-key",
        "service-auth-key",
        "x-mesh-caller",
        "x-mesh-caller-token",
        "x-mesh-auth",
        "x-api-key",
        "x-mesh-timeout-ms",
    }
)
"""Keys that identify, authenticate or time one hop; forwarding them would let a callee act as
its caller (or misreport how long a call queued)."""

MAX_PROPAGATED_VALUE = 8192
"""Longer values are not forwarded (a hostile caller must not make every downstream header huge)."""

Metadata = tuple[tuple[str, str | bytes], ...]
_T = TypeVar("_T")


def _is_secret(key: str) -> bool:
    return key in NEVER_PROPAGATED or key.startswith(("grpc-", ":")) or "token" in key or "secret" in key


class IncomingCall:
    """The part of an incoming call its handler's outgoing calls inherit.

    A request id the caller did not send is generated on first use of :attr:`metadata` (or
    :attr:`request_id`), not per call: most handlers never forward or log it, and a
    ``uuid4`` per call was the largest part of binding the call context.
    """

    __slots__ = ("_generate_id", "_metadata", "deadline", "traceparent")

    def __init__(self, deadline: float | None, metadata: Metadata, *, generate_request_id: bool = False) -> None:
        self.deadline = deadline
        """``time.monotonic()`` instant the caller gives up, or None without a deadline."""
        self._metadata = metadata
        self._generate_id = generate_request_id
        self.traceparent: str | None = None
        """The "not sampled" ``traceparent`` the call continues, set by tracing (see :func:`carried_traceparent`)."""

    @property
    def metadata(self) -> Metadata:
        """Allowlisted metadata to forward, in the caller's order (a generated request id last)."""
        if self._generate_id:
            self._generate_id = False
            self._metadata = (*self._metadata, (REQUEST_ID_HEADER, new_request_id()))
        return self._metadata

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, IncomingCall):
            return NotImplemented
        return (self.deadline, self.metadata) == (other.deadline, other.metadata)

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"IncomingCall(deadline={self.deadline!r}, metadata={self.metadata!r})"

    def time_remaining(self) -> float | None:
        return None if self.deadline is None else self.deadline - time.monotonic()

    @property
    def request_id(self) -> str | None:
        for key, value in self.metadata:
            if key == REQUEST_ID_HEADER:
                return value if isinstance(value, str) else value.decode("utf-8", "replace")
        return None


_UUID4_CLEAR = ~((0xF000 << 64) | (0xC000 << 48))
_UUID4_SET = (0x4000 << 64) | (0x8000 << 48)


def new_request_id() -> str:
    """A random version-4 UUID as 32 hex digits (what ``uuid.uuid4().hex`` gives).

    Drawn from ``random`` rather than ``os.urandom``: a request id correlates log lines and
    spans, it guards nothing, and a system call per generated id showed up on the hot path.
    """
    return f"{(random.getrandbits(128) & _UUID4_CLEAR) | _UUID4_SET:032x}"


_incoming: contextvars.ContextVar[IncomingCall | None] = contextvars.ContextVar("grpcmesh_incoming_call", default=None)

carried: contextvars.ContextVar[str | None] = contextvars.ContextVar("grpcmesh_unsampled_trace", default=None)
"""An unsampled ``traceparent`` carried on where no :class:`IncomingCall` holds it (plain grpc.aio servers
running the tracing interceptor, and :func:`detached` blocks)."""


bind_incoming: Callable[[IncomingCall | None], contextvars.Token[IncomingCall | None]] = _incoming.set
"""Bind an incoming call in the current context (the handler's task); undo with :func:`unbind_incoming`.
(The context variable's own methods: a mesh server does this on every call.)"""
unbind_incoming: Callable[[contextvars.Token[IncomingCall | None]], None] = _incoming.reset


def carried_traceparent() -> str | None:
    """The unsampled ``traceparent`` the running code continues, if any.

    A mesh server keeps it on the incoming call it already binds, so tracing sets no context
    variable of its own per call.
    """
    call = _incoming.get()
    if call is not None:
        found = call.traceparent
        if found is not None:
            return found
    return carried.get()


def current() -> IncomingCall | None:
    """The incoming call the running code serves, or None (outside a handler, or detached)."""
    return _incoming.get()


def current_request_id() -> str | None:
    """The request id of the incoming call the running code serves (for logs and spans)."""
    call = _incoming.get()
    return None if call is None else call.request_id


@contextlib.contextmanager
def detached() -> Iterator[None]:
    """Within this block, and in tasks created in it, calls inherit no deadline or request context.

    ``with grpcmesh.context.detached(): asyncio.create_task(refresh_cache())`` starts work
    that may outlive the call without being cut short by the caller's deadline.
    """
    call = _incoming.get()
    token = _incoming.set(None)
    # The trace goes on (as a sampled span stays current): only the deadline and metadata are cut.
    traced = carried.set(call.traceparent) if call is not None and call.traceparent is not None else None
    try:
        yield
    finally:
        if traced is not None:
            carried.reset(traced)
        _incoming.reset(token)


def spawn_detached(coro: Coroutine[Any, Any, _T]) -> asyncio.Task[_T]:
    """``asyncio.create_task(coro)`` in a context without the incoming call (see :func:`detached`)."""
    with detached():
        return asyncio.get_running_loop().create_task(coro)


@dataclass(frozen=True, slots=True)
class Outgoing:
    """What an outgoing call should use: a timeout (None for none) and extra metadata to append."""

    timeout: float | None
    inherited: bool
    """True when ``timeout`` came from the incoming call's deadline rather than the caller's own."""
    metadata: Metadata


_NOTHING_TO_ADD = Outgoing(None, False, ())


class Propagation:
    """One mesh's propagation settings: which keys to forward, the margin, request-id generation."""

    __slots__ = ("_keys", "generate_request_id", "margin")

    def __init__(
        self,
        keys: Iterable[str] = DEFAULT_PROPAGATED_KEYS,
        *,
        margin: float = DEFAULT_DEADLINE_MARGIN,
        generate_request_id: bool = True,
    ) -> None:
        if margin < 0:
            raise ConfigError(f"deadline_margin: {margin!r} must be >= 0 seconds")
        chosen: list[str] = []
        for key in keys:
            if not isinstance(key, str) or not key.strip():
                raise ConfigError(f"context_propagation: {key!r} must be a metadata key such as 'x-tenant'")
            low = key.strip().lower()
            if _is_secret(low):
                log.warning("context_propagation: %r belongs to one hop and is never propagated; ignoring it", low)
            elif low not in chosen:
                chosen.append(low)
        self._keys = frozenset(chosen)
        self.margin = margin
        self.generate_request_id = generate_request_id

    @property
    def keys(self) -> frozenset[str]:
        return self._keys

    # -- server side --------------------------------------------------------------------

    def incoming(self, metadata: Sequence[tuple[str, Any]] | None, time_remaining: float | None) -> IncomingCall:
        """The :class:`IncomingCall` for a call with ``metadata`` and ``time_remaining`` seconds left."""
        kept: list[tuple[str, str | bytes]] = []
        has_id = False
        for key, value in metadata or ():
            if key in self._keys and isinstance(value, (str, bytes)) and len(value) <= MAX_PROPAGATED_VALUE:
                if key == REQUEST_ID_HEADER:
                    if has_id:
                        continue
                    has_id = True
                kept.append((key, value))
        generate = not has_id and self.generate_request_id and REQUEST_ID_HEADER in self._keys
        deadline = None if time_remaining is None else time.monotonic() + time_remaining
        return IncomingCall(deadline, tuple(kept), generate_request_id=generate)

    @contextlib.contextmanager
    def serving(self, call: IncomingCall) -> Iterator[IncomingCall]:
        """Bind ``call`` for the handler's duration."""
        token = bind_incoming(call)
        try:
            yield call
        finally:
            unbind_incoming(token)

    # -- client side --------------------------------------------------------------------

    def outgoing(self, timeout: float | None, metadata: Any) -> Outgoing:
        """Timeout and metadata for a call made now with the caller's ``timeout`` and ``metadata``.

        The inherited budget is the incoming call's remaining time less the margin; the call
        gets whichever of it and ``timeout`` is shorter. A result with ``timeout <= 0``
        means the budget is spent: the caller must fail the call without sending it.
        """
        call = _incoming.get()
        if call is None:
            return _NOTHING_TO_ADD if timeout is None else Outgoing(timeout, False, ())
        inherited = False
        if call.deadline is not None:
            budget = call.deadline - time.monotonic() - self.margin
            if timeout is None or budget < timeout:
                timeout, inherited = budget, True
        if not call.metadata:
            return Outgoing(timeout, inherited, ())
        present = {key.lower() for key, _ in metadata or ()}
        extra = tuple((key, value) for key, value in call.metadata if key not in present)
        return Outgoing(timeout, inherited, extra)


def merged_metadata(metadata: Any, extra: Metadata) -> Any:
    """``metadata`` with ``extra`` appended (a new tuple; the caller's object is not changed)."""
    if not extra:
        return metadata
    return (*tuple(metadata or ()), *extra)


_ENCODING_SLACK_MS = (3, 2)
"""How far below and above the timeout a client hands grpc its ``grpc-timeout`` may be reckoned
(grpc works in whole milliseconds, rounding the deadline up and the clock down, and the header
is written a little after the call is made)."""
_MAX_SHORTENING_MS = 15


def _grpc_encoded_ms(millis: int) -> int:
    """The ``grpc-timeout`` grpc core (1.x) sends for a timeout of ``millis`` < 1000 s: exact
    milliseconds below 1 s, then rounded *up* to three significant digits (10 ms units to 10 s,
    100 ms to 100 s, whole seconds beyond)."""
    if millis < 1000:
        return millis
    unit = 10 if millis < 10_000 else 100 if millis < 100_000 else 1000
    return -(-millis // unit) * unit


@functools.lru_cache(maxsize=256)  # a pure function, called per call; most calls repeat a configured timeout
def encodable_timeout(timeout: float) -> tuple[float, int]:
    """(timeout to give grpc, the ``grpc-timeout`` in ms it will send): at most 15 ms shorter
    than ``timeout`` (0 to 5 ms in practice), so that the server's deadline starts exactly that many ms
    after the call reached it.

    grpc rounds a timeout of 1 s or more up to 10 ms units (100 ms from 10 s), so for a plain
    ``timeout=1.0`` the server's deadline ended up to 10 ms later than the client's: a server
    reading its queueing delay as ``x-mesh-timeout-ms - time_remaining()`` saw 10 ms less than
    the call had waited (load shedding then let calls queue 10 ms past its target). Here the
    timeout is lowered just enough that every value grpc may reckon encodes the same way, and
    that value is what the header carries. Below 1 s grpc sends milliseconds: the timeout is
    kept (the header then is within a few ms). From 1000 s on, the timeout is kept and the
    header is only approximate.
    """
    requested = timeout * 1000
    below, above = _ENCODING_SLACK_MS
    if requested >= 1_000_000 or requested < 1000 - above:
        return timeout, max(1, round(requested))
    whole = math.floor(requested)
    for candidate in (requested, *range(whole, whole - _MAX_SHORTENING_MS, -1)):
        low, high = math.floor(candidate) - below, math.ceil(candidate) + above
        if high <= 1000:  # milliseconds, sent as they are
            return candidate / 1000, round(candidate)
        encoded = _grpc_encoded_ms(high)
        if low >= 1000 and _grpc_encoded_ms(low) == encoded:
            return candidate / 1000, encoded
    return timeout, round(requested)  # not reached for these units; the header as it used to be
