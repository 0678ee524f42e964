"""The server half of call semantics: admission (load shedding) and the incoming call's context.

Wrapped around every method of a mesh server, outermost: a call the :class:`LoadShedder`
refuses gets RESOURCE_EXHAUSTED before any other work is done for it (health and
reflection are never refused); an admitted call's deadline and allowlisted metadata are
bound to :mod:`grpcmesh.context` while its handler runs, so the calls the handler makes
through mesh channels inherit them. The wrapped handler is built once per method.
"""

from __future__ import annotations

import inspect
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any

import grpc

from grpcmesh.context import TIMEOUT_HEADER, Propagation
from grpcmesh.server.shedding import LoadShedder, never_shed

if TYPE_CHECKING:  # grpc's classes are generic only in the type stubs
    _ServerInterceptor = grpc.aio.ServerInterceptor[Any, Any]
else:
    _ServerInterceptor = grpc.aio.ServerInterceptor

MAX_CACHED_HANDLERS = 4096

_FACTORIES = {
    (False, False): grpc.unary_unary_rpc_method_handler,
    (False, True): grpc.unary_stream_rpc_method_handler,
    (True, False): grpc.stream_unary_rpc_method_handler,
    (True, True): grpc.stream_stream_rpc_method_handler,
}


def _behavior(handler: Any) -> Any:
    if handler.request_streaming:
        return handler.stream_stream if handler.response_streaming else handler.stream_unary
    return handler.unary_stream if handler.response_streaming else handler.unary_unary


def queueing_delay(metadata: Any, time_remaining: float | None) -> float | None:
    """How long a call waited before its handler started: the timeout its mesh client sent
    (``x-mesh-timeout-ms``) less what is left of it; None when unknown."""
    if time_remaining is None or not metadata:
        return None
    for key, value in metadata:
        if key == TIMEOUT_HEADER:
            try:
                sent = float(value) / 1000
            except (TypeError, ValueError):
                return None  # hostile or broken header: no signal, not an error
            return max(0.0, sent - time_remaining) if 0 < sent < 1e7 else None
    return None


def _shed_message(shedder: LoadShedder) -> str:
    return (
        f"server overloaded: load shedding refused the call ({shedder.in_flight} in flight, "
        f"event-loop lag {shedder.lag * 1000:.0f}ms); retry later or elsewhere"
    )


def wrap_handler(handler: Any, full_method: str, propagation: Propagation, shedder: LoadShedder | None) -> Any:
    """``handler`` with admission and context binding around its behavior (sync handlers pass through)."""
    behavior = _behavior(handler)
    if not (inspect.iscoroutinefunction(behavior) or inspect.isasyncgenfunction(behavior)):
        return handler
    gate = None if shedder is None or not shedder.policy.enabled or never_shed(full_method) else shedder

    async def enter(context: Any) -> Any:
        metadata = context.invocation_metadata()
        remaining = context.time_remaining()
        if gate is not None and not gate.admit(queueing_delay(metadata, remaining)):
            await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, _shed_message(gate))
        return propagation.serving(propagation.incoming(metadata, remaining))

    def leave(started: float) -> None:
        if gate is not None:
            gate.finished(time.monotonic() - started)

    if inspect.isasyncgenfunction(behavior):

        async def streamed(request: Any, context: Any) -> AsyncIterator[Any]:
            binding = await enter(context)
            started = time.monotonic()
            try:
                with binding:
                    async for message in behavior(request, context):
                        yield message
            finally:
                leave(started)

        wrapped: Callable[..., Any] = streamed
    else:
        coroutine: Callable[..., Awaitable[Any]] = behavior

        async def awaited(request: Any, context: Any) -> Any:
            binding = await enter(context)
            started = time.monotonic()
            try:
                with binding:
                    return await coroutine(request, context)
            finally:
                leave(started)

        wrapped = awaited
    factory = _FACTORIES[(handler.request_streaming, handler.response_streaming)]
    return factory(wrapped, handler.request_deserializer, handler.response_serializer)


class CallContextInterceptor(_ServerInterceptor):
    """Applies :func:`wrap_handler` to every method, once per (method, handler)."""

    def __init__(self, propagation: Propagation, shedder: LoadShedder | None = None) -> None:
        self.propagation = propagation
        self.shedder = shedder
        self._wrapped: dict[tuple[str, int], tuple[Any, Any]] = {}

    async def intercept_service(self, continuation: Callable[[Any], Awaitable[Any]], handler_call_details: Any) -> Any:
        handler = await continuation(handler_call_details)
        if handler is None:
            return None
        method = handler_call_details.method
        key = (method, id(handler))
        found = self._wrapped.get(key)
        if found is not None and found[0] is handler:
            return found[1]
        wrapped = wrap_handler(handler, method, self.propagation, self.shedder)
        if len(self._wrapped) < MAX_CACHED_HANDLERS:
            self._wrapped[key] = (handler, wrapped)  # holding the handler keeps its id from being reused
        return wrapped
