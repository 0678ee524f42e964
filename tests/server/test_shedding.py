"""The adaptive load shedder (grpcmesh.server.shedding) on a fake clock, and its lag probe."""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections.abc import AsyncIterator

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from grpcmesh import Registry
from grpcmesh.client import MeshChannel
from grpcmesh.client.settings import CallSettings
from grpcmesh.client.throttle import ThrottlePolicy
from grpcmesh.errors import ConfigError
from grpcmesh.middleware.server_side import ServerCall, ServerConcern
from grpcmesh.protos import echo_pb2, echo_pb2_grpc
from grpcmesh.server import MeshServer, ServerSettings
from grpcmesh.server.admission import SHED_DETAILS, ShedCallsCollector
from grpcmesh.server.shedding import LoadShedder, SheddingPolicy, never_shed
from grpcmesh.testing import EchoServicer


@contextlib.asynccontextmanager
async def shedding_server(
    registry: Registry, name: str, policy: SheddingPolicy, servicer: echo_pb2_grpc.EchoServicer
) -> AsyncIterator[tuple[MeshServer, echo_pb2_grpc.EchoStub, health_pb2_grpc.HealthStub]]:
    """A ``MeshServer`` shedding with ``policy``, an echo stub on a mesh channel to it, and a health stub
    on a plain channel; the server is stopped on the way out.

    The mesh channel sends each call's timeout, so the server sees how long calls queued;
    client-side throttling is off, because these tests are about the server.
    """
    server = MeshServer(registry, ServerSettings(name=name, propagation_delay=0), shedding=policy)
    echo_pb2_grpc.add_EchoServicer_to_server(servicer, server.grpc)
    await server.start()
    try:
        unthrottled = CallSettings(throttle=ThrottlePolicy(enabled=False))
        async with (
            MeshChannel(registry, name, settings=unthrottled) as channel,
            grpc.aio.insecure_channel(server.target) as plain,
        ):
            yield server, echo_pb2_grpc.EchoStub(channel), health_pb2_grpc.HealthStub(plain)
    finally:
        await server.stop()


class Clock:
    def __init__(self) -> None:
        self.now = 500.0

    def __call__(self) -> float:
        return self.now


def shedder(**policy: object) -> tuple[LoadShedder, Clock]:
    clock = Clock()
    return LoadShedder(SheddingPolicy(enabled=True, **policy), clock), clock  # type: ignore[arg-type]


def test_a_server_that_does_not_lag_never_sheds() -> None:
    load, _ = shedder(minimum_in_flight=2)
    assert all(load.admit() for _ in range(1000))
    assert load.in_flight == 1000
    assert load.shed == 0


def test_a_lagging_server_sheds_above_its_shown_capacity() -> None:
    load, clock = shedder(minimum_in_flight=2, window=1.0, max_lag=0.05, cooldown=1.0)
    # It has shown 100 calls per 0.1 s bucket (1000/s) at 10 ms: capacity about 10 in flight.
    for _ in range(100):
        assert load.admit()
        load.finished(0.01)
    load.observe_lag(0.2)
    admitted = sum(load.admit() for _ in range(50))
    assert admitted == 10
    assert load.shed == 40
    # Calls finish, lag falls: within the cooldown the limit still holds, after it nothing is shed.
    for _ in range(10):
        load.finished(0.01)
    for _ in range(30):
        load.observe_lag(0.0)
    assert load.lag < 0.05
    limit = load.limit()  # 110 calls in one 0.1 s bucket at 10 ms: 11
    assert limit == 11
    assert sum(load.admit() for _ in range(20)) == limit  # still limited within the cooldown
    clock.now += 1.5
    assert all(load.admit() for _ in range(20))


def test_disabled_shedder_admits_everything() -> None:
    load = LoadShedder(SheddingPolicy(enabled=False))
    load.observe_lag(10.0)
    assert all(load.admit() for _ in range(100))


def test_health_and_reflection_are_never_shed() -> None:
    assert never_shed("/grpc.health.v1.Health/Check")
    assert never_shed("/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo")
    assert not never_shed("/pkg.Orders/Create")


async def test_the_lag_probe_sees_a_blocked_loop() -> None:
    load = LoadShedder(SheddingPolicy(enabled=True, probe_interval=0.01))
    load.start()
    try:
        await asyncio.sleep(0.05)
        time.sleep(0.3)  # block the loop on purpose
        await asyncio.sleep(0.02)
        assert load.lag >= 0.2
    finally:
        await load.stop()


@pytest.mark.parametrize(
    "bad",
    [{"max_lag": 0}, {"minimum_in_flight": 0}, {"window": -1}, {"arrival_factor": -1}, {"sustained_interval": 0}],
)
def test_bad_policies_are_config_errors(bad: dict[str, float]) -> None:
    with pytest.raises(ConfigError):
        SheddingPolicy(**bad)  # type: ignore[arg-type]


class BusyEcho(EchoServicer):
    """Echo whose every call blocks the event loop for 20 ms, then awaits 50 ms (an overloadable server)."""

    async def Unary(self, request: echo_pb2.EchoRequest, context: grpc.aio.ServicerContext) -> echo_pb2.EchoReply:  # type: ignore[type-arg]
        time.sleep(0.02)
        await asyncio.sleep(0.05)
        return await super().Unary(request, context)


async def test_an_overloaded_server_sheds_but_health_still_answers(registry: Registry) -> None:
    policy = SheddingPolicy(enabled=True, max_lag=0.01, minimum_in_flight=1, probe_interval=0.01)
    async with shedding_server(registry, "busy", policy, BusyEcho("busy")) as (server, stub, health):

        async def call() -> grpc.StatusCode:
            try:
                await stub.Unary(echo_pb2.EchoRequest(), timeout=30)
            except grpc.aio.AioRpcError as exc:
                return exc.code()
            return grpc.StatusCode.OK

        flood = [asyncio.ensure_future(call()) for _ in range(80)]
        await asyncio.sleep(0.3)
        checked = await health.Check(health_pb2.HealthCheckRequest(service=""), timeout=30)
        codes = await asyncio.gather(*flood)
    assert checked.status == health_pb2.HealthCheckResponse.SERVING  # health is never shed
    assert codes.count(grpc.StatusCode.RESOURCE_EXHAUSTED) > 0
    assert codes.count(grpc.StatusCode.OK) > 0
    assert set(codes) <= {grpc.StatusCode.OK, grpc.StatusCode.RESOURCE_EXHAUSTED}
    assert server.shedder.shed == codes.count(grpc.StatusCode.RESOURCE_EXHAUSTED)
    assert server.shedder.in_flight == 0


def test_a_persistent_queueing_delay_sheds_and_a_short_one_does_not() -> None:
    load, clock = shedder(max_queue_delay=0.02, interval=0.1, minimum_in_flight=10)
    assert load.admit(queued=0.05)  # the first late call starts the clock, it is not refused
    clock.now += 0.05
    assert load.admit(queued=0.05)
    clock.now += 0.06
    assert not load.admit(queued=0.05)  # late for longer than the interval: refused
    assert load.admit(queued=0.001)  # a prompt call is served
    clock.now += 0.2
    assert not load.admit(queued=0.05)  # within the cooldown a late call is refused at once
    clock.now += 1.0
    assert load.admit(queued=0.001)  # after it, the queue has drained: the episode ends
    assert load.admit(queued=0.05)  # and a late call starts a new episode's clock


def test_while_shedding_a_late_call_is_refused_and_prompt_ones_fill_the_limit() -> None:
    load, clock = shedder(max_queue_delay=0.02, interval=0.1, minimum_in_flight=3, cooldown=1.0)
    load.admit(queued=0.05)
    clock.now += 0.15
    assert not load.admit(queued=0.05)  # the episode starts: shedding
    assert load.in_flight == 1
    assert [load.admit(queued=0.001) for _ in range(3)] == [True, True, False]  # the limit is 3
    assert not load.admit(queued=0.03)  # late, though in flight would allow it after a finish
    load.finished(0.01)
    assert load.admit(queued=0.001)


def test_a_call_that_queued_longer_than_the_interval_is_refused_at_once() -> None:
    load, _ = shedder(max_queue_delay=0.02, interval=0.1)
    assert load.admit(queued=0.09)  # late, but the queue may be a burst: not yet
    assert not load.admit(queued=0.15)  # its own wait proves the queue persisted
    assert load.admit(queued=0.001)  # prompt calls are still served


def test_queueing_delay_is_read_from_the_mesh_timeout_header() -> None:
    from grpcmesh.server.admission import queueing_delay

    assert queueing_delay((("x-mesh-timeout-ms", "1000"),), 0.75) == pytest.approx(0.25)
    assert queueing_delay((("x-mesh-timeout-ms", "not a number"),), 0.75) is None
    assert queueing_delay((("x-mesh-timeout-ms", "-5"),), 0.75) is None
    assert queueing_delay((), 0.75) is None
    assert queueing_delay((("x-mesh-timeout-ms", "1000"),), None) is None


class GatedEcho(EchoServicer):
    """Echo whose Unary calls wait for ``release`` (so a test holds one call in flight)."""

    def __init__(self) -> None:
        super().__init__("gated")
        self.entered = asyncio.Event()
        self.release = asyncio.Event()

    async def Unary(self, request: echo_pb2.EchoRequest, context: grpc.aio.ServicerContext) -> echo_pb2.EchoReply:  # type: ignore[type-arg]
        self.entered.set()
        await self.release.wait()
        return await super().Unary(request, context)


async def test_a_refused_call_ends_at_once_before_any_concern_runs(registry: Registry) -> None:
    # The probe never samples during the test (60 s), so the lag the test sets stays: overloaded.
    policy = SheddingPolicy(enabled=True, minimum_in_flight=1, probe_interval=60, cooldown=60)
    observed: list[str] = []

    def count(call: ServerCall) -> None:
        observed.append(call.method)

    counting = ServerConcern("count", observe=count)
    server = MeshServer(
        registry, ServerSettings(name="gated", propagation_delay=0), shedding=policy, concerns=[counting]
    )
    servicer = GatedEcho()
    echo_pb2_grpc.add_EchoServicer_to_server(servicer, server.grpc)
    await server.start()
    try:
        async with grpc.aio.insecure_channel(server.target) as channel:
            stub = echo_pb2_grpc.EchoStub(channel)
            held = asyncio.ensure_future(stub.Unary(echo_pb2.EchoRequest(message="held"), timeout=30))
            await asyncio.wait_for(servicer.entered.wait(), 30)
            server.shedder.observe_lag(1.0)
            # Refused while the admitted call is still held: the refusal waits for nothing.
            with pytest.raises(grpc.aio.AioRpcError) as unary:
                await stub.Unary(echo_pb2.EchoRequest(), timeout=30)
            with pytest.raises(grpc.aio.AioRpcError) as streamed:
                async for _ in stub.ServerStream(echo_pb2.EchoRequest(count=2), timeout=30):
                    pass
            checked = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=30)
            assert not held.done()
            servicer.release.set()
            assert (await held).message == "held"
        for refused in (unary.value, streamed.value):
            assert refused.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
            assert refused.details() == SHED_DETAILS
        assert checked.status == health_pb2.HealthCheckResponse.SERVING
        assert observed == ["Unary", "Check"]  # refused calls skipped every concern; admitted ones did not
        assert server.shedder.shed == 2
        assert server.shedder.in_flight == 0
        (family,) = ShedCallsCollector("gated", server.shedder).collect()
        assert family.samples[0].value == 2
    finally:
        await server.stop()


async def test_a_prompt_call_waits_briefly_for_a_slot_instead_of_being_refused() -> None:
    load = LoadShedder(SheddingPolicy(enabled=True, minimum_in_flight=1, max_queue_delay=30.0, probe_interval=60))
    load.observe_lag(1.0)  # overloaded: the in-flight limit (1) applies
    assert await load.enter(0.0)
    waiting = asyncio.ensure_future(load.enter(0.0))
    await asyncio.sleep(0.01)
    assert not waiting.done()  # every slot is taken: it waits rather than being refused
    load.finished(0.01)  # a slot frees: it goes to the waiting call
    assert await asyncio.wait_for(waiting, 30)
    assert (load.in_flight, load.shed) == (1, 0)


async def test_a_call_whose_wait_budget_runs_out_is_refused() -> None:
    load = LoadShedder(SheddingPolicy(enabled=True, minimum_in_flight=1, max_queue_delay=0.05, probe_interval=60))
    load.observe_lag(1.0)
    assert await load.enter(0.0)
    assert not await asyncio.wait_for(load.enter(0.0), 30)  # waited its 50 ms budget: refused
    assert not await load.enter(0.06)  # late already: no wait at all
    assert (load.in_flight, load.shed) == (1, 2)
    load.finished(0.01)
    assert load.in_flight == 0


async def test_a_cancelled_waiting_call_does_not_keep_a_slot() -> None:
    load = LoadShedder(SheddingPolicy(enabled=True, minimum_in_flight=1, max_queue_delay=30.0, probe_interval=60))
    load.observe_lag(1.0)
    assert await load.enter(0.0)
    waiting = asyncio.ensure_future(load.enter(0.0))
    await asyncio.sleep(0.01)
    waiting.cancel()  # the caller went away while it waited
    with pytest.raises(asyncio.CancelledError):
        await waiting
    load.finished(0.01)  # the slot is free again, not handed to the cancelled call
    assert load.in_flight == 0
    assert await load.enter(0.0)


def test_the_queueing_target_follows_the_handlers_own_service_time() -> None:
    load, _ = shedder(queue_delay_factor=0.3, min_queue_delay=0.002, max_queue_delay=0.01)
    assert load.queue_target() == 0.01  # no call has finished yet: the fixed fallback
    assert load.admit()
    load.finished(0.1)  # 100 ms handlers: calls may queue 30 ms
    assert load.queue_target() == pytest.approx(0.03)
    assert load.admit()
    load.finished(0.001)  # a 1 ms handler: the floor
    assert load.queue_target() == 0.002
    fixed, _ = shedder(queue_delay_factor=0, max_queue_delay=0.01)
    assert fixed.admit()
    fixed.finished(0.1)
    assert fixed.queue_target() == 0.01


def test_with_long_handlers_a_call_below_the_relative_target_is_not_late() -> None:
    load, clock = shedder(queue_delay_factor=0.3, interval=0.1, cooldown=1.0)
    assert load.admit()
    load.finished(0.2)  # 200 ms handlers: target 60 ms
    for _ in range(5):  # waits of 50 ms (a fixed 10 ms target would call them late) keep coming
        clock.now += 0.05
        assert load.admit(queued=0.05)
    assert load.shed == 0
    clock.now += 0.05
    assert load.admit(queued=0.07)  # above the target: the episode's clock starts
    clock.now += 0.15
    assert not load.admit(queued=0.07)  # late for longer than the interval: refused


def test_the_persistence_window_follows_the_service_time_up_to_the_interval() -> None:
    load, clock = shedder(queue_delay_factor=0.3, interval=0.1, interval_factor=2.0, min_interval=0.01)
    assert load.persistence_window() == 0.1  # no call has finished yet: the fixed interval
    assert load.admit()
    load.finished(0.02)  # 20 ms handlers: target 6 ms, window 40 ms
    assert load.persistence_window() == pytest.approx(0.04)
    assert load.admit(queued=0.03)  # late, but the queue may still be a burst
    clock.now += 0.045
    assert not load.admit(queued=0.02)  # late for longer than two handler times: refused
    assert not load.admit(queued=0.045)  # and one that alone waited that long is refused at once
    short, _ = shedder(queue_delay_factor=0.3, interval=0.1, min_interval=0.01)
    assert short.admit()
    short.finished(0.001)  # 1 ms handlers: the floor, not 2 ms
    assert short.persistence_window() == 0.01
    for fixed_policy in ({"interval_factor": 0.0}, {"queue_delay_factor": 0.0, "max_queue_delay": 0.006}):
        fixed, _ = shedder(interval=0.1, **fixed_policy)
        assert fixed.admit()
        fixed.finished(0.02)
        assert fixed.persistence_window() == 0.1, fixed_policy
        assert fixed.admit(queued=0.045), fixed_policy  # late, but below the fixed interval
    with pytest.raises(ConfigError, match="interval_factor"):
        SheddingPolicy(interval_factor=-1)
    with pytest.raises(ConfigError, match="min_interval"):
        SheddingPolicy(min_interval=0)


async def test_a_waiter_whose_budget_ran_out_while_the_loop_was_busy_is_not_handed_the_slot() -> None:
    load = LoadShedder(
        SheddingPolicy(enabled=True, minimum_in_flight=1, queue_delay_factor=0, max_queue_delay=0.05, probe_interval=60)
    )
    load.observe_lag(1.0)
    assert await load.enter(0.0)
    waiting = asyncio.ensure_future(load.enter(0.0))
    await asyncio.sleep(0)  # it waits for a slot, its 50 ms budget running
    time.sleep(0.08)  # the loop is busy past the budget: its timer has not fired yet
    load.finished(0.01)  # the slot frees first; the late waiter must not get it
    assert not await asyncio.wait_for(waiting, 30)
    assert (load.in_flight, load.shed) == (0, 1)


async def test_a_refused_unary_call_gets_resource_exhausted_while_admitted_ones_are_served(registry: Registry) -> None:
    # Real server, real mesh channel: with the slot held, a call that waited past its target
    # (the lag makes the limit apply) is refused at once; health is answered throughout.
    policy = SheddingPolicy(
        enabled=True, minimum_in_flight=1, queue_delay_factor=0, max_queue_delay=0.001, probe_interval=60, cooldown=60
    )
    servicer = GatedEcho()
    async with shedding_server(registry, "gated2", policy, servicer) as (server, stub, health):
        held = asyncio.ensure_future(stub.Unary(echo_pb2.EchoRequest(message="held"), timeout=30))
        await asyncio.wait_for(servicer.entered.wait(), 30)
        server.shedder.observe_lag(1.0)
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await stub.Unary(echo_pb2.EchoRequest(), timeout=30)
        checked = await health.Check(health_pb2.HealthCheckRequest(), timeout=30)
        servicer.release.set()
        assert (await held).message == "held"
    assert refused.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
    assert refused.value.details() == SHED_DETAILS
    assert checked.status == health_pb2.HealthCheckResponse.SERVING
    assert (server.shedder.shed, server.shedder.in_flight) == (1, 0)


async def test_a_freed_slot_goes_to_the_newest_waiter() -> None:
    """Adaptive LIFO: under a queue the call admitted is the one that waited least; the older
    waiter keeps waiting within its budget and gets the next slot."""
    load = LoadShedder(SheddingPolicy(enabled=True, minimum_in_flight=1, max_queue_delay=30.0, probe_interval=60))
    load.observe_lag(1.0)  # overloaded: the in-flight limit (1) applies
    assert await load.enter(0.0)
    older = asyncio.ensure_future(load.enter(0.0))
    await asyncio.sleep(0)
    newer = asyncio.ensure_future(load.enter(0.0))
    await asyncio.sleep(0)
    assert not older.done() and not newer.done()  # noqa: PT018 - both wait for the one slot
    load.finished(0.01)
    assert await asyncio.wait_for(newer, 30)
    assert not older.done()
    load.finished(0.01)
    assert await asyncio.wait_for(older, 30)
    assert (load.in_flight, load.shed) == (1, 0)


async def test_a_late_call_before_the_queue_persists_waits_for_a_slot_instead_of_adding_load() -> None:
    load = LoadShedder(
        SheddingPolicy(
            enabled=True,
            minimum_in_flight=1,
            queue_delay_factor=0,
            max_queue_delay=0.02,
            interval=30.0,
            probe_interval=60,
        )
    )
    assert await load.enter(0.0)  # no lag: the limit does not apply to prompt calls...
    assert await load.enter(0.0)
    late = asyncio.ensure_future(load.enter(0.03))  # ...but a late one finding every slot taken waits
    await asyncio.sleep(0.01)
    assert not late.done()
    load.finished(0.01)
    assert not late.done()  # one call still holds the one slot
    load.finished(0.01)
    assert await asyncio.wait_for(late, 30)  # served late rather than refused: the queue may be a burst
    assert (load.in_flight, load.shed) == (1, 0)


def serving(load: LoadShedder, calls: int) -> None:
    """``calls`` prompt calls admitted and finished at once: the server has shown it completes
    ``calls`` per bucket (a tenth of the ``window``)."""
    for _ in range(calls):
        assert load.admit(queued=0.0)
        load.finished(0.01)


FIXED = {"queue_delay_factor": 0, "max_queue_delay": 0.02, "interval": 0.1, "minimum_in_flight": 10}
"""A fixed 20 ms queueing target and 100 ms persistence window; with ``window`` 2 s, buckets of 0.2 s."""


def test_a_random_burst_below_capacity_is_served_late_not_refused() -> None:
    load, clock = shedder(**FIXED, sustained_interval=0.3)
    serving(load, 10)  # 50 calls/s: twice that would be 20 calls in two windows (0.2 s)
    clock.now += 0.25
    for _ in range(5):  # late for 0.2 s, twice the window, but only 5 calls came meanwhile
        assert load.admit(queued=0.05)
        clock.now += 0.05
    assert load.shed == 0
    assert not load.admit(queued=0.3)  # one call waited the sustained interval: that is an overload
    assert not load.admit(queued=0.05)  # and the episode refuses late calls
    assert load.shed == 2


def test_calls_arriving_at_twice_the_capacity_shed_once_the_queue_persists() -> None:
    load, clock = shedder(**FIXED, sustained_interval=10.0)
    serving(load, 10)
    clock.now += 0.25
    admitted = []
    for _ in range(30):  # 200 calls/s, all of them late
        admitted.append(load.admit(queued=0.05))
        clock.now += 0.005
    assert all(admitted[:20])  # until the queue has persisted for the window (0.1 s)
    assert not any(admitted[21:])  # then, with 20 calls in 0.2 s, every late call is refused
    for _ in range(sum(admitted)):
        load.finished(0.01)
    assert load.admit(queued=0.001)  # prompt calls are still served


def test_with_arrival_factor_0_every_persistent_queue_sheds() -> None:
    load, clock = shedder(**FIXED, sustained_interval=10.0, arrival_factor=0)
    serving(load, 10)
    clock.now += 0.25
    assert load.admit(queued=0.05)
    clock.now += 0.11
    assert not load.admit(queued=0.05)  # late for longer than the window, two calls only: refused


def test_an_episode_ends_once_the_server_is_seen_idle() -> None:
    load, clock = shedder(**FIXED, arrival_factor=0, cooldown=60.0)
    assert not load.admit(queued=0.2)  # waited longer than the window: an episode starts
    assert load.admit(queued=0.001)
    clock.now += 0.05
    assert not load.admit(queued=0.05)  # a call in flight: still shedding
    load.finished(0.05)  # nothing in flight now...
    clock.now += 0.05
    assert not load.admit(queued=0.05)  # ...but for less than the window: refusing was work
    clock.now += 0.11
    assert load.admit(queued=0.001)  # idle for longer than the window: no standing queue
    assert load.admit(queued=0.05)  # so a late call only starts a new episode's clock
    assert load.shed == 3


async def test_a_late_call_that_waited_out_its_budget_below_capacity_is_served() -> None:
    def slotted(**policy: float) -> LoadShedder:
        load = LoadShedder(
            SheddingPolicy(
                enabled=True, minimum_in_flight=1, queue_delay_factor=0, max_queue_delay=0.01, interval=0.05, **policy
            )
        )
        serving(load, 10)  # 50 calls/s, handlers of 10 ms: one slot
        return load

    calm, eager = slotted(), slotted(arrival_factor=0)
    await asyncio.sleep(0.15)  # the calls that showed the capacity are older than two windows
    for load in (calm, eager):
        assert await load.enter(0.0)  # holds the one slot
    # Late, every slot taken: each waits out what is left of the window (30 ms); then only
    # the server that counts every persistent queue as an overload refuses it.
    assert await asyncio.wait_for(calm.enter(0.02), 30)
    assert not await asyncio.wait_for(eager.enter(0.02), 30)
    assert (calm.in_flight, calm.shed, eager.in_flight, eager.shed) == (2, 0, 1, 1)


@pytest.mark.parametrize("timeout", [0.005, 0.25, 0.999, 1.0, 1.0004, 2.5, 9.999, 10.0, 12.345, 99.99, 250.0, 999.9])
def test_the_timeout_header_is_what_grpc_sends_as_grpc_timeout(timeout: float) -> None:
    """The call's timeout is lowered (by at most 15 ms) so that grpc's ``grpc-timeout`` (whole ms
    below 1 s, then rounded up to 3 significant digits) is the same for every instant it may be
    reckoned at, and the ``x-mesh-timeout-ms`` header carries exactly that value."""
    from grpcmesh.context import _grpc_encoded_ms, encodable_timeout

    given, sent = encodable_timeout(timeout)
    assert 0 <= timeout - given <= 0.015
    millis = round(given * 1000, 6)  # the float of a whole number of ms
    if millis + 2 <= 1000:
        assert sent == round(millis)
    else:
        assert {_grpc_encoded_ms(math.floor(millis) - 3), _grpc_encoded_ms(math.ceil(millis) + 2)} == {sent}
        assert sent >= millis  # grpc rounds up: the server's deadline never ends before the client's


def test_grpc_timeout_encoding_rounds_up_to_three_significant_digits() -> None:
    from grpcmesh.context import _grpc_encoded_ms

    assert [_grpc_encoded_ms(m) for m in (999, 1000, 1001, 9991, 10_001, 123_456)] == [
        999,
        1000,
        1010,
        10_000,
        10_100,
        124_000,
    ]
