"""The shared core of every observing interceptor: wrap a call of any of the four RPC kinds
and learn its final status code, on the server and on the client.

grpc.aio gives interceptors no "call finished" hook, and the status code of a call is spread
over return values, ``context.code()``, ``AbortError``, cancellation and deadlines. This module
works that out once, so the metrics, tracing and logging interceptors each only say what to do
at the start and at the end of a call.
"""

from __future__ import annotations

import asyncio
import enum
import inspect
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import AbstractContextManager
from typing import Any, TypeAlias

import grpc

# grpc-stubs types the aio context/handlers loosely; the core works on ``Any`` at the seams.
Context = Any
Behavior = Callable[..., Any]


class RpcType(enum.StrEnum):
    """The four RPC kinds, spelled as the de-facto ``grpc_type`` Prometheus label."""

    UNARY = "unary"
    CLIENT_STREAM = "client_stream"
    SERVER_STREAM = "server_stream"
    BIDI_STREAM = "bidi_stream"

    @classmethod
    def of(cls, request_streaming: bool, response_streaming: bool) -> RpcType:
        if request_streaming:
            return cls.BIDI_STREAM if response_streaming else cls.CLIENT_STREAM
        return cls.SERVER_STREAM if response_streaming else cls.UNARY


def split_method(full_method: str | bytes) -> tuple[str, str]:
    """``/pkg.Service/Method`` → (``pkg.Service``, ``Method``); unknown shapes keep the whole name."""
    found = _SPLIT_CACHE.get(full_method)
    if found is None:
        text = full_method.decode() if isinstance(full_method, bytes) else full_method
        service, _, method = text.lstrip("/").rpartition("/")
        found = (service, method) if service else ("unknown", text)
        if len(_SPLIT_CACHE) < MAX_CACHED_METHODS:
            _SPLIT_CACHE[full_method] = found
    return found


MAX_CACHED_METHODS = 4096
"""Per-method caches (split names, wrapped handlers, metric children) stop growing at this size,
so a server behind a catch-all generic handler cannot grow them without bound."""

_SPLIT_CACHE: dict[str | bytes, tuple[str, str]] = {}


_UNSET: Any = object()


def metadata_value(metadata: Any, key: str) -> str | None:
    """The first value of ``key`` in invocation metadata (tuples or ``grpc.aio.Metadata``), as text."""
    if not metadata:
        return None
    for item_key, value in metadata:
        if item_key == key:
            return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
    return None


class ServerCall:
    """One call as a server interceptor sees it; ``code`` is set just before observers finish.

    A plain slotted class, not a dataclass: one is made per call per interceptor, so its
    construction is on the hot path. The service and method names come pre-split (once per
    method), and the metadata is read from the context only if an observer asks for it.
    """

    __slots__ = ("_metadata", "code", "context", "error", "full_method", "method", "rpc_type", "service", "started")

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
    if isinstance(error, asyncio.CancelledError):
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


ServerObserver = Callable[[ServerCall], AbstractContextManager[None]]
"""Given a starting call, a context manager that is exited when the call ends (``call.code`` set)."""


def observe_handler(handler: Any, full_method: str, observer: ServerObserver) -> Any:
    """``handler`` with its behavior run inside ``observer``; sync (thread-pool) handlers pass through.

    Streaming responses work in both grpc.aio styles: async generators and ``context.write``.
    The result serves every call of ``full_method`` (the per-call metadata is read from the
    context), so interceptors build it once per method: see :class:`HandlerCache`.
    """
    if handler is None:
        return None
    rpc_type = RpcType.of(handler.request_streaming, handler.response_streaming)
    behavior = _behavior(handler)
    if not _is_async(behavior):
        return handler
    names = split_method(full_method)

    if not handler.response_streaming:

        async def unary_response(request: Any, context: Context) -> Any:
            call = ServerCall(full_method, rpc_type, context, _UNSET, names)
            with observer(call):
                try:
                    response = await behavior(request, context)
                except BaseException as error:
                    call.settle(error)
                    raise
                call.settle(None)
                return response

        return replace_behavior(handler, unary_response)

    if inspect.iscoroutinefunction(behavior):

        async def writer_response(request: Any, context: Context) -> None:
            call = ServerCall(full_method, rpc_type, context, _UNSET, names)
            with observer(call):
                try:
                    await behavior(request, context)
                except BaseException as error:
                    call.settle(error)
                    raise
                call.settle(None)

        return replace_behavior(handler, writer_response)

    async def streamed_response(request: Any, context: Context) -> AsyncIterator[Any]:
        call = ServerCall(full_method, rpc_type, context, _UNSET, names)
        with observer(call):
            try:
                async for response in behavior(request, context):
                    yield response
            except BaseException as error:
                call.settle(error)
                raise
            call.settle(None)

    return replace_behavior(handler, streamed_response)


class HandlerCache:
    """Wrapped handlers by method name, built once instead of on every call.

    An entry is used only while the inner handler is the very same object it was built from
    (grpc's generic handlers, and every interceptor here, return one handler per method), so
    a handler that changes is re-wrapped. Unknown methods are never cached (their handler is
    ``None``), and the cache stops growing at ``MAX_CACHED_METHODS``.
    """

    __slots__ = ("_entries",)

    def __init__(self) -> None:
        self._entries: dict[str, tuple[Any, Any]] = {}

    def get(self, method: str, handler: Any, build: Callable[[], Any]) -> Any:
        entry = self._entries.get(method)
        if entry is not None and entry[0] is handler:
            return entry[1]
        wrapped = build()
        if len(self._entries) < MAX_CACHED_METHODS or method in self._entries:
            self._entries[method] = (handler, wrapped)
        return wrapped


def _behavior(handler: Any) -> Behavior:
    if handler.request_streaming:
        return handler.stream_stream if handler.response_streaming else handler.stream_unary  # type: ignore[no-any-return]
    return handler.unary_stream if handler.response_streaming else handler.unary_unary  # type: ignore[no-any-return]


def _is_async(behavior: Behavior) -> bool:
    return inspect.iscoroutinefunction(behavior) or inspect.isasyncgenfunction(behavior)


_FACTORIES = {
    RpcType.UNARY: grpc.unary_unary_rpc_method_handler,
    RpcType.SERVER_STREAM: grpc.unary_stream_rpc_method_handler,
    RpcType.CLIENT_STREAM: grpc.stream_unary_rpc_method_handler,
    RpcType.BIDI_STREAM: grpc.stream_stream_rpc_method_handler,
}


def replace_behavior(handler: Any, behavior: Behavior) -> Any:
    """A handler of the same kind and (de)serializers as ``handler`` that runs ``behavior``."""
    factory = _FACTORIES[RpcType.of(handler.request_streaming, handler.response_streaming)]
    return factory(behavior, handler.request_deserializer, handler.response_serializer)


Guard = Callable[[Context], Awaitable[None]]
"""Awaited before the handler runs; aborts the call (``await context.abort(...)``) to refuse it."""


def guard_handler(handler: Any, guard: Guard) -> Any:
    """``handler`` with ``guard`` awaited first, in the handler's own task (so context variables
    it sets are visible to the handler). Sync (thread-pool) handlers are refused outright."""
    if handler is None:
        return None
    behavior = _behavior(handler)
    if not _is_async(behavior):
        return rejecting_handler(handler, grpc.StatusCode.INTERNAL, "guarded method has a sync handler")
    if not handler.response_streaming:

        async def unary_response(request: Any, context: Context) -> Any:
            await guard(context)
            return await behavior(request, context)

        return replace_behavior(handler, unary_response)
    if inspect.iscoroutinefunction(behavior):

        async def writer_response(request: Any, context: Context) -> None:
            await guard(context)
            await behavior(request, context)

        return replace_behavior(handler, writer_response)

    async def streamed_response(request: Any, context: Context) -> AsyncIterator[Any]:
        await guard(context)
        async for response in behavior(request, context):
            yield response

    return replace_behavior(handler, streamed_response)


def rejecting_handler(handler: Any, code: grpc.StatusCode, details: str) -> Any:
    """A handler of the same kind as ``handler`` that fails every call with ``code``."""

    async def reject(request: Any, context: Context) -> None:
        await context.abort(code, details)

    return replace_behavior(handler, reject)


# --------------------------------------------------------------------------------------- client


class ClientCall:
    """One outgoing call as a client interceptor sees it; observers may add ``metadata``."""

    __slots__ = ("code", "error", "full_method", "metadata", "method", "rpc_type", "service", "started", "target")

    def __init__(self, full_method: str, rpc_type: RpcType, metadata: grpc.aio.Metadata, target: str | None) -> None:
        self.full_method = full_method
        self.rpc_type = rpc_type
        self.metadata = metadata
        self.target = target
        self.service, self.method = split_method(full_method)
        self.started = time.perf_counter()
        self.code: grpc.StatusCode | None = None
        self.error: BaseException | None = None

    @property
    def duration(self) -> float:
        return time.perf_counter() - self.started


ClientFinish = Callable[[ClientCall], None]
ClientObserver = Callable[[ClientCall], ClientFinish]
"""Called when a call starts (may add metadata); returns what to call once its code is known."""


def _error_code(error: BaseException) -> grpc.StatusCode:
    if isinstance(error, grpc.RpcError):
        code = error.code()
        if isinstance(code, grpc.StatusCode):
            return code
    if isinstance(error, asyncio.CancelledError):
        return grpc.StatusCode.CANCELLED
    return grpc.StatusCode.UNKNOWN


class _OwnedMetadata(grpc.aio.Metadata):
    """Metadata an interceptor here copied from the caller's: later interceptors of ours may add to
    it in place instead of copying it again (the caller's own object is never modified)."""


class _ClientCallObserver:
    """Runs one ``ClientObserver`` around a call of any kind; the four interceptor classes share it."""

    def __init__(self, observer: ClientObserver, target: str | None) -> None:
        self._observer = observer
        self._target = target
        self._pending: set[asyncio.Task[None]] = set()

    def begin(self, details: grpc.aio.ClientCallDetails, rpc_type: RpcType) -> tuple[ClientCall, ClientFinish, Any]:
        method = details.method.decode() if isinstance(details.method, bytes) else details.method
        given = details.metadata
        if isinstance(given, _OwnedMetadata):
            # An outer interceptor of ours already copied the caller's metadata: share its copy.
            metadata: grpc.aio.Metadata = given
            new_details = details
        else:
            metadata = _OwnedMetadata(*tuple(given or ()))
            new_details = grpc.aio.ClientCallDetails(
                details.method, details.timeout, metadata, details.credentials, details.wait_for_ready
            )
        call = ClientCall(method, rpc_type, metadata, self._target)
        finish = self._observer(call)
        return call, finish, new_details

    @staticmethod
    def end(call: ClientCall, finish: ClientFinish, code: grpc.StatusCode, error: BaseException | None) -> None:
        call.code = code
        call.error = error
        finish(call)

    async def unary_unary(self, continuation: Callable[..., Awaitable[Any]], details: Any, request: Any) -> Any:
        """Waits for the outcome before returning the call, so it is recorded before the caller sees it.

        Only unary-unary may wait here: grpc.aio's ``call.write()`` waits for the interceptors to
        return the call, so waiting for a client-streaming call's end here would deadlock.
        """
        call, finish, new_details = self.begin(details, RpcType.UNARY)
        try:
            grpc_call = await continuation(new_details, request)
        except BaseException as error:
            self.end(call, finish, _error_code(error), error)
            raise
        try:
            await grpc_call  # the caller's own await gets the same response or error
        except grpc.RpcError as error:
            self.end(call, finish, _error_code(error), error)
        except BaseException as error:
            self.end(call, finish, _error_code(error), error)
            raise
        else:
            self.end(call, finish, grpc.StatusCode.OK, None)
        return grpc_call

    async def streaming(
        self, continuation: Callable[..., Awaitable[Any]], details: Any, request: Any, rpc_type: RpcType
    ) -> Any:
        """Returns the call at once; its end is recorded when grpc reports it done."""
        call, finish, new_details = self.begin(details, rpc_type)
        try:
            grpc_call = await continuation(new_details, request)
        except BaseException as error:
            self.end(call, finish, _error_code(error), error)
            raise
        try:
            grpc_call.add_done_callback(lambda done: self._settle_later(done, call, finish))
        except (AttributeError, NotImplementedError):
            if rpc_type is RpcType.CLIENT_STREAM:
                raise
            # An inner interceptor returned a plain async iterator instead of a call.
            return self._iterate(grpc_call, call, finish)
        return grpc_call

    def _settle_later(self, grpc_call: Any, call: ClientCall, finish: ClientFinish) -> None:
        task = asyncio.get_running_loop().create_task(self._settle(grpc_call, call, finish))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def _settle(self, grpc_call: Any, call: ClientCall, finish: ClientFinish) -> None:
        try:
            if call.rpc_type is RpcType.CLIENT_STREAM:
                # Awaiting the (finished) call gives the status the caller sees; ``code()`` can
                # say INTERNAL for a client stream the server ended while it was still writing.
                await grpc_call
                code = grpc.StatusCode.OK
            else:
                code = await grpc_call.code()
        except grpc.RpcError as error:
            self.end(call, finish, _error_code(error), error)
            return
        except BaseException as error:
            self.end(call, finish, _error_code(error), error)
            raise
        self.end(call, finish, code, None)

    async def _iterate(self, responses: Any, call: ClientCall, finish: ClientFinish) -> AsyncIterator[Any]:
        try:
            async for response in responses:
                yield response
        except BaseException as error:
            self.end(call, finish, _error_code(error), error)
            raise
        self.end(call, finish, grpc.StatusCode.OK, None)


class _UnaryUnary(grpc.aio.UnaryUnaryClientInterceptor):  # type: ignore[type-arg]
    def __init__(self, core: _ClientCallObserver) -> None:
        self._core = core

    async def intercept_unary_unary(self, continuation: Any, client_call_details: Any, request: Any) -> Any:
        return await self._core.unary_unary(continuation, client_call_details, request)


class _UnaryStream(grpc.aio.UnaryStreamClientInterceptor):  # type: ignore[type-arg]
    def __init__(self, core: _ClientCallObserver) -> None:
        self._core = core

    async def intercept_unary_stream(self, continuation: Any, client_call_details: Any, request: Any) -> Any:
        return await self._core.streaming(continuation, client_call_details, request, RpcType.SERVER_STREAM)


class _StreamUnary(grpc.aio.StreamUnaryClientInterceptor):  # type: ignore[type-arg]
    def __init__(self, core: _ClientCallObserver) -> None:
        self._core = core

    async def intercept_stream_unary(self, continuation: Any, client_call_details: Any, request_iterator: Any) -> Any:
        return await self._core.streaming(continuation, client_call_details, request_iterator, RpcType.CLIENT_STREAM)


class _StreamStream(grpc.aio.StreamStreamClientInterceptor):  # type: ignore[type-arg]
    def __init__(self, core: _ClientCallObserver) -> None:
        self._core = core

    async def intercept_stream_stream(self, continuation: Any, client_call_details: Any, request_iterator: Any) -> Any:
        return await self._core.streaming(continuation, client_call_details, request_iterator, RpcType.BIDI_STREAM)


ClientInterceptor: TypeAlias = (
    "grpc.aio.UnaryUnaryClientInterceptor[Any, Any] | grpc.aio.UnaryStreamClientInterceptor[Any, Any]"
    " | grpc.aio.StreamUnaryClientInterceptor[Any, Any] | grpc.aio.StreamStreamClientInterceptor[Any, Any]"
)
"""Any of the four grpc.aio client interceptor kinds (what ``grpc.aio.*_channel(interceptors=...)`` takes)."""

ServerInterceptor: TypeAlias = "grpc.aio.ServerInterceptor[Any, Any]"


def client_interceptors(observer: ClientObserver, target: str | None = None) -> list[ClientInterceptor]:
    """Four grpc.aio client interceptors (one per RPC kind; grpc.aio files each under one kind only)
    that run ``observer`` around every call. ``target`` names the peer in logs when known."""
    core = _ClientCallObserver(observer, target)
    return [_UnaryUnary(core), _UnaryStream(core), _StreamUnary(core), _StreamStream(core)]


class ServerObservingInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[type-arg]
    """A ``grpc.aio.ServerInterceptor`` that runs ``observer`` around every call it is not told to skip."""

    def __init__(self, observer: ServerObserver, skip: Callable[[str], bool] | None = None) -> None:
        self._observer = observer
        self._skip = skip
        self._handlers = HandlerCache()

    async def intercept_service(
        self, continuation: Callable[[Any], Awaitable[Any]], handler_call_details: grpc.HandlerCallDetails
    ) -> Any:
        handler = await continuation(handler_call_details)
        method = handler_call_details.method
        if handler is None or (self._skip is not None and self._skip(method)):
            return handler
        return self._handlers.get(method, handler, lambda: observe_handler(handler, method, self._observer))


def iter_metadata(metadata: Any) -> Iterator[tuple[str, str | bytes]]:
    """Key/value pairs of any metadata shape (``None``, tuples, ``grpc.aio.Metadata``)."""
    yield from metadata or ()
