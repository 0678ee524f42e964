"""The unary-unary mesh call, run in the caller's own task.

The other kinds establish their call in a task of their own (see :mod:`grpcmesh.client.calls`).
For the most common call that task costs more than the rest of the engine, so awaiting a
``MeshUnaryUnaryCall`` drives the first attempt directly: observation, admission, an endpoint
picked without waiting, the grpc.aio call, its outcome. A task is made only when something
needs one: no endpoint could be picked at once, an attempt failed and is retried, or the call
is asked about (``code()``, ``add_done_callback()``...) before anyone awaited it. A call not
awaited in the step that created it starts in a task on the loop's next turn, as a grpc.aio call
would be under way: ``calls = [stub.M(r) for r in requests]`` still runs them together.

While the first attempt runs in the caller's task, the call's grpc.aio call is in flight, so
``cancel()`` cancels that call, and cancelling the caller's task cancels it too (grpc.aio's own
task is what the caller waits on), as it did through the engine's task.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Generator
from typing import Any

import grpc

from grpcmesh.client.calls import _mark_retrieved, _MeshCall

_IDLE, _RUNNING, _DONE = 0, 1, 2  # the call's progress in the caller's task (until a task takes over)


class MeshUnaryUnaryCall(_MeshCall, grpc.aio.UnaryUnaryCall):  # type: ignore[type-arg]
    """A unary-unary call whose first attempt runs in the awaiting task (see the module docstring)."""

    _lazy = True

    _state = _IDLE
    _response: Any = None
    _outcome: BaseException | None = None  # what awaiting the call raises, once it ran in the caller's task
    _settled_waiter: asyncio.Future[None] | None = None  # made only if someone waits while it runs
    _callbacks: list[Callable[[Any], None]] | None = None  # done callbacks added while it runs

    def __await__(self) -> Generator[Any, None, Any]:
        if self._task is not None:
            return (yield from self._task.__await__())
        if self._state != _IDLE:  # awaited again while it runs, or after it ran
            while self._state == _RUNNING and self._task is None:
                yield from self._wait_running().__await__()
            if self._task is not None:
                return (yield from self._task.__await__())
            if self._outcome is not None:
                raise self._outcome
            return self._response
        # The first attempt, in the caller's task (inline, not a generator of its own: each
        # resumption passes through every generator frame of the chain).
        host = self._host
        spec = self._spec
        options = self._options
        self._state = _RUNNING
        exclude: set[str] | None = None
        try:
            self._finish = host.begin_call(spec, options)
            now = time.monotonic()  # one reading for admission, the pick and the attempt's start
            refused = host.admit(spec, options, now)
            if refused is not None:  # spent deadline or client-side throttling: nothing is sent
                self._fail(refused)
                raise refused
            sub = host.pick_now(options.request_key, now)
            if sub is not None:
                call = self._start_attempt(sub, self._request, now)
                try:
                    response = yield from call.__await__()
                except BaseException as error:
                    self._end_attempt(error)
                    self._error = error
                    if not host.may_retry(spec.method, error):
                        explained = self._explained(error)
                        if explained is error:
                            raise
                        raise explained from error
                    exclude = {sub.id}
                else:
                    self._sub = None
                    host.attempt_ended(sub, self._started, None)
                    if not self._ended:  # _end_call(None), inline
                        self._ended = True
                        finish = self._finish
                        if finish is not None:
                            finish(grpc.StatusCode.OK, None)
                    self._response = response
                    self._state = _DONE
                    if self._settled_waiter is not None or self._callbacks:
                        self._ran(None)
                    return response
        except BaseException as error:
            self._end_attempt(error)
            self._end_call(error)
            self._ran(error)
            raise
        # No endpoint at once, or a retry: a task takes over (it may wait, and can be cancelled).
        task = self._task = asyncio.get_running_loop().create_task(self._establish(exclude, admitted=True))
        task.add_done_callback(self._hand_over_callbacks)
        self._wake_waiters()
        return (yield from task.__await__())

    def _start_if_idle(self) -> None:
        if self._task is None and self._state == _IDLE:
            self._engine()

    def _ran(self, error: BaseException | None) -> None:
        """The call ended in the caller's task: tell whoever waits or asked to be called back."""
        self._outcome = error
        self._state = _DONE
        self._wake_waiters()
        callbacks = self._callbacks
        if callbacks:
            self._callbacks = None
            loop = asyncio.get_running_loop()
            for callback in callbacks:
                loop.call_soon(callback, self)

    def _hand_over_callbacks(self, task: asyncio.Task[Any]) -> None:
        if not task.cancelled():
            task.exception()  # retrieved: like a grpc.aio call, an unawaited failure is not logged
        callbacks = self._callbacks
        if callbacks:
            self._callbacks = None
            for callback in callbacks:
                callback(self)

    def _wake_waiters(self) -> None:
        waiter = self._settled_waiter
        if waiter is not None:
            self._settled_waiter = None
            if not waiter.done():
                waiter.set_result(None)

    async def _wait_running(self) -> None:
        waiter = self._settled_waiter
        if waiter is None:
            waiter = self._settled_waiter = asyncio.get_running_loop().create_future()
        await asyncio.shield(waiter)

    async def _settled(self) -> None:
        with contextlib.suppress(Exception, asyncio.CancelledError):
            while self._state == _RUNNING and self._task is None:
                await self._wait_running()
            if self._state == _IDLE or self._task is not None:
                await asyncio.shield(self._engine())

    def _started_ok(self) -> bool:
        if self._task is None:
            return self._state == _DONE and self._outcome is None
        return super()._started_ok()

    # -- grpc.aio.Call surface that must not start a task while the call runs in the caller's ----

    def done(self) -> bool:
        if self._task is None and self._state != _IDLE:
            return self._state == _DONE
        return super().done()

    def cancel(self) -> bool:
        if self._task is None:
            if self._state == _IDLE:
                # Never started: it ends cancelled without being sent or observed.
                task = self._task = asyncio.get_running_loop().create_task(self._establish())
                task.add_done_callback(_mark_retrieved)
                return task.cancel()
            # Running: the attempt is in flight and cancelling it ends the call (never retried).
            return self._state == _RUNNING and self._call is not None and bool(self._call.cancel())
        return super().cancel()

    def add_done_callback(self, callback: Callable[[Any], None]) -> None:
        if self._task is None and self._state != _IDLE:
            if self._state == _DONE:
                asyncio.get_running_loop().call_soon(callback, self)
            elif self._callbacks is None:
                self._callbacks = [callback]
            else:
                self._callbacks.append(callback)
            return
        super().add_done_callback(callback)

    async def wait_for_connection(self) -> None:
        await self._settled()
        if self._task is not None:
            await self._task
        elif self._outcome is not None:
            raise self._outcome
        if self._call is not None:
            await self._call.wait_for_connection()
