"""Handlers and their behaviours: the one place a ``grpc.RpcMethodHandler`` is rebuilt around new code.

A handler holds one *behaviour* (the servicer method) of one of two async shapes: a coroutine
(unary responses, and streaming responses written with ``context.write``) or an async
generator (streaming responses yielded). :func:`wrap_behavior` gives a wrapper the behaviour
and its shape and builds a handler of the same kind and (de)serializers around the result.
Every server concern (the mesh's per-method wrapper, the stand-alone interceptors, recovery)
goes through it.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterator
from typing import Any

import grpc

from grpcmesh._rpc import MAX_CACHED_METHODS, RpcType

# grpc-stubs types the aio context/handlers loosely; the wrappers work on ``Any`` at the seams.
Context = Any
Handler = Any
Behavior = Callable[..., Any]

BehaviorWrapper = Callable[[Behavior, bool], Behavior]
"""Given a behaviour and whether it is an async generator, a behaviour of the same shape."""

_FACTORIES = {
    RpcType.UNARY: grpc.unary_unary_rpc_method_handler,
    RpcType.SERVER_STREAM: grpc.unary_stream_rpc_method_handler,
    RpcType.CLIENT_STREAM: grpc.stream_unary_rpc_method_handler,
    RpcType.BIDI_STREAM: grpc.stream_stream_rpc_method_handler,
}


def rpc_type_of(handler: Handler) -> RpcType:
    return RpcType.of(handler.request_streaming, handler.response_streaming)


def behavior_of(handler: Handler) -> Behavior:
    if handler.request_streaming:
        return handler.stream_stream if handler.response_streaming else handler.stream_unary  # type: ignore[no-any-return]
    return handler.unary_stream if handler.response_streaming else handler.unary_unary  # type: ignore[no-any-return]


def is_async(behavior: Behavior) -> bool:
    return inspect.iscoroutinefunction(behavior) or inspect.isasyncgenfunction(behavior)


def replace_behavior(handler: Handler, behavior: Behavior) -> Handler:
    """A handler of the same kind and (de)serializers as ``handler`` that runs ``behavior``."""
    factory = _FACTORIES[rpc_type_of(handler)]
    return factory(behavior, handler.request_deserializer, handler.response_serializer)


def wrap_behavior(handler: Handler, wrap: BehaviorWrapper) -> Handler:
    """``handler`` rebuilt around ``wrap(behavior, is_generator)``.

    Sync behaviours (run on grpc's thread pool) cannot be awaited around: they are returned
    unchanged; callers that must not let one through check :func:`is_async` first.
    """
    if handler is None:
        return None
    behavior = behavior_of(handler)
    if not is_async(behavior):
        return handler
    return replace_behavior(handler, wrap(behavior, inspect.isasyncgenfunction(behavior)))


def rejecting_handler(handler: Handler, code: grpc.StatusCode, details: str) -> Handler:
    """A handler of the same kind as ``handler`` that fails every call with ``code``."""

    async def reject(request: Any, context: Context) -> None:
        await context.abort(code, details)

    return replace_behavior(handler, reject)


class HandlerCache:
    """Wrapped handlers by method name, built once instead of on every call.

    An entry is used only while the inner handler is the very same object it was built from
    (grpc's generic handlers, and every wrapper here, return one handler per method), so a
    handler that changes is re-wrapped. Unknown methods are never cached (their handler is
    ``None``), and the cache stops growing at ``MAX_CACHED_METHODS``.
    """

    __slots__ = ("_entries",)

    def __init__(self) -> None:
        self._entries: dict[str, tuple[Any, Any]] = {}

    def get(self, method: str, handler: Handler, build: Callable[[], Handler]) -> Handler:
        entry = self._entries.get(method)
        if entry is not None and entry[0] is handler:
            return entry[1]
        wrapped = build()
        if len(self._entries) < MAX_CACHED_METHODS or method in self._entries:
            self._entries[method] = (handler, wrapped)
        return wrapped


def metadata_value(metadata: Any, key: str) -> str | None:
    """The first value of ``key`` in invocation metadata (tuples or ``grpc.aio.Metadata``), as text."""
    if not metadata:
        return None
    for item_key, value in metadata:
        if item_key == key:
            return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
    return None


def iter_metadata(metadata: Any) -> Iterator[tuple[str, str | bytes]]:
    """Key/value pairs of any metadata shape (``None``, tuples, ``grpc.aio.Metadata``)."""
    yield from metadata or ()
