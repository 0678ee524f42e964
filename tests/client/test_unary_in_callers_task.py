"""A unary-unary call through MeshChannel runs in the caller's task, with every grpc.aio.Call behaviour kept."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Coroutine, Generator
from typing import Any, TypeVar

import grpc
import pytest

from grpcmesh import Registry, ServiceInstance
from grpcmesh.client import MeshChannel
from grpcmesh.middleware.client_side import ClientCall, ClientObservation
from grpcmesh.protos import echo_pb2, echo_pb2_grpc
from grpcmesh.testing import EchoServicer

SERVICE = "inline-echo"
_T = TypeVar("_T")


@pytest.fixture
async def echo_port(registry: Registry) -> AsyncIterator[int]:
    server = grpc.aio.server()
    echo_pb2_grpc.add_EchoServicer_to_server(EchoServicer("inline"), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    instance = ServiceInstance(name=SERVICE, id="inline", address="127.0.0.1", port=port)
    await registry.register(instance)
    yield port
    await registry.deregister(instance)
    await server.stop(None)


class _TaskCounter:
    """Counts the tasks the loop creates (a task factory that only counts)."""

    def __init__(self) -> None:
        self.created = 0

    def __call__(
        self,
        loop: asyncio.AbstractEventLoop,
        coro: Generator[Any, None, _T] | Coroutine[Any, Any, _T],
        /,
        **kwargs: Any,
    ) -> asyncio.Future[_T]:
        self.created += 1
        return asyncio.Task(coro, loop=loop, **kwargs)


async def _tasks_made_by(make_call: Any) -> int:
    loop = asyncio.get_running_loop()
    counter = _TaskCounter()
    loop.set_task_factory(counter)
    try:
        await make_call()
    finally:
        loop.set_task_factory(None)
    return counter.created


async def test_an_awaited_unary_call_makes_no_more_tasks_than_grpc_aio(registry: Registry, echo_port: int) -> None:
    request = echo_pb2.EchoRequest(message="x")
    async with grpc.aio.insecure_channel(f"127.0.0.1:{echo_port}") as bare, MeshChannel(registry, SERVICE) as mesh:
        bare_stub = echo_pb2_grpc.EchoStub(bare)
        mesh_stub = echo_pb2_grpc.EchoStub(mesh)
        await bare_stub.Unary(request, timeout=5)  # both connected before counting
        await mesh_stub.Unary(request, timeout=5)

        async def bare_call() -> None:
            await bare_stub.Unary(request, timeout=5)

        async def mesh_call() -> None:
            await mesh_stub.Unary(request, timeout=5)

        assert await _tasks_made_by(mesh_call) == await _tasks_made_by(bare_call)


async def test_cancel_from_another_task_while_the_call_runs_in_its_callers(registry: Registry, echo_port: int) -> None:
    codes: list[grpc.StatusCode | None] = []

    def observe(call: ClientCall) -> Any:
        return lambda done: codes.append(done.code)

    async with MeshChannel(registry, SERVICE, observer=ClientObservation([observe])) as channel:
        stub = echo_pb2_grpc.EchoStub(channel)
        await stub.Unary(echo_pb2.EchoRequest(), timeout=5)
        call = stub.Unary(echo_pb2.EchoRequest(delay_ms=5000), timeout=10)
        awaiting = asyncio.get_running_loop().create_task(_await(call))
        while channel.stats().per_endpoint[0].outstanding == 0:  # the caller's task sent it
            await asyncio.sleep(0.01)
        assert not call.done()
        assert call.cancel()
        with pytest.raises(asyncio.CancelledError):
            await awaiting
        assert call.cancelled()
        assert call.done()
        assert await call.code() is grpc.StatusCode.CANCELLED
        assert [e.outstanding for e in channel.stats().per_endpoint] == [0]
        assert codes == [grpc.StatusCode.OK, grpc.StatusCode.CANCELLED]


async def _await(call: Any) -> Any:
    return await call


async def test_questions_and_callbacks_while_it_runs_see_the_final_outcome(registry: Registry, echo_port: int) -> None:
    async with MeshChannel(registry, SERVICE) as channel:
        stub = echo_pb2_grpc.EchoStub(channel)
        await stub.Unary(echo_pb2.EchoRequest(), timeout=5)  # the endpoint is known
        call = stub.Unary(echo_pb2.EchoRequest(message="m", delay_ms=300), timeout=10)
        awaiting = asyncio.get_running_loop().create_task(_await(call))
        while channel.stats().per_endpoint[0].outstanding == 0:
            await asyncio.sleep(0.01)
        fired: list[Any] = []
        call.add_done_callback(fired.append)
        second_await = asyncio.get_running_loop().create_task(_await(call))
        code, details = await asyncio.gather(call.code(), call.details())
        assert code is grpc.StatusCode.OK
        assert details == ""
        first = await awaiting
        assert first.message == "m"
        assert (await second_await).message == "m"
        assert (await call).message == "m"  # awaited again once done
        while not fired:
            await asyncio.sleep(0.01)
        assert fired == [call]
        late: list[Any] = []
        call.add_done_callback(late.append)
        while not late:
            await asyncio.sleep(0.01)
        assert late == [call]
        assert call.done()
        assert not call.cancelled()


async def test_asked_before_awaited_it_runs_in_a_task(registry: Registry, echo_port: int) -> None:
    async with MeshChannel(registry, SERVICE) as channel:
        stub = echo_pb2_grpc.EchoStub(channel)
        call = stub.Unary(echo_pb2.EchoRequest(message="q"), timeout=5)
        assert await call.code() is grpc.StatusCode.OK
        assert (await call).message == "q"

        failing = stub.Unary(echo_pb2.EchoRequest(fail_code=grpc.StatusCode.NOT_FOUND.value[0]), timeout=5)
        fired: list[Any] = []
        failing.add_done_callback(fired.append)
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await failing
        assert info.value.code() is grpc.StatusCode.NOT_FOUND
        assert await failing.code() is grpc.StatusCode.NOT_FOUND
        while not fired:
            await asyncio.sleep(0.01)
        assert fired == [failing]

        untouched = stub.Unary(echo_pb2.EchoRequest(), timeout=5)
        assert untouched.cancel()  # cancelled before it started: never sent
        with pytest.raises(asyncio.CancelledError):
            await untouched
        assert untouched.cancelled()
        assert await untouched.code() is grpc.StatusCode.CANCELLED


async def test_a_failed_call_in_the_callers_task_raises_the_same_error_when_awaited_again(
    registry: Registry, echo_port: int
) -> None:
    async with MeshChannel(registry, SERVICE) as channel:
        stub = echo_pb2_grpc.EchoStub(channel)
        call = stub.Unary(echo_pb2.EchoRequest(fail_code=grpc.StatusCode.PERMISSION_DENIED.value[0]), timeout=5)
        with pytest.raises(grpc.aio.AioRpcError) as first:
            await call
        with pytest.raises(grpc.aio.AioRpcError) as again:
            await call
        assert first.value.code() is again.value.code() is grpc.StatusCode.PERMISSION_DENIED
        assert call.done()
        assert not call.cancelled()
        assert await call.code() is grpc.StatusCode.PERMISSION_DENIED


async def test_unary_calls_created_together_run_together(registry: Registry, echo_port: int) -> None:
    """Like grpc.aio, a unary call not awaited at once is under way: calls created together and
    then awaited one after another overlap on the server instead of running one at a time."""
    async with MeshChannel(registry, SERVICE) as channel:
        stub = echo_pb2_grpc.EchoStub(channel)
        await stub.Unary(echo_pb2.EchoRequest(), timeout=5)  # connected
        calls = [stub.Unary(echo_pb2.EchoRequest(message=str(n), delay_ms=3000), timeout=30) for n in range(4)]
        # Nothing awaited yet: after a few loop turns all four are on the wire at once.
        async with asyncio.timeout(20):  # bounded: a call that waits to be awaited never gets there
            while channel.stats().per_endpoint[0].outstanding < 4:
                await asyncio.sleep(0.01)
        replies = [await call for call in calls]
        assert [r.message for r in replies] == ["0", "1", "2", "3"]


async def test_calls_left_unawaited_start_next_turn_in_order_and_a_failing_one_stops_none(
    registry: Registry, echo_port: int, caplog: pytest.LogCaptureFixture
) -> None:
    """One loop callback per turn starts every call the channel made in it, in order; a call
    that cannot start is logged and the rest still start."""
    started: list[int] = []

    class Pending:
        def __init__(self, number: int) -> None:
            self.number = number

        def _start_if_idle(self) -> None:
            started.append(self.number)
            if self.number == 1:
                raise RuntimeError("cannot start")

    async with MeshChannel(registry, SERVICE) as channel:
        host = channel._host
        for number in range(3):
            host.start_later(Pending(number))
        assert started == []  # nothing before the loop's next turn
        await asyncio.sleep(0)
        assert started == [0, 1, 2]
        host.start_later(Pending(3))  # a later turn gets a callback of its own
        await asyncio.sleep(0)
        assert started == [0, 1, 2, 3]
    assert "could not start a call" in caplog.text
