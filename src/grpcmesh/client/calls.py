"""The call engine: one code path for the four RPC kinds, returned by ``MeshChannel``'s multicallables.

A mesh call looks like the ``grpc.aio`` call it stands for (awaitable and/or async-iterable,
with ``code()``, ``details()``, metadata, ``cancel()``...), but first picks an endpoint and may
move the call to another one:

* unary request (unary-unary, unary-stream): an attempt that fails with UNAVAILABLE before the
  request left (no connection could be made) is retried once on another endpoint; with the
  method opted in (``retry_methods``) any UNAVAILABLE is retried once. A server stream is
  retried only until its first message has reached the caller.
* streamed request (stream-unary, stream-stream): the request stream is the caller's and
  cannot be replayed, so the endpoint is fixed *before* anything is sent: if its connection
  is not ready within the deadline (at most ``connect_timeout``), it counts as a connection
  failure and a second endpoint is used. Once the call has started it is never moved.

Every attempt receives what is left of the call's deadline as its timeout.

Where things happen (each is one method of the channel's private ``CallHost``, see
:mod:`grpcmesh.client._host`): the call's options (deadline, metadata) are fixed by
``call_options`` before the call object exists; ``admit`` may refuse the call before anything
is sent (spent deadline, client-side throttling); ``begin_call`` starts the mesh's observation
(auth headers, trace context, metrics, access log) when the call starts (``_MeshCall._engine``); an endpoint is
acquired in ``_MeshCall._establish_*`` (``pick_now``/``acquire``); each attempt is bracketed by
``attempt_started`` (``_start_attempt``) and ``attempt_ended`` (``_end_attempt``); a failed
attempt is retried only if ``may_retry`` says so; the call's final status goes to the
observation exactly once (``_end_call``). The streaming kinds run these steps in a task made
with the call; the unary-unary call (:mod:`grpcmesh.client.unary_call`) runs its first attempt
in the task that awaits it.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Generator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import grpc
from grpc.aio import EOF  # type: ignore[attr-defined]

from grpcmesh._rpc import RpcType, split_method
from grpcmesh.client.errors import MeshRpcError
from grpcmesh.client.subchannel import SubChannel

if TYPE_CHECKING:
    from grpcmesh.client._host import CallHost


@dataclass(frozen=True)
class MethodSpec:
    """What a stub told the channel about one method (``names``: its service and method, split once)."""

    kind: RpcType
    method: str
    serializer: Any
    deserializer: Any
    registered: bool
    names: tuple[str, str] = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "names", split_method(self.method))


@dataclass(slots=True)
class CallOptions:
    """Per-call arguments, passed to every attempt unchanged (except the shrinking timeout).

    Not frozen: a frozen dataclass's ``__init__`` goes through ``object.__setattr__`` per
    field, and one of these is made per call. Only the observation, before the first
    attempt, may replace ``metadata`` (with a copy carrying its headers).
    """

    deadline: float | None
    metadata: Any
    credentials: grpc.CallCredentials | None
    wait_for_ready: bool | None
    compression: grpc.Compression | None
    request_key: str | None


CallFinish = Callable[[grpc.StatusCode, BaseException | None], None]
"""Told a call's final status code once (and the error, if it failed)."""


class CallObserver(Protocol):
    """The mesh's client-side concerns run as one observation per call (not as interceptors)."""

    def begin(self, callee: str, spec: MethodSpec, options: CallOptions) -> CallFinish | None:
        """Called before the first attempt of a call to mesh service ``callee``; may set
        ``options.metadata``; returns the end hook (or ``None``)."""
        ...


def _now() -> float:
    return asyncio.get_running_loop().time()


def _mark_retrieved(task: asyncio.Task[Any]) -> None:
    """Like a grpc.aio call, a mesh call nobody awaits must not log "exception never retrieved"."""
    if not task.cancelled():
        task.exception()


def _deadline_error(spec: MethodSpec) -> MeshRpcError:
    return MeshRpcError(grpc.StatusCode.DEADLINE_EXCEEDED, f"deadline exceeded before {spec.method} could be sent")


def status_of(error: BaseException | None) -> grpc.StatusCode:
    """The status code a caller sees for a call that ended with ``error`` (``None``: OK)."""
    if error is None:
        return grpc.StatusCode.OK
    if isinstance(error, grpc.RpcError):
        code = error.code()
        if isinstance(code, grpc.StatusCode):
            return code
    if isinstance(error, asyncio.CancelledError):
        return grpc.StatusCode.CANCELLED
    return grpc.StatusCode.UNKNOWN


_NOTHING: Any = object()


class _MeshCall:
    """The engine shared by the four kinds: establishing task, attempts, retry, final status."""

    def __init__(self, host: CallHost, spec: MethodSpec, options: CallOptions, request: Any) -> None:
        self._host = host
        self._spec = spec
        self._options = options
        self._request = request
        if not self._lazy:
            self._engine()
        else:
            # Like a grpc.aio call, it is under way without being awaited: if the creating code
            # does not await it in the same step (``await stub.M(req)`` does), the loop's next
            # turn starts it in a task, so calls created together still run together.
            host.start_later(self)

    _lazy = False
    """True for the unary-unary call, which runs in the caller's task when awaited at once."""

    # Per-call state starts as these class defaults (one is made per call: no stores for them).
    _call: Any = None
    _error: BaseException | None = None
    _sub: SubChannel | None = None  # the attempt in progress, until _end_attempt
    _started = 0.0
    _first: Any = _NOTHING
    _answered = False  # a response has reached the caller (no handshake hint after that)
    _explanation: BaseException | None = None  # the failure with its likely cause, if any
    _ended = False
    _status_task: asyncio.Task[None] | None = None
    _finish: CallFinish | None = None
    _task: asyncio.Task[Any] | None = None

    def _start_if_idle(self) -> None:
        """Start a lazy call nobody awaited or asked about in the step that created it."""
        if self._task is None:
            self._engine()

    # -- the engine -------------------------------------------------------------------

    def _engine(self) -> asyncio.Task[Any]:
        """The task establishing the call, started (with the call's observation) on first need."""
        task = self._task
        if task is None:
            self._finish = self._host.begin_call(self._spec, self._options)
            task = self._task = asyncio.get_running_loop().create_task(self._establish())
            task.add_done_callback(_mark_retrieved)
        return task

    async def _establish(self, exclude: set[str] | None = None, admitted: bool = False) -> Any:
        try:
            if not admitted:
                refused = self._host.admit(self._spec, self._options)
                if refused is not None:  # spent deadline or client-side throttling: nothing is sent
                    self._fail(refused)
                    raise refused
            if self._spec.kind.request_streaming:
                return await self._establish_fixed()
            return await self._establish_retrying(exclude)
        except BaseException as error:
            self._end_attempt(error)
            self._end_call(error)
            raise

    async def _establish_retrying(self, exclude: set[str] | None) -> Any:
        """Unary request: attempts until one gives its first outcome (the response, or a stream's
        first message or EOF); a failed attempt moves to another endpoint once, if allowed
        (``exclude`` set: this is already that retry)."""
        host = self._host
        unary_response = not self._spec.kind.response_streaming
        # No coroutine when an endpoint is ready; a retry always goes through acquire.
        sub = host.pick_now(self._options.request_key) if exclude is None else None
        while True:
            if sub is None:
                sub = await self._acquire(exclude)
            call = self._start_attempt(sub, self._request)
            try:
                first = await call if unary_response else await call.read()
            except BaseException as error:
                self._end_attempt(error)
                self._error = error
                if exclude is not None or not host.may_retry(self._spec.method, error):
                    explained = self._explained(error)
                    if explained is error:
                        raise
                    raise explained from error
                exclude = {sub.id}
                sub = None
                continue
            if unary_response:
                self._end_attempt(None)
                self._end_call(None)
            else:
                self._first = first
                call.add_done_callback(self._on_grpc_done)
            return first

    async def _establish_fixed(self) -> None:
        """Streamed request: the endpoint must be connected before the caller's stream is handed over."""
        sub = await self._acquire(None)
        if not await self._host.ensure_connected(sub, self._options.deadline):
            sub = await self._acquire({sub.id}, fallback=sub)  # the same one if there is no other
        call = self._start_attempt(sub, self._request)
        call.add_done_callback(self._on_grpc_done)

    async def _acquire(self, exclude: set[str] | None, fallback: SubChannel | None = None) -> SubChannel:
        options = self._options
        try:
            sub = await self._host.acquire(
                options.request_key, exclude or set(), options.deadline, bool(options.wait_for_ready)
            )
        except MeshRpcError as error:
            self._fail(error)
            raise
        if sub is None:  # nowhere else to go
            if fallback is not None:
                return fallback
            failure = self._error
            assert failure is not None  # only after a failed attempt
            explained = self._explained(failure)
            if explained is failure:
                raise failure
            raise explained from failure
        return sub

    def _start_attempt(self, sub: SubChannel, request: Any, now: float | None = None) -> Any:
        """Send one attempt on ``sub`` (``now``: ``time.monotonic()`` if the caller has read it)."""
        options = self._options
        if options.deadline is None:
            timeout = None
        else:
            timeout = options.deadline - _now()
            if timeout <= 0:
                error = _deadline_error(self._spec)
                self._fail(error)
                raise error
        metadata = options.metadata
        if metadata:
            metadata = self._host.sendable(metadata)
        send = sub.multicallable_for(self._spec)
        call = send(
            request,
            timeout=timeout,
            metadata=metadata,
            credentials=options.credentials,
            compression=options.compression,
        )
        self._call = call
        self._sub = sub
        self._started = self._host.attempt_started(sub, now)
        return call

    def _end_attempt(self, error: BaseException | None) -> None:
        sub = self._sub
        if sub is not None:
            self._sub = None
            self._host.attempt_ended(sub, self._started, error)

    def _end_call(self, error: BaseException | None) -> None:
        """The call's final status, told to the observation exactly once."""
        if not self._ended:
            self._ended = True
            finish = self._finish
            if finish is not None:
                finish(status_of(error), error)

    def _ended_with(self, error: BaseException | None) -> None:
        self._end_attempt(error)
        self._end_call(error)

    def _on_grpc_done(self, call: Any) -> None:
        """A stream ended, maybe unread to its end: count the attempt, learn the status if still needed."""
        self._end_attempt(None)
        if self._ended:
            return
        if call.cancelled():
            self._end_call(asyncio.CancelledError())
            return
        task = asyncio.get_running_loop().create_task(self._end_call_with_status(call))
        task.add_done_callback(_mark_retrieved)
        self._status_task = task  # held: the loop keeps only a weak reference to tasks

    async def _end_call_with_status(self, call: Any) -> None:
        try:
            if self._spec.kind is RpcType.CLIENT_STREAM:
                # Awaiting the (finished) call gives the status the caller sees; ``code()`` can
                # say INTERNAL for a client stream the server ended while it was still writing.
                await call
                code = grpc.StatusCode.OK
            else:
                code = await call.code()
        except BaseException as error:  # any failure is the call's status
            self._end_call(error)
            return
        if code is grpc.StatusCode.OK:
            self._end_call(None)
        else:
            self._end_call(MeshRpcError(code, await call.details()))

    def _explained(self, error: BaseException) -> BaseException:
        """The error the caller sees for a call that failed before any response: a refused TLS
        handshake's likely cause added (then ``code()``/``details()`` report it too)."""
        explained = self._host.explain_failure(error)
        if explained is not error:
            self._explanation = explained
        return explained

    def _fail(self, error: BaseException) -> None:
        """A failure of the mesh's own (no endpoint, deadline spent): the status comes from ``error``."""
        self._error = error
        self._call = None

    async def _settled(self) -> None:
        with contextlib.suppress(Exception, asyncio.CancelledError):
            await asyncio.shield(self._engine())

    # -- grpc.aio.Call surface -----------------------------------------------------------

    def cancelled(self) -> bool:
        if self._call is not None:
            return bool(self._call.cancelled())
        return self._task is not None and self._task.cancelled()

    def done(self) -> bool:
        if self._call is not None and self._started_ok():
            return bool(self._call.done())
        return self._engine().done()

    def _started_ok(self) -> bool:
        """True once the call is established on an endpoint (the task ended without error)."""
        task = self._engine()
        return task.done() and not task.cancelled() and task.exception() is None

    def time_remaining(self) -> float | None:
        deadline = self._options.deadline
        return None if deadline is None else max(0.0, deadline - _now())

    def cancel(self) -> bool:
        cancelled = False
        if self._call is not None:
            cancelled = bool(self._call.cancel())
        task = self._engine()
        if not task.done():
            cancelled = task.cancel() or cancelled
        return cancelled

    def add_done_callback(self, callback: Callable[[Any], None]) -> None:
        def fire(_: Any) -> None:
            callback(self)

        self._engine().add_done_callback(fire)

    async def initial_metadata(self) -> grpc.aio.Metadata:
        await self._settled()
        if self._call is not None:
            return await self._call.initial_metadata()  # type: ignore[no-any-return]
        return grpc.aio.Metadata()

    async def trailing_metadata(self) -> grpc.aio.Metadata:
        await self._wait_finished()
        if self._call is not None:
            return await self._call.trailing_metadata()  # type: ignore[no-any-return]
        return grpc.aio.Metadata()

    async def code(self) -> grpc.StatusCode:
        await self._wait_finished()
        if isinstance(self._explanation, grpc.aio.AioRpcError):
            return self._explanation.code()
        if self._call is not None:
            return await self._call.code()  # type: ignore[no-any-return]
        if isinstance(self._error, grpc.aio.AioRpcError):
            return self._error.code()
        return grpc.StatusCode.CANCELLED

    async def details(self) -> str:
        await self._wait_finished()
        if isinstance(self._explanation, grpc.aio.AioRpcError):
            return self._explanation.details() or ""
        if self._call is not None:
            return await self._call.details()  # type: ignore[no-any-return]
        if isinstance(self._error, grpc.aio.AioRpcError):
            return self._error.details() or ""
        return "cancelled before an endpoint was chosen"

    async def wait_for_connection(self) -> None:
        await self._engine()
        if self._call is not None:
            await self._call.wait_for_connection()

    async def _wait_finished(self) -> None:
        await self._settled()
        if self._call is not None and self._started_ok():
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await self._call.code()


class _ResponseStream(_MeshCall):
    """Reading side of the two server-streaming kinds."""

    async def read(self) -> Any:
        await self._engine()
        if self._first is not _NOTHING:
            self._answered = True
            message, self._first = self._first, _NOTHING
            if message is EOF:
                self._ended_with(None)
            return message
        try:
            message = await self._call.read()
        except BaseException as error:
            self._ended_with(error)
            explained = error if self._answered else self._explained(error)
            if explained is error:
                raise
            raise explained from error
        self._answered = True
        if message is EOF:
            self._ended_with(None)
        return message

    def __aiter__(self) -> AsyncIterator[Any]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[Any]:
        message = await self.read()  # establishes the call; may be the buffered first message
        if message is EOF:
            return
        yield message
        # From here on the call is fixed: read grpc.aio's call directly, without read()'s checks.
        # (grpc.aio forbids mixing read() with its own async iterator, so read() it is.)
        read = self._call.read
        while True:
            try:
                message = await read()
            except BaseException as error:
                self._ended_with(error)
                raise
            if message is EOF:
                self._ended_with(None)
                return
            yield message


class _RequestStream(_MeshCall):
    """Writing side of the two client-streaming kinds."""

    async def write(self, request: Any) -> None:
        await self._engine()
        try:
            await self._call.write(request)
        except grpc.aio.AioRpcError as error:
            explained = error if self._answered else self._explained(error)
            if explained is error:
                raise
            raise explained from error

    async def done_writing(self) -> None:
        await self._engine()
        await self._call.done_writing()


class MeshUnaryStreamCall(_ResponseStream, grpc.aio.UnaryStreamCall):  # type: ignore[type-arg]
    pass


class MeshStreamUnaryCall(_RequestStream, grpc.aio.StreamUnaryCall):  # type: ignore[type-arg]
    async def _response(self) -> Any:
        await self._engine()
        try:
            response = await self._call
        except BaseException as error:
            self._ended_with(error)
            explained = self._explained(error)
            if explained is error:
                raise
            raise explained from error
        self._ended_with(None)
        return response

    def __await__(self) -> Generator[Any, None, Any]:
        return (yield from self._response().__await__())


class MeshStreamStreamCall(_ResponseStream, _RequestStream, grpc.aio.StreamStreamCall):  # type: ignore[type-arg]
    pass
