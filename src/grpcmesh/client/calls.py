"""Call objects returned by the mesh channel's multicallables, for all four RPC kinds.

Each looks like the ``grpc.aio`` call it stands for (awaitable and/or async-iterable, with
``code()``, ``details()``, metadata, ``cancel()``...), but first picks an endpoint and may
move the call to another one:

* unary-unary: an attempt that fails with UNAVAILABLE before the request left (no
  connection could be made) is retried once on another endpoint; with the method opted in
  (``retry_methods``) any UNAVAILABLE is retried once.
* unary-stream: the same, as long as no response message has reached the caller yet.
* stream-unary, stream-stream: the request stream is the caller's and cannot be replayed,
  so the endpoint is chosen *before* anything is sent: if its connection is not ready
  within the deadline (at most ``connect_timeout``), it counts as a connection failure and
  a second endpoint is used. Once the call has started it is never moved.

Every retry stays within the call's deadline, which every attempt receives as its timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
from collections.abc import AsyncIterator, Callable, Generator
from dataclasses import dataclass
from typing import Any, Protocol

import grpc
from grpc.aio import EOF  # type: ignore[attr-defined]

from grpcmesh.client.errors import MeshRpcError
from grpcmesh.client.subchannel import SubChannel

UNARY_UNARY = "unary_unary"
UNARY_STREAM = "unary_stream"
STREAM_UNARY = "stream_unary"
STREAM_STREAM = "stream_stream"

CALLEE: contextvars.ContextVar[str] = contextvars.ContextVar("grpcmesh_callee", default="")
"""The mesh service a ``MeshChannel`` call is addressed to, seen by the client interceptors of its
attempts (the metrics' ``callee`` label); empty outside a mesh channel's call."""


@dataclass(frozen=True)
class MethodSpec:
    """What a stub told the channel about one method."""

    kind: str
    method: str
    serializer: Any
    deserializer: Any
    registered: bool


@dataclass(slots=True)
class CallOptions:
    """Per-call arguments, passed to every attempt unchanged (except the shrinking timeout).

    Not frozen: a frozen dataclass's ``__init__`` goes through ``object.__setattr__`` per
    field, and one of these is made per call. Nothing mutates it after construction.
    """

    deadline: float | None
    metadata: Any
    credentials: grpc.CallCredentials | None
    wait_for_ready: bool | None
    compression: grpc.Compression | None
    request_key: str | None


class CallHost(Protocol):
    """What a call needs from its channel."""

    service: str

    async def acquire(
        self, request_key: str | None, exclude: set[str], deadline: float | None, wait_for_ready: bool
    ) -> SubChannel | None: ...

    def pick_now(self, request_key: str | None) -> SubChannel | None: ...

    def attempt_started(self, sub: SubChannel) -> float: ...

    def attempt_ended(self, sub: SubChannel, started: float, error: BaseException | None) -> None: ...

    def may_retry(self, method: str, error: BaseException) -> bool: ...

    async def ensure_connected(self, sub: SubChannel, deadline: float | None) -> bool: ...


def _now() -> float:
    return asyncio.get_running_loop().time()


def _remaining(deadline: float | None) -> float | None:
    return None if deadline is None else deadline - _now()


def _mark_retrieved(task: asyncio.Task[Any]) -> None:
    """Like a grpc.aio call, a mesh call nobody awaits must not log "exception never retrieved"."""
    if not task.cancelled():
        task.exception()


def _deadline_error(spec: MethodSpec) -> MeshRpcError:
    return MeshRpcError(grpc.StatusCode.DEADLINE_EXCEEDED, f"deadline exceeded before {spec.method} could be sent")


class _MeshCall:
    """Shared plumbing: the establishing task, the current attempt, status accessors."""

    def __init__(self, host: CallHost, spec: MethodSpec, options: CallOptions) -> None:
        self._host = host
        self._spec = spec
        self._options = options
        self._call: Any = None
        self._error: BaseException | None = None
        context = contextvars.copy_context()  # the callee is set for this call's attempts only
        context.run(CALLEE.set, host.service)
        self._task: asyncio.Task[Any] = asyncio.get_running_loop().create_task(self._start(), context=context)
        self._task.add_done_callback(_mark_retrieved)

    async def _start(self) -> Any:
        raise NotImplementedError

    def _attempt_kwargs(self) -> dict[str, Any]:
        remaining = _remaining(self._options.deadline)
        if remaining is not None and remaining <= 0:
            raise _deadline_error(self._spec)
        return {
            "timeout": remaining,
            "metadata": self._options.metadata,
            "credentials": self._options.credentials,
            "compression": self._options.compression,
        }

    async def _acquire(self, exclude: set[str]) -> SubChannel | None:
        try:
            return await self._host.acquire(
                self._options.request_key, exclude, self._options.deadline, bool(self._options.wait_for_ready)
            )
        except MeshRpcError as exc:
            self._fail(exc)
            raise

    async def _settled(self) -> None:
        with contextlib.suppress(Exception, asyncio.CancelledError):
            await asyncio.shield(self._task)

    # -- grpc.aio.Call surface -----------------------------------------------------------

    def cancelled(self) -> bool:
        if self._call is not None:
            return bool(self._call.cancelled())
        return self._task.cancelled()

    def done(self) -> bool:
        if self._call is not None and self._started_ok():
            return bool(self._call.done())
        return self._task.done()

    def _started_ok(self) -> bool:
        """True once the call is established on an endpoint (the task ended without error)."""
        return self._task.done() and not self._task.cancelled() and self._task.exception() is None

    def time_remaining(self) -> float | None:
        remaining = _remaining(self._options.deadline)
        return None if remaining is None else max(0.0, remaining)

    def cancel(self) -> bool:
        cancelled = False
        if self._call is not None:
            cancelled = bool(self._call.cancel())
        if not self._task.done():
            cancelled = self._task.cancel() or cancelled
        return cancelled

    def add_done_callback(self, callback: Callable[[Any], None]) -> None:
        def fire(_: Any) -> None:
            callback(self)

        self._task.add_done_callback(fire)

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
        if self._call is not None:
            return await self._call.code()  # type: ignore[no-any-return]
        if isinstance(self._error, grpc.aio.AioRpcError):
            return self._error.code()
        return grpc.StatusCode.CANCELLED

    async def details(self) -> str:
        await self._wait_finished()
        if self._call is not None:
            return await self._call.details()  # type: ignore[no-any-return]
        if isinstance(self._error, grpc.aio.AioRpcError):
            return self._error.details() or ""
        return "cancelled before an endpoint was chosen"

    async def wait_for_connection(self) -> None:
        await self._task
        if self._call is not None:
            await self._call.wait_for_connection()

    async def _wait_finished(self) -> None:
        await self._settled()
        if self._call is not None and self._started_ok():
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await self._call.code()

    def _fail(self, error: BaseException) -> None:
        self._error = error
        self._call = None if isinstance(error, MeshRpcError) else self._call


class MeshUnaryUnaryCall(_MeshCall, grpc.aio.UnaryUnaryCall):  # type: ignore[type-arg]
    def __init__(self, host: CallHost, spec: MethodSpec, options: CallOptions, request: Any) -> None:
        self._request = request
        super().__init__(host, spec, options)

    async def _start(self) -> Any:
        host = self._host
        spec = self._spec
        options = self._options
        # The common case, without awaiting acquire(): an endpoint can be picked right away.
        sub = host.pick_now(options.request_key)
        exclude: set[str] = set()
        retried = False
        while True:
            if sub is None:
                sub = await self._acquire(exclude)
                if sub is None:  # only after a failed attempt: nowhere else to go
                    assert self._error is not None
                    raise self._error
            if options.deadline is None:
                timeout = None
            else:
                timeout = options.deadline - _now()
                if timeout <= 0:
                    error = _deadline_error(spec)
                    self._fail(error)
                    raise error
            call = sub.multicallable_for(spec)(
                self._request,
                timeout=timeout,
                metadata=options.metadata,
                credentials=options.credentials,
                compression=options.compression,
            )
            self._call = call
            started = host.attempt_started(sub)
            try:
                response = await call
            except BaseException as exc:
                host.attempt_ended(sub, started, exc)
                self._error = exc
                if retried or not host.may_retry(spec.method, exc):
                    raise
                retried = True
                exclude.add(sub.id)
                sub = None
                continue
            host.attempt_ended(sub, started, None)
            return response

    def __await__(self) -> Generator[Any, None, Any]:
        return (yield from self._task.__await__())


class _ResponseStream:
    """Reading side shared by the two server-streaming kinds."""

    _task: asyncio.Task[Any]
    _call: Any
    _first: Any
    _finished_reported: bool
    _host: CallHost
    _sub: SubChannel | None
    _started: float

    async def read(self) -> Any:
        await self._task
        if self._first is not _NOTHING:
            message, self._first = self._first, _NOTHING
            if message is EOF:
                self._report(None)
            return message
        try:
            message = await self._call.read()
        except BaseException as exc:
            self._report(exc)
            raise
        if message is EOF:
            self._report(None)
        return message

    def _report(self, error: BaseException | None) -> None:
        if not self._finished_reported and self._sub is not None:
            self._finished_reported = True
            self._host.attempt_ended(self._sub, self._started, error)

    def _report_when_done(self, call: Any) -> None:
        """Count the call as ended even if the caller abandons the stream without reading to EOF."""

        def done(_: Any) -> None:
            self._report(None)

        call.add_done_callback(done)

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
            except BaseException as exc:
                self._report(exc)
                raise
            if message is EOF:
                self._report(None)
                return
            yield message


_NOTHING = object()


class MeshUnaryStreamCall(_ResponseStream, _MeshCall, grpc.aio.UnaryStreamCall):  # type: ignore[type-arg]
    def __init__(self, host: CallHost, spec: MethodSpec, options: CallOptions, request: Any) -> None:
        self._request = request
        self._first = _NOTHING
        self._finished_reported = False
        self._sub = None
        self._started = 0.0
        _MeshCall.__init__(self, host, spec, options)

    async def _start(self) -> None:
        """Start attempts until one delivers its first message (or EOF), retrying as allowed."""
        exclude: set[str] = set()
        retried = False
        while True:
            sub = await self._acquire(exclude)
            if sub is None:
                assert self._error is not None
                raise self._error
            try:
                kwargs = self._attempt_kwargs()
            except MeshRpcError as exc:
                self._fail(exc)
                raise
            call = sub.multicallable(
                self._spec.kind,
                self._spec.method,
                self._spec.serializer,
                self._spec.deserializer,
                self._spec.registered,
            )(self._request, **kwargs)
            self._call = call
            started = self._host.attempt_started(sub)
            try:
                first = await call.read()
            except BaseException as exc:
                self._host.attempt_ended(sub, started, exc)
                self._error = exc
                if retried or not self._host.may_retry(self._spec.method, exc):
                    raise
                retried = True
                exclude.add(sub.id)
                continue
            self._sub, self._started, self._first = sub, started, first
            self._report_when_done(call)
            return


class _RequestStreamCall(_MeshCall):
    """Client-streaming kinds: the endpoint is fixed before the first request is sent."""

    def __init__(self, host: CallHost, spec: MethodSpec, options: CallOptions, request_iterator: Any) -> None:
        self._request_iterator = request_iterator
        self._first = _NOTHING
        self._finished_reported = False
        self._sub: SubChannel | None = None
        self._started = 0.0
        super().__init__(host, spec, options)

    async def _start(self) -> None:
        exclude: set[str] = set()
        sub = await self._acquire(exclude)
        assert sub is not None
        if not await self._host.ensure_connected(sub, self._options.deadline):
            exclude.add(sub.id)
            sub = await self._acquire(exclude) or sub
        try:
            kwargs = self._attempt_kwargs()
        except MeshRpcError as exc:
            self._fail(exc)
            raise
        call = sub.multicallable(
            self._spec.kind, self._spec.method, self._spec.serializer, self._spec.deserializer, self._spec.registered
        )(self._request_iterator, **kwargs)
        self._call = call
        self._sub = sub
        self._started = self._host.attempt_started(sub)

    def _report(self, error: BaseException | None) -> None:
        if not self._finished_reported and self._sub is not None:
            self._finished_reported = True
            self._host.attempt_ended(self._sub, self._started, error)

    async def write(self, request: Any) -> None:
        await self._task
        await self._call.write(request)

    async def done_writing(self) -> None:
        await self._task
        await self._call.done_writing()


class MeshStreamUnaryCall(_RequestStreamCall, grpc.aio.StreamUnaryCall):  # type: ignore[type-arg]
    async def _response(self) -> Any:
        await self._task
        try:
            response = await self._call
        except BaseException as exc:
            self._report(exc)
            raise
        self._report(None)
        return response

    def __await__(self) -> Generator[Any, None, Any]:
        return (yield from self._response().__await__())


class MeshStreamStreamCall(_ResponseStream, _RequestStreamCall, grpc.aio.StreamStreamCall):  # type: ignore[type-arg]
    async def _start(self) -> None:
        await _RequestStreamCall._start(self)
        self._report_when_done(self._call)
