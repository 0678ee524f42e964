"""etcd-specific behaviour, on real etcd processes: record layout, member failover, etcd data
loss, churn, and configuration errors. (The shared contract is in test_conformance.py.)"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator
from urllib.parse import urlsplit

import pytest

from grpcmesh import ConfigError, RegistryError, RegistryUnavailableError, ServiceInstance, open_registry
from grpcmesh.registry._hub import Topic
from grpcmesh.registry.etcd import EtcdRegistry, _Watched, from_url
from tests.etcd_server import EtcdCluster
from tests.helpers import free_port, next_matching


def inst(name: str, iid: str, port: int = 50051) -> ServiceInstance:
    return ServiceInstance(name=name, id=iid, address="127.0.0.1", port=port, version="v1")


def ids(snapshot: list[ServiceInstance]) -> list[str]:
    return [i.id for i in snapshot]


def unique_prefix() -> str:
    return f"/test-{uuid.uuid4().hex[:12]}"


async def test_etcdctl_shows_registrations_as_readable_json(etcd_server: EtcdCluster) -> None:
    service = f"json-{uuid.uuid4().hex[:8]}"
    me = ServiceInstance(
        name=service, id="one", address="127.0.0.1", port=7000, metadata={"zone": "z1"}, endpoints=("Get",)
    )
    async with open_registry(etcd_server.url()) as reg:  # default prefix: /services
        await reg.register(me)
        lines = etcd_server.etcdctl("get", "--prefix", "/services").splitlines()
    key = f"/services/{service}/one"
    assert key in lines
    record = json.loads(lines[lines.index(key) + 1])
    assert record["name"] == service
    assert record["address"] == "127.0.0.1"
    assert record["port"] == 7000
    assert record["metadata"] == {"zone": "z1"}
    assert ServiceInstance.from_json(lines[lines.index(key) + 1]) == me


async def test_killing_the_connected_member_keeps_registrations_and_watches(etcd_cluster: EtcdCluster) -> None:
    endpoints = etcd_cluster.endpoints.split(",")
    prefix, service, ttl = unique_prefix(), "failover-service", 3.0
    owner = EtcdRegistry(endpoints, prefix=prefix)
    watcher = EtcdRegistry(endpoints, prefix=prefix)
    try:
        await owner.register(inst(service, "a", 1), ttl=ttl)
        await owner.register(inst(service, "b", 2), ttl=ttl)
        stream = aiter(watcher.watch(service))
        await next_matching(stream, lambda s: ids(s) == ["a", "b"])
        connected = owner.endpoint
        assert watcher.endpoint == connected

        etcd_cluster.kill(etcd_cluster.member_at(connected))
        await owner.register(inst(service, "c", 3), ttl=ttl)  # moves to another member by itself
        await next_matching(stream, lambda s: ids(s) == ["a", "b", "c"], timeout=15)
        assert owner.endpoint != connected

        await asyncio.sleep(2 * ttl)  # keep-alives now go to a live member: nothing expires
        assert ids(await watcher.get_service(service)) == ["a", "b", "c"]
        assert watcher.endpoint != connected

        await owner.deregister(inst(service, "a", 1))
        await owner.register(inst(service, "d", 4), ttl=ttl)
        await next_matching(stream, lambda s: ids(s) == ["b", "c", "d"], timeout=15)
    finally:
        await owner.close()
        await watcher.close()


async def test_owner_reregisters_after_etcd_restarts_with_its_data_wiped(
    etcd_private_server: EtcdCluster, caplog: pytest.LogCaptureFixture
) -> None:
    cluster = etcd_private_server
    member = cluster.members[0]
    prefix, service, ttl = unique_prefix(), "phoenix-service", 3.0
    owner = EtcdRegistry([member.endpoint], prefix=prefix)
    watcher = EtcdRegistry([member.endpoint], prefix=prefix)
    observer = EtcdRegistry([member.endpoint], prefix=prefix, timeout=1.0)
    try:
        for n in range(3):
            await owner.register(inst(service, f"i{n}", 100 + n), ttl=ttl)
        stream = aiter(watcher.watch(service))
        await next_matching(stream, lambda s: len(s) == 3)

        with caplog.at_level(logging.INFO, logger="grpcmesh.registry.etcd"):
            cluster.wipe(member)
            cluster.start(member)
            restarted = time.monotonic()

            async def all_back() -> None:
                while True:
                    try:
                        if ids(await observer.get_service(service)) == ["i0", "i1", "i2"]:
                            return
                    except RegistryUnavailableError:
                        pass
                    await asyncio.sleep(0.05)

            await asyncio.wait_for(all_back(), timeout=ttl + 10)
            elapsed = time.monotonic() - restarted
            # About one keepalive after the restart when idle; TTL + 8 s leaves room for a loaded machine.
            assert elapsed <= ttl + 8, f"re-registered {elapsed:.1f}s after the restart; want <= TTL + 8 s"

            async def reported() -> None:
                # The owner logs once its last put is acknowledged; the observer, on the same
                # event loop, may read the keys back before the owner's task resumes to log.
                while "re-registered 3 instance(s)" not in caplog.text:
                    await asyncio.sleep(0.05)

            with contextlib.suppress(TimeoutError):  # the assertion below says what is missing
                await asyncio.wait_for(reported(), timeout=5)
        assert "re-registered 3 instance(s)" in caplog.text

        # The watcher's stream started over on the new etcd: it sees later changes.
        await owner.deregister(inst(service, "i0"))
        await owner.register(inst(service, "late", 200), ttl=ttl)
        await next_matching(stream, lambda s: ids(s) == ["i1", "i2", "late"], timeout=10)
    finally:
        for reg in (owner, watcher, observer):
            await reg.close()


async def test_churn_1000_instances_10_owners_20_watchers_converge(etcd_server: EtcdCluster) -> None:
    prefix, service = unique_prefix(), "churn-service"
    url = etcd_server.url(prefix)
    owners = [open_registry(url) for _ in range(10)]
    watcher_registries = [open_registry(url) for _ in range(5)]  # 4 watchers share each one's stream
    try:
        streams: list[AsyncIterator[list[ServiceInstance]]] = [
            aiter(watcher_registries[n % 5].watch(service)) for n in range(20)
        ]
        for stream in streams:
            assert await next_matching(stream, lambda s: True) == []

        expected: dict[str, int] = {}

        async def churn(o: int) -> None:
            owner = owners[o]
            mine = [inst(service, f"o{o}-{n:03d}", 10_000 + o * 100 + n) for n in range(100)]
            await asyncio.gather(*(owner.register(i) for i in mine))
            for i in mine[:20]:
                await owner.deregister(i)
            for i in mine[20:30]:
                await owner.register(i.replace(port=i.port + 20_000))
            if o >= 8:
                await owner.close()  # revokes the lease: its 80 keys go at once
                return
            expected.update({i.id: i.port for i in mine[30:]})
            expected.update({i.id: i.port + 20_000 for i in mine[20:30]})

        await asyncio.gather(*(churn(o) for o in range(10)))
        want = sorted(expected.items())
        assert len(want) == 8 * 80

        def converged(snapshot: list[ServiceInstance]) -> bool:
            return [(i.id, i.port) for i in snapshot] == want

        finals = await asyncio.gather(*(next_matching(s, converged, timeout=30) for s in streams))
        assert all(final == finals[0] for final in finals)
        assert [(i.id, i.port) for i in await watcher_registries[0].get_service(service)] == want
    finally:
        for reg in owners + watcher_registries:
            await reg.close()


async def test_watchers_of_one_registry_share_one_stream(etcd_server: EtcdCluster) -> None:
    reg = EtcdRegistry([etcd_server.endpoints], prefix=unique_prefix())
    try:
        first, second = reg.watch("shared-service"), reg.watch("shared-service")
        assert await anext(first) == []
        assert await anext(second) == []
        assert reg.watched_names() == ["shared-service"]
        topic = reg._hub.topic("shared-service")
        assert topic is not None
        stream_task = topic.task
        await reg.register(inst("shared-service", "x"))
        assert ids(await anext(first)) == ["x"]
        assert ids(await anext(second)) == ["x"]
        await first.aclose()
        assert reg.watched_names() == ["shared-service"]
        await second.aclose()
        assert reg.watched_names() == []  # last watcher gone: the stream is stopped
        assert stream_task is not None
        await asyncio.wait({stream_task}, timeout=5)
        assert stream_task.cancelled()
    finally:
        await reg.close()


async def test_watch_from_a_compacted_revision_starts_over(
    etcd_server: EtcdCluster, caplog: pytest.LogCaptureFixture
) -> None:
    prefix = unique_prefix()
    async with EtcdRegistry([etcd_server.endpoints], prefix=prefix) as reg:
        for n in range(3):
            await reg.register(inst("compact-service", f"c{n}"))
        header = json.loads(etcd_server.etcdctl("get", f"{prefix}/compact-service/c0", "-w", "json"))["header"]
        etcd_server.etcdctl("compact", str(header["revision"]))
        with caplog.at_level(logging.INFO, logger="grpcmesh.registry.etcd"):
            topic: Topic[_Watched] = Topic(reg._hub, "compact-service")
            topic.state = _Watched(revision=1, instances={})
            # Ends at once without an error, which makes the hub read afresh.
            await asyncio.wait_for(reg._follow(topic), 10)
        assert "compacted" in caplog.text
        stream = aiter(reg.watch("compact-service"))  # a real watch reads afresh: unaffected
        assert ids(await next_matching(stream, lambda s: True)) == ["c0", "c1", "c2"]


async def test_a_dead_first_endpoint_is_skipped(etcd_server: EtcdCluster) -> None:
    dead = f"127.0.0.1:{free_port()}"
    async with EtcdRegistry([dead, etcd_server.endpoints], prefix=unique_prefix()) as reg:
        await reg.register(inst("skip-service", "s"))
        assert ids(await reg.get_service("skip-service")) == ["s"]
        assert reg.endpoint == etcd_server.endpoints


async def test_unreachable_etcd_is_a_clear_error() -> None:
    endpoint = f"127.0.0.1:{free_port()}"
    reg = EtcdRegistry([endpoint], timeout=1.0)
    started = time.monotonic()
    with pytest.raises(RegistryUnavailableError, match=rf"etcd at {endpoint} could not be reached while registering"):
        await reg.register(inst("lonely-service", "x"))
    # Fails after the 1 s request timeout, not never; 10x margin for a loaded machine.
    assert time.monotonic() - started < 10
    with pytest.raises(RegistryUnavailableError, match="check that etcd is running"):
        await anext(reg.watch("lonely-service"))
    await reg.close()


async def test_username_and_password(etcd_private_server: EtcdCluster) -> None:
    cluster = etcd_private_server
    cluster.etcdctl("user", "add", "root", "--new-user-password", "s3cret")
    cluster.etcdctl("auth", "enable")
    url = cluster.url(unique_prefix())
    async with open_registry(url, username="root", password="s3cret") as reg:
        await reg.register(inst("auth-service", "a"))
        stream = aiter(reg.watch("auth-service"))
        assert ids(await next_matching(stream, lambda s: True)) == ["a"]
        assert await reg.list_services() == ["auth-service"]
    async with open_registry(url, username="root", password="wrong") as bad:
        with pytest.raises(RegistryError, match="rejected the login as user 'root'") as info:
            await bad.get_service("auth-service")
        assert "wrong" not in str(info.value)  # the password is never echoed
    async with open_registry(url) as anonymous:
        with pytest.raises(RegistryError, match="refused reading auth-service"):
            await anonymous.get_service("auth-service")


async def test_tls_with_a_client_certificate(etcd_tls_server: EtcdCluster) -> None:
    pki = etcd_tls_server.members[0].pki
    assert pki is not None
    url = etcd_tls_server.url(unique_prefix())
    files = {"ca": str(pki.ca), "cert": str(pki.client_cert), "key": str(pki.client_key)}
    async with open_registry(url, **files) as reg:
        await reg.register(inst("tls-service", "t"))
        stream = aiter(reg.watch("tls-service"))
        assert ids(await next_matching(stream, lambda s: True)) == ["t"]
        await reg.register(inst("tls-service", "u"))
        assert ids(await next_matching(stream, lambda s: "u" in ids(s))) == ["t", "u"]
    async with open_registry(url, timeout=1) as plaintext:
        with pytest.raises(RegistryUnavailableError):
            await plaintext.get_service("tls-service")
    async with open_registry(url, ca=str(pki.ca), timeout=1) as no_client_cert:
        with pytest.raises(RegistryUnavailableError):
            await no_client_cert.get_service("tls-service")


@pytest.mark.parametrize(
    ("url", "options", "message"),
    [
        ("etcd://127.0.0.1:99999", {}, "invalid port"),
        ("etcd://127.0.0.1:2379", {"colour": "red"}, r"does not take option\(s\) \['colour'\]"),
        ("etcd://user:pw@127.0.0.1:2379", {}, "username and password options"),
        ("etcd://127.0.0.1:2379", {"cert": "/etc/hostname"}, "cert and key go together"),
        ("etcd://127.0.0.1:2379", {"ca": "/nonexistent/ca.pem"}, r"ca='/nonexistent/ca.pem' is not a file"),
        ("etcd://127.0.0.1:2379", {"timeout": "soon"}, "not a number of seconds"),
        ("etcd://127.0.0.1:2379", {"username": "root"}, "both username and password"),
        ("etcd://127.0.0.1:2379/a//b", {}, "key prefix"),
    ],
)
def test_bad_configuration_is_named(url: str, options: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        from_url(urlsplit(url), options)


def test_url_forms() -> None:
    reg = from_url(urlsplit("etcd://10.0.0.1:2379,10.0.0.2,[::1]:2380/mesh/prod/"), {"timeout": "2"})
    assert reg.prefix == "/mesh/prod"
    assert repr(reg) == "EtcdRegistry(endpoints='10.0.0.1:2379,10.0.0.2:2379,[::1]:2380', prefix='/mesh/prod')"
    assert from_url(urlsplit("etcd://"), {}).prefix == "/services"
    assert from_url(urlsplit("etcd://"), {}).endpoint == "127.0.0.1:2379"
