"""The client half of the middleware: the mesh's concerns run as ONE observation per call.

``MeshChannel``'s call engine asks its observer to ``begin`` each call once, before the
first attempt (:class:`ClientObservation`): the concerns see a :class:`ClientCall`, may add
metadata (auth headers, ``traceparent``), and return what to call with the final status.
Retries inside the call are not separate calls here. For plain ``grpc.aio`` channels,
:func:`client_interceptors` runs the same observers as grpc.aio interceptors.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any, TypeAlias

import grpc

from grpcmesh._rpc import RpcType, split_method
from grpcmesh.client.calls import status_of
from grpcmesh.middleware.observing import start_observers

if TYPE_CHECKING:
    from grpcmesh.client.calls import CallFinish, CallOptions, MethodSpec

log = logging.getLogger("grpcmesh.middleware")


class ClientCall:
    """One outgoing call as the client concerns see it; observers may add ``metadata``.

    ``caller`` is the calling mesh service ("" when unknown), ``callee`` the mesh service the
    channel targets ("" on a plain channel); ``trace_id`` is filled by tracing for the access log;
    ``code``, ``error`` and ``duration`` are set when the call ends, before the finish hooks run.
    """

    __slots__ = (
        "_added",
        "_finishers",
        "_given",
        "_metadata",
        "callee",
        "caller",
        "code",
        "duration",
        "error",
        "full_method",
        "method",
        "rpc_type",
        "service",
        "started",
        "target",
        "trace_id",
    )

    def __init__(
        self,
        full_method: str,
        rpc_type: RpcType,
        metadata: Any,
        target: str | None = None,
        caller: str = "",
        callee: str = "",
        names: tuple[str, str] | None = None,
    ) -> None:
        self.full_method = full_method
        self.rpc_type = rpc_type
        self._given = metadata
        self._added: tuple[tuple[str, Any], ...] = ()
        # A tuple (the mesh channel's case) skips the ABC isinstance check: a Python call per call.
        plain = metadata is None or type(metadata) is tuple
        self._metadata: grpc.aio.Metadata | None = (
            metadata if not plain and isinstance(metadata, grpc.aio.Metadata) else None
        )
        self.target = target
        self.caller = caller
        self.callee = callee
        self.service, self.method = names if names is not None else split_method(full_method)
        self.started = time.perf_counter()
        self.code: grpc.StatusCode | None = None
        self.error: BaseException | None = None
        self.duration = 0.0
        self.trace_id: str | None = None
        self._finishers: Sequence[ClientFinish] = ()

    def end(self, code: grpc.StatusCode, error: BaseException | None) -> None:
        """The call ended with ``code`` (and ``error``): run the observers' finish hooks, last first."""
        self.duration = time.perf_counter() - self.started
        self.code = code
        self.error = error
        for finish in reversed(self._finishers):
            try:
                finish(self)
            except Exception:
                log.exception("client observer failed at the end of %s", self.full_method)

    @property
    def metadata(self) -> grpc.aio.Metadata:
        """The call's outgoing metadata, copied from the caller's on first use (observers that
        only read or add nothing never pay for the copy; the caller's object is never modified)."""
        found = self._metadata
        if found is None:
            given = self._given
            found = self._metadata = grpc.aio.Metadata(*(given or ()), *self._added)
        return found

    def put_headers(self, headers: tuple[tuple[str, Any], ...]) -> None:
        """Set each of ``headers`` (replacing the caller's value of that key, like ``set_all``).

        The common case (the caller sent none of these keys) only remembers the tuple: no
        ``grpc.aio.Metadata`` is built, and the call sends the caller's items plus these.
        """
        found = self._metadata
        if found is None:
            given, added = self._given, self._added
            if not (given and _overlaps(headers, given)) and not (added and _overlaps(headers, added)):
                self._added = (*added, *headers) if added else headers
                return
            found = self.metadata
        for key, value in headers:
            found.set_all(key, [value])

    def header(self, key: str) -> Any:
        """The first value of outgoing metadata ``key`` (or ``None``), read without copying anything."""
        found = self._metadata
        items = found if found is not None else (*(self._given or ()), *self._added)
        for item_key, value in items:
            if item_key == key:
                return value
        return None

    @property
    def copied_metadata(self) -> Any:
        """What to send instead of the caller's metadata if an observer added to it, else ``None``."""
        found = self._metadata
        if found is not None:
            return found
        added = self._added
        if added:
            given = self._given
            return (*given, *added) if given else added
        return None


def _overlaps(headers: tuple[tuple[str, Any], ...], items: Any) -> bool:
    """Whether ``items`` (metadata pairs, or None) hold any key of ``headers`` (a plain loop: no generator)."""
    if items:
        for key, _ in headers:
            for item in items:
                if item[0] == key:
                    return True
    return False


ClientFinish = Callable[[ClientCall], None]
ClientObserver = Callable[[ClientCall], ClientFinish | None]
"""Called when a call starts (may add metadata); returns what to call once its code is known, or ``None``."""


class ClientObservation:
    """The mesh's client concerns, in order, as the ``CallObserver`` of its channels.

    ``caller`` is this mesh's service name (for the ``caller`` label and the access log).
    """

    def __init__(self, observers: Sequence[ClientObserver], caller: str = "") -> None:
        self.observers = tuple(observers)
        self.caller = caller

    def begin(self, callee: str, spec: MethodSpec, options: CallOptions) -> CallFinish | None:
        # A tuple view of the caller's metadata: never modified; copied only if an observer writes.
        given = options.metadata
        view = tuple(given) if given else None
        call = ClientCall(spec.method, spec.kind, view, None, self.caller, callee, spec.names)
        finishers = start_observers(self.observers, call, "client")
        if call._added or call._metadata is not None:  # an observer wrote: send its copy
            options.metadata = call.copied_metadata
        if not finishers:
            return None
        call._finishers = finishers
        return call.end  # a bound method: no closure per call


# -------------------------------------------------------------- grpc.aio interceptors (plain channels)


class _OwnedMetadata(grpc.aio.Metadata):
    """Metadata an interceptor here copied from the caller's: later interceptors of ours may add to
    it in place instead of copying it again (the caller's own object is never modified)."""


class _InterceptedCalls:
    """Runs the observers around a call of any kind; the four interceptor classes share it."""

    def __init__(self, observers: Sequence[ClientObserver], target: str | None) -> None:
        self._observers = tuple(observers)
        self._target = target
        self._pending: set[asyncio.Task[None]] = set()

    def begin(self, details: grpc.aio.ClientCallDetails, rpc_type: RpcType) -> tuple[ClientCall, Any]:
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
        call._finishers = start_observers(self._observers, call, "client")
        return call, new_details

    async def unary_unary(self, continuation: Callable[..., Awaitable[Any]], details: Any, request: Any) -> Any:
        """Waits for the outcome before returning the call, so it is recorded before the caller sees it.

        Only unary-unary may wait here: grpc.aio's ``call.write()`` waits for the interceptors to
        return the call, so waiting for a client-streaming call's end here would deadlock.
        """
        call, new_details = self.begin(details, RpcType.UNARY)
        try:
            grpc_call = await continuation(new_details, request)
        except BaseException as error:
            call.end(status_of(error), error)
            raise
        try:
            await grpc_call  # the caller's own await gets the same response or error
        except grpc.RpcError as error:
            call.end(status_of(error), error)
        except BaseException as error:
            call.end(status_of(error), error)
            raise
        else:
            call.end(grpc.StatusCode.OK, None)
        return grpc_call

    async def streaming(
        self, continuation: Callable[..., Awaitable[Any]], details: Any, request: Any, rpc_type: RpcType
    ) -> Any:
        """Returns the call at once; its end is recorded when grpc reports it done."""
        call, new_details = self.begin(details, rpc_type)
        try:
            grpc_call = await continuation(new_details, request)
        except BaseException as error:
            call.end(status_of(error), error)
            raise
        try:
            grpc_call.add_done_callback(lambda done: self._settle_later(done, call))
        except (AttributeError, NotImplementedError):
            if rpc_type is RpcType.CLIENT_STREAM:
                raise
            # An inner interceptor returned a plain async iterator instead of a call.
            return self._iterate(grpc_call, call)
        return grpc_call

    def _settle_later(self, grpc_call: Any, call: ClientCall) -> None:
        task = asyncio.get_running_loop().create_task(self._settle(grpc_call, call))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def _settle(self, grpc_call: Any, call: ClientCall) -> None:
        try:
            if call.rpc_type is RpcType.CLIENT_STREAM:
                # Awaiting the (finished) call gives the status the caller sees; ``code()`` can
                # say INTERNAL for a client stream the server ended while it was still writing.
                await grpc_call
                code = grpc.StatusCode.OK
            else:
                code = await grpc_call.code()
        except grpc.RpcError as error:
            call.end(status_of(error), error)
            return
        except BaseException as error:
            call.end(status_of(error), error)
            raise
        call.end(code, None)

    async def _iterate(self, responses: Any, call: ClientCall) -> AsyncIterator[Any]:
        try:
            async for response in responses:
                yield response
        except BaseException as error:
            call.end(status_of(error), error)
            raise
        call.end(grpc.StatusCode.OK, None)


class _UnaryUnary(grpc.aio.UnaryUnaryClientInterceptor):  # type: ignore[type-arg]
    def __init__(self, core: _InterceptedCalls) -> None:
        self._core = core

    async def intercept_unary_unary(self, continuation: Any, client_call_details: Any, request: Any) -> Any:
        return await self._core.unary_unary(continuation, client_call_details, request)


class _UnaryStream(grpc.aio.UnaryStreamClientInterceptor):  # type: ignore[type-arg]
    def __init__(self, core: _InterceptedCalls) -> None:
        self._core = core

    async def intercept_unary_stream(self, continuation: Any, client_call_details: Any, request: Any) -> Any:
        return await self._core.streaming(continuation, client_call_details, request, RpcType.SERVER_STREAM)


class _StreamUnary(grpc.aio.StreamUnaryClientInterceptor):  # type: ignore[type-arg]
    def __init__(self, core: _InterceptedCalls) -> None:
        self._core = core

    async def intercept_stream_unary(self, continuation: Any, client_call_details: Any, request_iterator: Any) -> Any:
        return await self._core.streaming(continuation, client_call_details, request_iterator, RpcType.CLIENT_STREAM)


class _StreamStream(grpc.aio.StreamStreamClientInterceptor):  # type: ignore[type-arg]
    def __init__(self, core: _InterceptedCalls) -> None:
        self._core = core

    async def intercept_stream_stream(self, continuation: Any, client_call_details: Any, request_iterator: Any) -> Any:
        return await self._core.streaming(continuation, client_call_details, request_iterator, RpcType.BIDI_STREAM)


ClientInterceptor: TypeAlias = (
    "grpc.aio.UnaryUnaryClientInterceptor[Any, Any] | grpc.aio.UnaryStreamClientInterceptor[Any, Any]"
    " | grpc.aio.StreamUnaryClientInterceptor[Any, Any] | grpc.aio.StreamStreamClientInterceptor[Any, Any]"
)
"""Any of the four grpc.aio client interceptor kinds (what ``grpc.aio.*_channel(interceptors=...)`` takes)."""


def client_interceptors(
    observers: ClientObserver | Sequence[ClientObserver], target: str | None = None
) -> list[ClientInterceptor]:
    """Four grpc.aio client interceptors (one per RPC kind; grpc.aio files each under one kind only)
    that run ``observers`` around every call of a plain channel. ``target`` names the peer in logs."""
    chain = [observers] if callable(observers) else list(observers)
    core = _InterceptedCalls(chain, target)
    return [_UnaryUnary(core), _UnaryStream(core), _StreamUnary(core), _StreamStream(core)]
