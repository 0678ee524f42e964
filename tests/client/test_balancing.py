"""Load balancing across real Echo server processes found through a SQLite registry."""

from __future__ import annotations

import asyncio
import collections

import grpc
import pytest

from grpcmesh import Registry
from grpcmesh.client import MeshChannel
from grpcmesh.protos import echo_pb2, echo_pb2_grpc
from tests.client.conftest import SERVICE, StartInstance
from tests.client.util import wait_for_endpoints

pytestmark = pytest.mark.slow


async def test_round_robin_spreads_300_calls_evenly(registry: Registry, start_instance: StartInstance) -> None:
    for name in ("a", "b", "c"):
        await start_instance(name)
    async with MeshChannel(registry, SERVICE, policy="round_robin") as channel:
        await wait_for_endpoints(channel, 3)
        stub = echo_pb2_grpc.EchoStub(channel)
        counts = collections.Counter(
            [(await stub.Unary(echo_pb2.EchoRequest(message="hi"), timeout=5)).instance_id for _ in range(300)]
        )
    assert set(counts) == {"a", "b", "c"}
    for name, count in counts.items():
        assert 90 <= count <= 110, (name, counts)


async def test_weighted_round_robin_follows_weights_1_2_3(registry: Registry, start_instance: StartInstance) -> None:
    for name, weight in (("w1", 1), ("w2", 2), ("w3", 3)):
        await start_instance(name, "--weight", str(weight))
    async with MeshChannel(registry, SERVICE, policy="weighted_round_robin") as channel:
        await wait_for_endpoints(channel, 3)
        stub = echo_pb2_grpc.EchoStub(channel)
        counts = collections.Counter(
            [(await stub.Unary(echo_pb2.EchoRequest(), timeout=5)).instance_id for _ in range(300)]
        )
    for name, expected in (("w1", 50), ("w2", 100), ("w3", 150)):
        assert abs(counts[name] - expected) <= expected * 0.10, counts


async def test_p2c_sends_fewer_calls_to_a_slow_instance(registry: Registry, start_instance: StartInstance) -> None:
    await start_instance("fast1")
    await start_instance("fast2")
    await start_instance("slow", "--delay-ms", "60")
    async with MeshChannel(registry, SERVICE, policy="p2c") as channel:
        await wait_for_endpoints(channel, 3)
        stub = echo_pb2_grpc.EchoStub(channel)
        counts: collections.Counter[str] = collections.Counter()

        async def worker() -> None:
            for _ in range(30):
                reply = await stub.Unary(echo_pb2.EchoRequest(), timeout=5)
                counts[reply.instance_id] += 1

        await asyncio.gather(*(worker() for _ in range(10)))
    assert sum(counts.values()) == 300
    assert counts["slow"] < counts["fast1"], counts
    assert counts["slow"] < counts["fast2"], counts
    assert counts["slow"] < 300 / 3, counts


async def test_consistent_hash_pins_keys_and_remaps_minimally(
    registry: Registry, start_instance: StartInstance
) -> None:
    instances = {name: await start_instance(name) for name in ("h1", "h2", "h3")}
    keys = [f"user-{i}" for i in range(90)]
    async with MeshChannel(registry, SERVICE, policy="consistent_hash", hash_key="x-user") as channel:
        await wait_for_endpoints(channel, 3)
        stub = echo_pb2_grpc.EchoStub(channel)

        async def where(key: str) -> str:
            reply = await stub.Unary(echo_pb2.EchoRequest(), metadata=(("x-user", key),), timeout=5)
            return reply.instance_id

        before = {key: await where(key) for key in keys}
        for key in keys[:30]:  # a key stays on one instance
            assert {await where(key) for _ in range(3)} == {before[key]}
        assert set(before.values()) == {"h1", "h2", "h3"}

        # Remove the instance owning the fewest keys: at most a third of the keys can move.
        owned = collections.Counter(before.values())
        leaving = min(owned, key=lambda name: owned[name])
        await instances[leaving].stop()
        await wait_for_endpoints(channel, 2)
        after = {key: await where(key) for key in keys}

    moved = [key for key in keys if after[key] != before[key]]
    assert all(before[key] == leaving for key in moved), "only keys of the removed instance may move"
    assert len(moved) == owned[leaving] <= len(keys) / 3
    assert leaving not in after.values()


async def test_version_and_metadata_filters_select_instances(registry: Registry, start_instance: StartInstance) -> None:
    await start_instance("old", "--version", "v1", "--meta", "zone=a")
    await start_instance("new-a", "--version", "v2", "--meta", "zone=a")
    await start_instance("new-b", "--version", "v2", "--meta", "zone=b")
    async with MeshChannel(registry, SERVICE, version="v2", metadata_match={"zone": "b"}) as channel:
        await wait_for_endpoints(channel, 1)
        stub = echo_pb2_grpc.EchoStub(channel)
        seen = {(await stub.Unary(echo_pb2.EchoRequest(), timeout=5)).instance_id for _ in range(10)}
        assert seen == {"new-b"}
    async with MeshChannel(registry, SERVICE, version="v2") as channel:
        await wait_for_endpoints(channel, 2)
        stub = echo_pb2_grpc.EchoStub(channel)
        seen = {(await stub.Unary(echo_pb2.EchoRequest(), timeout=5)).instance_id for _ in range(10)}
        assert seen == {"new-a", "new-b"}


async def test_unknown_status_is_not_retried(registry: Registry, start_instance: StartInstance) -> None:
    await start_instance("a")
    await start_instance("b")
    async with MeshChannel(registry, SERVICE) as channel:
        await wait_for_endpoints(channel, 2)
        stub = echo_pb2_grpc.EchoStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await stub.Unary(echo_pb2.EchoRequest(fail_code=grpc.StatusCode.UNAVAILABLE.value[0]), timeout=5)
        assert info.value.code() is grpc.StatusCode.UNAVAILABLE
        assert channel.stats().retries_total == 0
        assert sum(e.calls for e in channel.stats().per_endpoint) == 1
