"""The registry toolkit: backoff, bounded warn-once, and the watch hub's bookkeeping and resilience."""

from __future__ import annotations

import asyncio
import logging

import pytest

from grpcmesh import ServiceInstance
from grpcmesh._backoff import Backoff, equal_jitter_delay
from grpcmesh.errors import RegistryClosedError
from grpcmesh.registry._hub import Topic, WatchHub
from grpcmesh.registry._warn import WarnOnce
from grpcmesh.registry.base import Snapshot
from tests.helpers import next_matching


def inst(iid: str) -> ServiceInstance:
    return ServiceInstance(name="svc", id=iid, address="127.0.0.1", port=1)


def test_equal_jitter_stays_in_the_upper_half_of_the_ceiling() -> None:
    for attempt, ceiling in [(0, 0.1), (1, 0.2), (3, 0.8), (10, 5.0), (500, 5.0)]:
        delays = [equal_jitter_delay(attempt, 0.1, 5.0) for _ in range(200)]
        assert all(ceiling / 2 <= d <= ceiling for d in delays), (attempt, min(delays), max(delays))
        assert max(delays) - min(delays) > ceiling / 10  # jittered, not fixed


def test_backoff_grows_and_resets() -> None:
    backoff = Backoff(0.1, 1.0)
    first = [backoff.next_delay() for _ in range(6)]
    assert first[0] <= 0.1
    assert first[-1] >= 0.5
    assert backoff.attempts == 6
    backoff.reset()
    assert backoff.next_delay() <= 0.1
    with pytest.raises(ValueError, match="initial"):
        Backoff(0, 1)


def test_warn_once_is_bounded_and_least_recently_seen_goes_first() -> None:
    warned = WarnOnce(capacity=3)
    assert [warned.first(k) for k in "abc"] == [True, True, True]
    assert warned.first("a") is False  # "a" is now the most recently seen
    assert warned.first("d") is True  # evicts "b"
    assert len(warned) == 3
    assert warned.first("b") is True
    assert warned.first("a") is False
    for n in range(10_000):
        warned.first(n)
    assert len(warned) == 3


async def test_hub_keeps_following_after_any_exception(caplog: pytest.LogCaptureFixture) -> None:
    changes: asyncio.Queue[Snapshot] = asyncio.Queue()
    calls = {"load": 0, "follow": 0}

    async def load(name: str) -> tuple[Snapshot, None]:
        calls["load"] += 1
        return [inst("a")], None

    async def follow(topic: Topic[None]) -> None:
        calls["follow"] += 1
        if calls["follow"] == 1:
            raise TypeError("a bug in the producer")
        topic.healthy()
        while True:
            await topic.publish(await changes.get())

    hub: WatchHub[None] = WatchHub("test", load, follow, backoff_initial=0.01, backoff_maximum=0.02)
    stream = aiter(hub.watch("svc"))
    with caplog.at_level(logging.INFO, logger="grpcmesh.registry"):
        assert [i.id for i in await next_matching(stream, lambda s: True)] == ["a"]
        await changes.put([inst("a"), inst("b")])
        snap = await next_matching(stream, lambda s: len(s) == 2)
    assert [i.id for i in snap] == ["a", "b"]
    assert calls == {"load": 2, "follow": 2}  # read afresh after the failure
    assert "test watch of svc failed unexpectedly" in caplog.text
    assert "TypeError: a bug in the producer" in caplog.text
    assert "works again" in caplog.text
    await stream.aclose()  # type: ignore[attr-defined]
    assert hub.names() == []
    assert hub.producers() == 0
    await hub.close()
    with pytest.raises(RegistryClosedError):
        await anext(aiter(hub.watch("svc")))


async def test_hub_first_watcher_gets_the_load_error_and_others_retry() -> None:
    attempts = 0
    gate = asyncio.Event()

    async def load(name: str) -> tuple[Snapshot, None]:
        nonlocal attempts
        attempts += 1
        await gate.wait()
        if attempts == 1:
            raise RuntimeError("store unreachable")
        return [], None

    hub: WatchHub[None] = WatchHub("test", load)
    first = asyncio.ensure_future(anext(aiter(hub.watch("svc"))))
    second_stream = aiter(hub.watch("svc"))
    second = asyncio.ensure_future(anext(second_stream))
    await asyncio.sleep(0.01)
    gate.set()
    with pytest.raises(RuntimeError, match="unreachable"):
        await first
    assert await second == []  # it waited for the first load, then read for itself
    assert attempts == 2
    await second_stream.aclose()  # type: ignore[attr-defined]
    assert hub.names() == []
    await hub.close()


def test_consul_durations_use_the_config_parser() -> None:
    from grpcmesh.errors import ConfigError
    from grpcmesh.registry.consul import parse_duration

    assert parse_duration("wait", "1m30s") == 90.0
    assert parse_duration("wait", "500ms") == 0.5
    with pytest.raises(ConfigError, match="wait"):
        parse_duration("wait", "soon")
    with pytest.raises(ConfigError, match="wait must be longer than zero"):
        parse_duration("wait", "0s")


async def test_a_producer_that_keeps_ending_at_once_does_not_spin() -> None:
    loads = 0

    async def load(name: str) -> tuple[Snapshot, None]:
        nonlocal loads
        loads += 1
        return [], None

    async def follow(topic: Topic[None]) -> None:
        return  # ends cleanly without the store confirming the stream, every time

    hub: WatchHub[None] = WatchHub("test", load, follow, backoff_initial=0.05, backoff_maximum=0.1)
    stream = aiter(hub.watch("svc"))
    await anext(stream)
    await asyncio.sleep(0.5)
    await stream.aclose()  # type: ignore[attr-defined]
    assert loads < 15  # ~0.05-0.1 s apart; a spinning loop would have read thousands of times
    await hub.close()
