"""The server half of the middleware: every concern of one method run by ONE wrapper, built once.

grpc.aio server interceptors cost a coroutine layer and a continuation per interceptor per
call, and give no "call finished" hook. The mesh owns its servers, so it wraps each handler
once, when the method is added (:class:`ServerPipeline`), and runs its concerns inside that
one wrapper, in order:

1. each concern's ``observe(call)`` (tracing attaches the span, metrics count the start...),
   each returning what to call when the call has ended (``call.code`` then set);
2. each concern's ``guard(call)`` (auth, admission): awaited before the handler, it refuses
   a call with ``await call.context.abort(...)``;
3. the handler; an unexpected exception from a guard or the handler goes to ``recover``
   (the mesh's recovery answers INTERNAL with a reference, see :mod:`.recovery`), so the
   observers see the status the caller gets;
4. the finish hooks, in reverse order.

A concern's ``applies(method)`` is asked once per method (auth exempts health and reflection).
Observers and guards run in the handler's own task, so a concern can set context variables the
handler (and the calls it makes) will see, e.g. the incoming deadline or request metadata, and
reset them in its finish hook (tracing carries an unsampled trace this way); a guard is where
admission (load shedding) refuses a call before the handler runs.
A failing observer is logged and skipped: it never fails the call. For code that is not a
``MeshServer``, :class:`ServerObservingInterceptor` runs the same pipeline as one grpc.aio
interceptor.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any

import grpc

from grpcmesh._rpc import RpcType
from grpcmesh.context import IncomingCall
from grpcmesh.middleware.behavior import (
    Behavior,
    Context,
    Handler,
    HandlerCache,
    behavior_of,
    is_async,
    rejecting_handler,
    rpc_type_of,
    split_method,
    wrap_behavior,
)
from grpcmesh.middleware.observing import start_observers

log = logging.getLogger("grpcmesh.middleware")

_UNSET: Any = object()


class ServerCall:
    """One call as the server's concerns see it; ``code`` is set just before the finish hooks run.

    A plain slotted class, made once per call: the service and method names come pre-split
    (once per method), and the metadata is read from the context only if a concern asks.
    ``trace_id`` is filled by tracing (32 hex digits) for the access log.
    """

    __slots__ = (
        "_headers",
        "_metadata",
        "code",
        "context",
        "error",
        "full_method",
        "incoming",
        "method",
        "rpc_type",
        "service",
        "started",
        "trace_id",
    )

    def __init__(
        self,
        full_method: str,
        rpc_type: RpcType,
        context: Context,
        metadata: Any = _UNSET,
        names: tuple[str, str] | None = None,
    ) -> None:
        self.full_method = full_method
        self.rpc_type = rpc_type
        self.context = context
        self.service, self.method = names if names is not None else split_method(full_method)
        self.started = time.perf_counter()
        self.code: grpc.StatusCode | None = None
        self.error: BaseException | None = None
        self.trace_id: str | None = None
        self.incoming: IncomingCall | None = None
        """The call context a mesh server bound for the handler (``None`` elsewhere): concerns keep
        per-call state for the handler's own calls on it rather than in context variables of their own."""
        self._metadata = metadata
        self._headers: dict[str, str] | None = None

    @property
    def metadata(self) -> Any:
        """The call's invocation metadata (what ``HandlerCallDetails.invocation_metadata`` holds)."""
        if self._metadata is _UNSET:
            try:
                self._metadata = self.context.invocation_metadata()
            except Exception:  # a context wrapper that does not implement it
                self._metadata = None
        return self._metadata

    def header(self, key: str) -> str | None:
        """The first value of metadata ``key`` as text (read once per call for every concern)."""
        headers = self._headers
        if headers is None:
            headers = {}
            for item_key, value in self.metadata or ():
                if item_key not in headers:
                    headers[item_key] = value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
            self._headers = headers
        return headers.get(key)

    @property
    def duration(self) -> float:
        return time.perf_counter() - self.started

    def peer(self) -> str:
        try:
            return str(self.context.peer())
        except Exception:  # a context wrapper that does not implement peer()
            return "unknown"

    def settle(self, error: BaseException | None) -> None:
        self.error = error
        self.code = server_status(self.context, error)


def server_status(context: Context, error: BaseException | None) -> grpc.StatusCode:
    """The status code the server sends for a handler that ended with ``error`` (or returned)."""
    code = _context_code(context)
    if error is None:
        return code or grpc.StatusCode.OK
    if isinstance(error, asyncio.CancelledError | GeneratorExit):
        remaining = context.time_remaining()
        if remaining is not None and remaining <= 0:
            return grpc.StatusCode.DEADLINE_EXCEEDED
        return grpc.StatusCode.CANCELLED
    if code is not None and code is not grpc.StatusCode.OK:
        return code  # an abort, or a handler that set a code and then raised
    return grpc.StatusCode.UNKNOWN  # what grpc.aio sends for an unexpected exception


def _context_code(context: Context) -> grpc.StatusCode | None:
    try:
        code = context.code()
    except Exception:
        return None
    return code if isinstance(code, grpc.StatusCode) else None


SERVER_ERROR_CODES = frozenset(
    {
        grpc.StatusCode.UNKNOWN,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.UNIMPLEMENTED,
        grpc.StatusCode.INTERNAL,
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DATA_LOSS,
    }
)
"""Codes that are the *server's* fault (OpenTelemetry semantic conventions): error spans, error log lines."""

ServerFinish = Callable[[ServerCall], None]
ServerObserver = Callable[[ServerCall], ServerFinish | None]
"""Called as a call starts; returns what to call once it has ended (``call.code`` set), or ``None``."""

Guard = Callable[[ServerCall], Awaitable[None]]
"""Awaited before the handler runs; refuses the call with ``await call.context.abort(...)``."""

Recover = Callable[[str, Context], Awaitable[None]]
"""Turns an unexpected exception (the current one) into an abort; always raises ``AbortError``."""


class ServerConcern:
    """One concern of the server pipeline: an observer, a guard, or both, for the methods it applies to."""

    __slots__ = ("applies", "guard", "name", "observe")

    def __init__(
        self,
        name: str,
        *,
        observe: ServerObserver | None = None,
        guard: Guard | None = None,
        applies: Callable[[str], bool] | None = None,
    ) -> None:
        self.name = name
        self.observe = observe
        self.guard = guard
        self.applies = applies


class ServerPipeline:
    """The ordered server concerns (and optional recovery) one wrapper per method runs."""

    def __init__(self, concerns: Sequence[ServerConcern] = (), recover: Recover | None = None) -> None:
        self.concerns = tuple(concerns)
        self.recover = recover

    def __bool__(self) -> bool:
        return bool(self.concerns) or self.recover is not None

    def wrap(self, handler: Handler, full_method: str) -> Handler:
        """``handler`` with this pipeline around it (built once per method; reused for every call)."""
        if handler is None:
            return None
        active = [c for c in self.concerns if c.applies is None or c.applies(full_method)]
        observers = tuple(c.observe for c in active if c.observe is not None)
        guards = tuple(c.guard for c in active if c.guard is not None)
        recover = self.recover
        if not observers and not guards and recover is None:
            return handler
        if not is_async(behavior_of(handler)):
            if guards:  # a sync handler cannot be guarded: refuse rather than let calls through
                return rejecting_handler(handler, grpc.StatusCode.INTERNAL, "guarded method has a sync handler")
            return handler
        rpc_type = rpc_type_of(handler)
        names = split_method(full_method)

        def around(behavior: Behavior, generator: bool) -> Behavior:
            make = _around_generator if generator else _around_coroutine
            return make(behavior, full_method, rpc_type, names, observers, guards, recover)

        return wrap_behavior(handler, around)


def _finish(finishers: list[ServerFinish], call: ServerCall, error: BaseException | None) -> None:
    call.settle(error)
    for finish in reversed(finishers):
        try:
            finish(call)
        except Exception:
            log.exception("server observer failed at the end of %s", call.full_method)


async def _recovered(recover: Recover, full_method: str, context: Context) -> BaseException:
    """The ``AbortError`` recovery raised for the exception being handled."""
    try:
        await recover(full_method, context)
    except BaseException as aborted:
        return aborted
    raise AssertionError("recover() must abort the call")


def _around_coroutine(
    behavior: Behavior,
    full_method: str,
    rpc_type: RpcType,
    names: tuple[str, str],
    observers: tuple[ServerObserver, ...],
    guards: tuple[Guard, ...],
    recover: Recover | None,
) -> Behavior:
    async def run(request: Any, context: Context) -> Any:
        call = ServerCall(full_method, rpc_type, context, _UNSET, names)
        finishers = start_observers(observers, call, "server") if observers else None
        error: BaseException | None = None
        try:
            for guard in guards:
                await guard(call)
            return await behavior(request, context)
        except Exception as exc:
            error = exc
            if recover is None or isinstance(exc, grpc.aio.AbortError):
                raise
            error = await _recovered(recover, full_method, context)
            raise error from None
        except BaseException as exc:
            error = exc
            raise
        finally:
            if finishers is not None:
                _finish(finishers, call, error)

    return run


def _around_generator(
    behavior: Behavior,
    full_method: str,
    rpc_type: RpcType,
    names: tuple[str, str],
    observers: tuple[ServerObserver, ...],
    guards: tuple[Guard, ...],
    recover: Recover | None,
) -> Behavior:
    async def run(request: Any, context: Context) -> AsyncIterator[Any]:
        call = ServerCall(full_method, rpc_type, context, _UNSET, names)
        finishers = start_observers(observers, call, "server") if observers else None
        error: BaseException | None = None
        try:
            for guard in guards:
                await guard(call)
            async for response in behavior(request, context):
                yield response
        except Exception as exc:
            error = exc
            if recover is None or isinstance(exc, grpc.aio.AbortError):
                raise
            error = await _recovered(recover, full_method, context)
            raise error from None
        except BaseException as exc:
            error = exc
            raise
        finally:
            if finishers is not None:
                _finish(finishers, call, error)

    return run


class ServerObservingInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[type-arg]
    """A pipeline as one ``grpc.aio.ServerInterceptor``, for servers the mesh does not own."""

    def __init__(self, pipeline: ServerPipeline) -> None:
        self.pipeline = pipeline
        self._handlers = HandlerCache()

    async def intercept_service(
        self, continuation: Callable[[Any], Awaitable[Any]], handler_call_details: grpc.HandlerCallDetails
    ) -> Any:
        handler = await continuation(handler_call_details)
        if handler is None:
            return handler
        method = handler_call_details.method
        return self._handlers.get(method, handler, lambda: self.pipeline.wrap(handler, method))
