"""Server-side recovery: an unhandled exception in a handler becomes ``INTERNAL``, never a crash.

Without it grpc.aio answers ``UNKNOWN`` with the exception's text (leaking internals to the
caller). Here the traceback is logged with a short reference, and the caller gets
``INTERNAL`` with that reference only, so an operator can find the log line from a client
report. Deliberate aborts (``context.abort``), cancellations and handlers that set a status
themselves pass through untouched. Put this interceptor first in the chain so it also
guards the interceptors after it.
"""

from __future__ import annotations

import inspect
import logging
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any

import grpc

from grpcmesh.middleware._calls import HandlerCache

log = logging.getLogger("grpcmesh.recovery")

if TYPE_CHECKING:  # grpc's classes are generic only in the type stubs
    Handler = grpc.RpcMethodHandler[Any, Any]
    _ServerInterceptor = grpc.aio.ServerInterceptor[Any, Any]
else:
    Handler = grpc.RpcMethodHandler
    _ServerInterceptor = grpc.aio.ServerInterceptor
Continuation = Callable[[grpc.HandlerCallDetails], Awaitable[Handler]]


class RecoveryInterceptor(_ServerInterceptor):
    """Turns unhandled handler exceptions into ``INTERNAL`` with a logged traceback."""

    def __init__(self, logger: logging.Logger = log) -> None:
        self._log = logger
        self._handlers = HandlerCache()

    async def intercept_service(
        self, continuation: Continuation, handler_call_details: grpc.HandlerCallDetails
    ) -> Handler:
        method = handler_call_details.method
        try:
            handler = await continuation(handler_call_details)
        except Exception:  # a later interceptor failed before any handler ran
            reference = self._log_failure("server interceptor failed for %s", method)

            async def failed(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
                await context.abort(grpc.StatusCode.INTERNAL, _details(method, reference))

            return grpc.unary_unary_rpc_method_handler(failed)
        if handler is None:  # no such method: grpc answers UNIMPLEMENTED
            return handler
        guarded: Handler = self._handlers.get(method, handler, lambda: self._guarded(handler, method))
        return guarded

    def _guarded(self, handler: Handler, method: str) -> Handler:
        """``handler`` with its behavior guarded; built once per method, not per call."""
        if handler.unary_unary is not None:
            return grpc.unary_unary_rpc_method_handler(
                self._wrap(handler.unary_unary, method), handler.request_deserializer, handler.response_serializer
            )
        if handler.unary_stream is not None:
            return grpc.unary_stream_rpc_method_handler(
                self._wrap(handler.unary_stream, method), handler.request_deserializer, handler.response_serializer
            )
        if handler.stream_unary is not None:
            return grpc.stream_unary_rpc_method_handler(
                self._wrap(handler.stream_unary, method), handler.request_deserializer, handler.response_serializer
            )
        if handler.stream_stream is not None:
            return grpc.stream_stream_rpc_method_handler(
                self._wrap(handler.stream_stream, method), handler.request_deserializer, handler.response_serializer
            )
        return handler

    def _wrap(self, behavior: Callable[..., Any], method: str) -> Callable[..., Any]:
        if inspect.isasyncgenfunction(behavior):
            return self._wrap_stream(behavior, method)
        if inspect.iscoroutinefunction(behavior):
            return self._wrap_coroutine(behavior, method)
        return behavior  # a sync handler runs on grpc's thread pool, which already contains failures

    def _wrap_coroutine(self, behavior: Callable[..., Awaitable[Any]], method: str) -> Callable[..., Awaitable[Any]]:
        async def guarded(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            try:
                return await behavior(request, context)
            except grpc.aio.AbortError:
                raise
            except Exception:
                await self._recover(method, context)
                raise AssertionError("unreachable: context.abort raises") from None

        return guarded

    def _wrap_stream(
        self, behavior: Callable[..., AsyncIterator[Any]], method: str
    ) -> Callable[..., AsyncIterator[Any]]:
        async def guarded(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> AsyncIterator[Any]:
            try:
                async for response in behavior(request, context):
                    yield response
            except grpc.aio.AbortError:
                raise
            except Exception:
                await self._recover(method, context)

        return guarded

    async def _recover(self, method: str, context: grpc.aio.ServicerContext[Any, Any]) -> None:
        reference = self._log_failure("unhandled exception in %s", method)
        await context.abort(grpc.StatusCode.INTERNAL, _details(method, reference))

    def _log_failure(self, message: str, method: str) -> str:
        """Log the current exception with a fresh reference; return the reference."""
        reference = uuid.uuid4().hex[:12]
        self._log.exception(message + " (ref %s); answering INTERNAL", method, reference)
        return reference


def _details(method: str, reference: str) -> str:
    return f"internal error in {method} (ref {reference})"
