"""The server half of the middleware: every concern of one method run by ONE wrapper, built once.

grpc.aio server interceptors cost a coroutine layer and a continuation per interceptor per
call, and give no "call finished" hook. The mesh owns its servers, so it wraps each handler
once, when the method is added (:class:`ServerPipeline`), and runs its concerns inside that
one wrapper, in order:

1. each concern's ``observe(call)`` (tracing attaches the span, metrics count the start...),
   each returning what to call when the call has ended (``call.code`` then set);
2. each concern's gate, in order: ``check(call)`` (auth) is a plain function returning a
   refusal ``(code, details)`` or ``None`` (no coroutine per call), ``guard(call)`` is awaited
   and refuses with ``await call.context.abort(...)``; either way the handler does not run;
3. the handler; an unexpected exception from a guard or the handler goes to ``recover``
   (the mesh's recovery answers INTERNAL with a reference, see :mod:`.recovery`), so the
   observers see the status the caller gets;
4. the finish hooks, in reverse order.

A concern's ``applies(method)`` is asked once per method (auth exempts health and reflection).
The call context (``binds``: the deadline and allowlisted metadata the handler's own calls
inherit) is bound by the wrapper itself, first, and unbound last: one such concern per pipeline,
with no observer call or finish hook of its own. A call nothing needs the end of (no finish
hook) skips working out its status.
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

from grpcmesh._rpc import RpcType, split_method
from grpcmesh.context import IncomingCall, Propagation, bind_incoming, unbind_incoming
from grpcmesh.middleware.behavior import (
    Behavior,
    Context,
    Handler,
    HandlerCache,
    behavior_of,
    is_async,
    rejecting_handler,
    rpc_type_of,
    wrap_behavior,
)
from grpcmesh.middleware.observing import start_observers

log = logging.getLogger("grpcmesh.middleware")

_UNSET: Any = object()


class ServerCall:
    """One call as the server's concerns see it; ``code`` and ``duration`` are set just before the finish hooks run.

    A plain slotted class, made once per call: the service and method names come pre-split
    (once per method), and the metadata is read from the context only if a concern asks.
    ``trace_id`` is filled by tracing (32 hex digits) for the access log.
    """

    __slots__ = (
        "_metadata",
        "code",
        "context",
        "duration",
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
        self.duration = 0.0
        """Seconds from the call's start to its end (set with ``code``: finish hooks read one number)."""
        self.trace_id: str | None = None
        self.incoming: IncomingCall | None = None
        """The call context a mesh server bound for the handler (``None`` elsewhere): concerns keep
        per-call state for the handler's own calls on it rather than in context variables of their own."""
        self._metadata = metadata

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
        """The first value of metadata ``key`` as text.

        A scan of the few entries a call carries: concerns ask for one or two keys each, and
        building a dict of every entry (decoding each value) cost more than the scans it saved.
        """
        for item_key, value in self.metadata or ():
            if item_key == key:
                return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
        return None

    def peer(self) -> str:
        try:
            return str(self.context.peer())
        except Exception:  # a context wrapper that does not implement peer()
            return "unknown"


def server_status(context: Context, error: BaseException | None) -> grpc.StatusCode:
    """The status code the server sends for a handler that ended with ``error`` (or returned)."""
    try:
        set_code: Any = context.code()
    except Exception:  # a context wrapper that does not implement it
        set_code = None
    code = set_code if isinstance(set_code, grpc.StatusCode) else None
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

Refusal = tuple[grpc.StatusCode, str]
Check = Callable[[ServerCall], Refusal | None]
"""Asked before the handler runs, without a coroutine: the ``(code, details)`` to refuse the call with, or ``None``."""

Recover = Callable[[str, Context], Awaitable[None]]
"""Turns an unexpected exception (the current one) into an abort; always raises ``AbortError``."""


class ServerConcern:
    """One concern of the server pipeline, for the methods it applies to: an observer, and a gate
    (a ``check`` or a ``guard``), or the call context to bind (``binds``)."""

    __slots__ = ("applies", "binds", "check", "guard", "name", "observe")

    def __init__(
        self,
        name: str,
        *,
        observe: ServerObserver | None = None,
        guard: Guard | None = None,
        check: Check | None = None,
        applies: Callable[[str], bool] | None = None,
        binds: Propagation | None = None,
    ) -> None:
        if guard is not None and check is not None:
            raise ValueError(f"server concern {name!r}: give a check or a guard, not both")
        self.name = name
        self.observe = observe
        self.guard = guard
        self.check = check
        self.applies = applies
        self.binds = binds


_Gate = tuple[Callable[[ServerCall], Any], bool]
"""A check or a guard, and whether it is awaited (a guard)."""


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
        gates: list[_Gate] = []
        for concern in active:
            if concern.check is not None:
                gates.append((concern.check, False))
            elif concern.guard is not None:
                gates.append((concern.guard, True))
        binds = next((c.binds for c in active if c.binds is not None), None)
        recover = self.recover
        if not observers and not gates and binds is None and recover is None:
            return handler
        if not is_async(behavior_of(handler)):
            if gates:  # a sync handler cannot be guarded: refuse rather than let calls through
                return rejecting_handler(handler, grpc.StatusCode.INTERNAL, "guarded method has a sync handler")
            return handler
        rpc_type = rpc_type_of(handler)
        names = split_method(full_method)
        plan = _Plan(full_method, rpc_type, names, observers, tuple(gates), binds, recover)

        def around(behavior: Behavior, generator: bool) -> Behavior:
            return _around_generator(behavior, plan) if generator else _around_coroutine(behavior, plan)

        return wrap_behavior(handler, around)


class _Plan:
    """What one method's wrapper runs, worked out once when the method is added."""

    __slots__ = ("binds", "full_method", "gates", "names", "observers", "recover", "rpc_type")

    def __init__(
        self,
        full_method: str,
        rpc_type: RpcType,
        names: tuple[str, str],
        observers: tuple[ServerObserver, ...],
        gates: tuple[_Gate, ...],
        binds: Propagation | None,
        recover: Recover | None,
    ) -> None:
        self.full_method = full_method
        self.rpc_type = rpc_type
        self.names = names
        self.observers = observers
        self.gates = gates
        self.binds = binds
        self.recover = recover

    def start(self, context: Context) -> tuple[ServerCall, list[ServerFinish] | None, Any]:
        """The call, its observers' finish hooks, and the call-context token to unbind (or None)."""
        call = ServerCall(self.full_method, self.rpc_type, context, _UNSET, self.names)
        token = None
        binds = self.binds
        if binds is not None:
            incoming = call.incoming = binds.incoming(call.metadata, context.time_remaining())
            token = bind_incoming(incoming)
        observers = self.observers
        return call, start_observers(observers, call, "server") if observers else None, token

    def admit(self, call: ServerCall) -> Awaitable[None] | None:
        """Run the gates in order; what the wrapper must await (an async gate, or the abort of a
        refusal: it raises), or ``None`` once every gate passed without a coroutine (auth's check)."""
        for index, (gate, awaited) in enumerate(self.gates):
            if awaited:
                return self._admit_async(call, index)
            refusal = gate(call)
            if refusal is not None:
                return call.context.abort(*refusal)  # type: ignore[no-any-return]
        return None

    async def _admit_async(self, call: ServerCall, first: int) -> None:
        for gate, awaited in self.gates[first:]:
            if awaited:
                await gate(call)
            else:
                refusal = gate(call)
                if refusal is not None:
                    await call.context.abort(*refusal)

    async def failed(self, exc: Exception, context: Context) -> BaseException:
        """What to raise for an unexpected exception from a gate or the handler (after recovery)."""
        recover = self.recover
        if recover is None or isinstance(exc, grpc.aio.AbortError):
            return exc
        return await _recovered(recover, self.full_method, context)


def _finish(finishers: list[ServerFinish] | None, call: ServerCall, error: BaseException | None, token: Any) -> None:
    if finishers:  # nothing wants the end: the status is not worked out
        call.duration = time.perf_counter() - call.started
        call.error = error
        call.code = server_status(call.context, error)
        for finish in reversed(finishers):
            try:
                finish(call)
            except Exception:
                log.exception("server observer failed at the end of %s", call.full_method)
    if token is not None:
        unbind_incoming(token)


async def _recovered(recover: Recover, full_method: str, context: Context) -> BaseException:
    """The ``AbortError`` recovery raised for the exception being handled."""
    try:
        await recover(full_method, context)
    except BaseException as aborted:
        return aborted
    raise AssertionError("recover() must abort the call")


def _around_coroutine(behavior: Behavior, plan: _Plan) -> Behavior:
    gates = plan.gates

    async def run(request: Any, context: Context) -> Any:
        call, finishers, token = plan.start(context)
        error: BaseException | None = None
        try:
            if gates:
                pending = plan.admit(call)
                if pending is not None:
                    await pending
            return await behavior(request, context)
        except Exception as exc:
            error = await plan.failed(exc, context)
            if error is exc:
                raise
            raise error from None
        except BaseException as exc:
            error = exc
            raise
        finally:
            if finishers or token is not None:
                _finish(finishers, call, error, token)

    return run


def _around_generator(behavior: Behavior, plan: _Plan) -> Behavior:
    gates = plan.gates

    async def run(request: Any, context: Context) -> AsyncIterator[Any]:
        call, finishers, token = plan.start(context)
        error: BaseException | None = None
        try:
            if gates:
                pending = plan.admit(call)
                if pending is not None:
                    await pending
            async for response in behavior(request, context):
                yield response
        except Exception as exc:
            error = await plan.failed(exc, context)
            if error is exc:
                raise
            raise error from None
        except BaseException as exc:
            error = exc
            raise
        finally:
            if finishers or token is not None:
                _finish(finishers, call, error, token)

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
