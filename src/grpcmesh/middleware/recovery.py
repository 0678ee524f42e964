"""Server-side recovery: an unhandled exception in a handler becomes ``INTERNAL``, never a crash.

Without it grpc.aio answers ``UNKNOWN`` with the exception's text (leaking internals to the
caller). Here the traceback is logged with a short reference, and the caller gets
``INTERNAL`` with that reference only, so an operator can find the log line from a client
report. Deliberate aborts (``context.abort``), cancellations and handlers that set a status
themselves pass through untouched. Put this interceptor first in the chain so it also
guards the interceptors after it.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import grpc

from grpcmesh.middleware.behavior import HandlerCache
from grpcmesh.middleware.server_side import ServerPipeline

log = logging.getLogger("grpcmesh.recovery")

if TYPE_CHECKING:  # grpc's classes are generic only in the type stubs
    Handler = grpc.RpcMethodHandler[Any, Any]
    _ServerInterceptor = grpc.aio.ServerInterceptor[Any, Any]
else:
    Handler = grpc.RpcMethodHandler
    _ServerInterceptor = grpc.aio.ServerInterceptor
Continuation = Callable[[grpc.HandlerCallDetails], Awaitable[Handler]]


class Recovery:
    """Answers INTERNAL with a logged reference for the exception being handled (``ServerPipeline``'s ``recover``)."""

    def __init__(self, logger: logging.Logger = log) -> None:
        self._log = logger

    async def __call__(self, method: str, context: Any) -> None:
        reference = self.log_failure("unhandled exception in %s", method)
        await context.abort(grpc.StatusCode.INTERNAL, _details(method, reference))

    def log_failure(self, message: str, method: str) -> str:
        """Log the current exception with a fresh reference; return the reference."""
        reference = uuid.uuid4().hex[:12]
        self._log.exception(message + " (ref %s); answering INTERNAL", method, reference)
        return reference


class RecoveryInterceptor(_ServerInterceptor):
    """Turns unhandled exceptions into ``INTERNAL`` with a logged traceback, as a grpc.aio interceptor.

    Put it first: it also guards the interceptors after it (a failing ``intercept_service``).
    """

    def __init__(self, logger: logging.Logger = log) -> None:
        self._recovery = Recovery(logger)
        self._pipeline = ServerPipeline(recover=self._recovery)
        self._handlers = HandlerCache()

    async def intercept_service(
        self, continuation: Continuation, handler_call_details: grpc.HandlerCallDetails
    ) -> Handler:
        method = handler_call_details.method
        try:
            handler = await continuation(handler_call_details)
        except Exception:  # a later interceptor failed before any handler ran
            reference = self._recovery.log_failure("server interceptor failed for %s", method)

            async def failed(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
                await context.abort(grpc.StatusCode.INTERNAL, _details(method, reference))

            return grpc.unary_unary_rpc_method_handler(failed)
        if handler is None:  # no such method: grpc answers UNIMPLEMENTED
            return handler
        guarded: Handler = self._handlers.get(method, handler, lambda: self._pipeline.wrap(handler, method))
        return guarded


def _details(method: str, reference: str) -> str:
    return f"internal error in {method} (ref {reference})"
