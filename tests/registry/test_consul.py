"""Consul-specific behaviour, against the stand-in of Consul's documented HTTP API (not a real Consul)."""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import itertools
import json
import ssl
import statistics
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import grpc
import pytest
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from grpcmesh import (
    ConfigError,
    HealthStatus,
    InvalidInstanceError,
    Registry,
    RegistryError,
    RegistryUnavailableError,
    ServiceInstance,
    open_registry,
)
from grpcmesh.registry.consul import ConsulRegistry, go_duration, next_index
from tests.helpers import next_matching
from tests.registry.consul_standin import ConsulStandIn, RecordedRequest, parse_go_duration

# The "Sample Payload" of PUT /v1/agent/service/register in Consul's API docs
# (website/content/api-docs/agent/service.mdx).
DOCUMENTED_REGISTER_PAYLOAD: dict[str, Any] = {
    "ID": "redis1",
    "Name": "redis",
    "Tags": ["primary", "v1"],
    "Address": "127.0.0.1",
    "Port": 8000,
    "Meta": {"redis_version": "4.0"},
    "EnableTagOverride": False,
    "Check": {
        "DeregisterCriticalServiceAfter": "90m",
        "Args": ["/usr/local/bin/check_redis.py"],
        "Interval": "10s",
        "Timeout": "5s",
    },
    "Weights": {"Passing": 10, "Warning": 1},
}

# Check fields and their types from the same docs (website/content/api-docs/agent/check.mdx).
DOCUMENTED_CHECK_FIELDS: dict[str, type] = {
    "CheckID": str,
    "Name": str,
    "Notes": str,
    "Status": str,
    "TTL": str,
    "GRPC": str,
    "GRPCUseTLS": bool,
    "Interval": str,
    "Timeout": str,
    "DeregisterCriticalServiceAfter": str,
}

# The seed's Register (services/shared/registry/consul.go) for its user-service example.
SEED_CHECK = {
    "GRPC": "127.0.0.1:50051",
    "GRPCUseTLS": False,
    "Interval": "10s",
    "Timeout": "5s",
    "DeregisterCriticalServiceAfter": "30s",
}
SEED_META = {"endpoints": "CreateUser,GetUser,UpdateUser", "dependencies": "order-service,payment-service"}


def seed_user_service(**changes: Any) -> ServiceInstance:
    data: dict[str, Any] = {
        "name": "user-service",
        "version": "v1",
        "id": "3f2a",
        "address": "127.0.0.1",
        "port": 50051,
        "endpoints": ("CreateUser", "GetUser", "UpdateUser"),
        "dependencies": ("order-service", "payment-service"),
    }
    data.update(changes)
    return ServiceInstance(**data)


def inst(iid: str, port: int = 50051, **kw: Any) -> ServiceInstance:
    return ServiceInstance(name="user-service", id=iid, address="127.0.0.1", port=port, **kw)


def ids(snapshot: list[ServiceInstance]) -> list[str]:
    return [i.id for i in snapshot]


def open_consul(standin: ConsulStandIn, **options: str) -> Registry:
    query = {"check": "ttl", "deregister_after": "30s", **options}
    return open_registry(f"consul://{standin.address}?" + "&".join(f"{k}={v}" for k, v in query.items()))


def registrations(standin: ConsulStandIn) -> list[RecordedRequest]:
    return [r for r in standin.requests if r.path == "/v1/agent/service/register"]


def health_queries(standin: ConsulStandIn, name: str = "user-service") -> list[RecordedRequest]:
    return [r for r in standin.requests if r.path == f"/v1/health/service/{name}"]


async def blocking_query(standin: ConsulStandIn, *, index: str | None = None, since: int = 0) -> RecordedRequest:
    """Wait until a watch's blocking query (one carrying ``index``) has reached the stand-in.

    A watch publishes its first snapshot before its loop sends the first blocking query, so a
    test that changes the stand-in's index must wait for that query first: a reset that lands
    before the query is sent is, as in Consul, only seen when the query's ``wait`` runs out.
    The stand-in records a query and starts blocking it in one step of its loop, so once it is
    recorded, any later change or rewind answers it. ``index`` asks for one exact index;
    ``since`` skips the first ``since`` queries.
    """

    async def arrived() -> RecordedRequest:
        while True:
            for query in health_queries(standin)[since:]:
                if "index" in query.query and (index is None or query.query["index"] == index):
                    return query
            await asyncio.sleep(0.01)

    try:
        return await asyncio.wait_for(arrived(), 10.0)
    except TimeoutError:
        sent = [q.query.get("index") for q in health_queries(standin)[since:]]
        detail = f"{len(sent)} sent, the last indexes {sent[-20:]}"
        raise AssertionError(f"no blocking query with index={index or 'any'} within 10 s; {detail}") from None


class Collector:
    """Collects every snapshot a watch yields, on a background task."""

    def __init__(self, stream: AsyncIterator[list[ServiceInstance]]) -> None:
        self.snapshots: list[list[str]] = []
        self.arrivals: list[float] = []
        self._changed = asyncio.Event()
        self.task = asyncio.create_task(self._run(stream))

    async def _run(self, stream: AsyncIterator[list[ServiceInstance]]) -> None:
        async for snapshot in stream:
            self.snapshots.append(ids(snapshot))
            self.arrivals.append(time.monotonic())
            self._changed.set()

    async def until(self, expected: list[str], timeout: float = 5.0) -> float:
        """Wait until the latest snapshot is ``expected``; returns when it arrived."""

        async def wait() -> float:
            while not self.snapshots or self.snapshots[-1] != expected:
                self._changed.clear()
                await self._changed.wait()
            return self.arrivals[-1]

        return await asyncio.wait_for(wait(), timeout)

    async def stop(self) -> None:
        self.task.cancel()
        await asyncio.gather(self.task, return_exceptions=True)


# -- the registration body ------------------------------------------------------------------


async def test_grpc_registration_matches_seed_and_documented_schema(consul_standin: ConsulStandIn) -> None:
    async with open_registry(f"consul://{consul_standin.address}") as reg:  # check=grpc: the seed's default
        await reg.register(seed_user_service())
    [sent] = registrations(consul_standin)
    assert sent.method == "PUT"
    assert sent.query == {"replace-existing-checks": "true"}
    body = sent.body

    # Field by field against Consul's documented sample payload: same names, same JSON types.
    assert set(body) == {"ID", "Name", "Tags", "Address", "Port", "Meta", "Check", "Weights"}
    assert set(body) <= set(DOCUMENTED_REGISTER_PAYLOAD)
    for key in body:
        assert type(body[key]) is type(DOCUMENTED_REGISTER_PAYLOAD[key]), key
    assert all(isinstance(tag, str) for tag in body["Tags"])
    assert all(isinstance(k, str) and isinstance(v, str) for k, v in body["Meta"].items())
    assert set(body["Weights"]) == set(DOCUMENTED_REGISTER_PAYLOAD["Weights"])
    assert all(type(v) is int for v in body["Weights"].values())
    for key, value in body["Check"].items():
        assert type(value) is DOCUMENTED_CHECK_FIELDS[key], key
    for key in ("Interval", "Timeout", "DeregisterCriticalServiceAfter"):
        parse_go_duration(body["Check"][key], key)  # Go duration syntax, as Consul parses it

    # Field by field against the seed's Register.
    assert body["ID"] == "user-service:3f2a"  # seed: service.ID; ours adds the name (IDs are per agent)
    assert body["Name"] == "user-service"
    assert body["Tags"] == ["v1"]
    assert body["Address"] == "127.0.0.1"
    assert body["Port"] == 50051
    assert {k: body["Meta"][k] for k in SEED_META} == SEED_META
    assert body["Check"] == SEED_CHECK
    assert body["Weights"] == {"Passing": 100, "Warning": 1}


async def test_ttl_registration_body_and_heartbeat(consul_standin: ConsulStandIn) -> None:
    async with open_consul(consul_standin) as reg:
        await reg.register(inst("a"), ttl=1.5)
        await asyncio.sleep(1.2)  # two heartbeats at ttl / 3
        passes = [r for r in consul_standin.requests if r.path.startswith("/v1/agent/check/pass/")]
    check = registrations(consul_standin)[0].body["Check"]
    assert set(check) <= set(DOCUMENTED_CHECK_FIELDS)
    for key, value in check.items():
        assert type(value) is DOCUMENTED_CHECK_FIELDS[key], key
    assert check == {
        "CheckID": "service:user-service:a",
        "Name": "grpcmesh TTL for user-service",
        "TTL": "1500ms",
        "Status": "passing",
        "DeregisterCriticalServiceAfter": "30s",
    }
    assert parse_go_duration(check["TTL"], "TTL") == 1.5
    assert len(passes) >= 2
    assert {r.method for r in passes} == {"PUT"}
    assert {r.path for r in passes} == {"/v1/agent/check/pass/service:user-service:a"}


async def test_standin_refuses_what_consul_refuses(consul_standin: ConsulStandIn) -> None:
    """The stand-in would catch a body that drifted from the schema (so the tests above can fail)."""
    url = f"{consul_standin.url}/v1/agent/service/register"
    bad_bodies = [
        {"Nmae": "typo-service"},
        {"Port": 1},
        {"Name": "x", "Meta": {"bad key": "v"}},
        {"Name": "x", "Meta": {"k": "v" * 513}},
        {"Name": "x", "Meta": {f"k{i}": "v" for i in range(65)}},
        {"Name": "x", "Meta": {"consul-k": "v"}},
        {"Name": "x", "Check": {"TTL": "ten seconds"}},
        {"Name": "x", "Check": {"GRPC": "127.0.0.1:1"}},  # no Interval
        {"Name": "x", "Weights": {"Passing": 0, "Warning": 1}},
    ]
    async with aiohttp.ClientSession() as http:
        for body in bad_bodies:
            async with http.put(url, json=body) as response:
                assert response.status == 400, body
        async with http.put(url, json=DOCUMENTED_REGISTER_PAYLOAD | {"Check": SEED_CHECK}) as response:
            assert response.status == 200


# -- blocking-query watches -----------------------------------------------------------------


async def test_watch_is_a_blocking_query_that_delivers_within_100ms(consul_standin: ConsulStandIn) -> None:
    async with open_consul(consul_standin) as writer, open_consul(consul_standin) as watcher:
        collector = Collector(aiter(watcher.watch("user-service")))
        await collector.until([])
        await blocking_query(consul_standin)
        await asyncio.sleep(0.3)
        idle = health_queries(consul_standin)
        assert len(idle) <= 2  # the first read and one hanging query: no polling
        assert int(idle[-1].query["index"]) > 0
        assert idle[-1].query["wait"] == "60s"
        delays = []
        expected: list[str] = []
        for n in range(5):
            expected = [*expected, f"i{n}"]
            await writer.register(inst(f"i{n}", port=1000 + n))
            registered = time.monotonic()
            delays.append(await collector.until(expected) - registered)
            await asyncio.sleep(0.05)
        await collector.stop()
    print(f"watch delivery after register returned: {[round(d * 1000, 1) for d in delays]} ms")
    # A blocking query delivers in milliseconds when idle; a watch that missed the change would
    # wait out the 60 s blocking wait. The bounds sit between the two, with room for a loaded CI machine.
    assert statistics.median(delays) <= 1.0, delays
    assert max(delays) <= 5.0, delays


async def test_index_reset_neither_loses_nor_duplicates_a_snapshot(consul_standin: ConsulStandIn) -> None:
    async with open_consul(consul_standin) as writer, open_consul(consul_standin) as watcher:
        await writer.register(inst("a"))
        collector = Collector(aiter(watcher.watch("user-service")))
        await collector.until(["a"])
        await blocking_query(consul_standin)  # the watch now hangs on a blocking query at index ~101
        before = len(consul_standin.requests)
        consul_standin.rewind_index(to=3)  # a snapshot restore: the index drops below the watch's
        await asyncio.sleep(0.2)
        await writer.register(inst("b", port=50052))  # index 4: invisible to a watch stuck at ~101
        await collector.until(["a", "b"], timeout=3)
        await asyncio.sleep(0.3)
        await collector.stop()
    assert collector.snapshots == [["a"], ["a", "b"]]
    after_reset = [r for r in consul_standin.requests[before:] if r.path == "/v1/health/service/user-service"]
    assert any("index" not in r.query for r in after_reset)  # restarted the loop from index 0


async def test_index_below_one_does_not_busy_loop(consul_standin: ConsulStandIn) -> None:
    async with open_consul(consul_standin) as writer, open_consul(consul_standin) as watcher:
        await writer.register(inst("a"))
        collector = Collector(aiter(watcher.watch("user-service")))
        await collector.until(["a"])
        await blocking_query(consul_standin)  # hanging at index ~101, so the rewind answers it
        before = len(health_queries(consul_standin))
        consul_standin.rewind_index(to=0)  # Consul bug case: X-Consul-Index 0
        # The hanging query returns index 0 (backwards: reset), the fresh read returns 0 again,
        # and the watch must then block with index 1 rather than poll with 0.
        await blocking_query(consul_standin, index="1", since=before)
        start = len(health_queries(consul_standin))
        await asyncio.sleep(0.5)
        queries = health_queries(consul_standin)
        await collector.stop()
    assert [q.query.get("index") for q in queries[before:start]] == [None, "1"]  # one fresh read, then block
    assert len(queries) - start <= 1
    assert queries[-1].query["index"] == "1"
    assert collector.snapshots == [["a"]]


def test_next_index_follows_consuls_rules() -> None:
    assert next_index(0, 120) == 120
    assert next_index(120, 130) == 130
    assert next_index(120, 120) == 120  # timeout without change
    assert next_index(120, 7) == 0  # went backwards: reset
    assert next_index(0, 0) == 1  # never block with 0
    assert next_index(5, 0) == 0  # backwards to 0 is a reset first


async def test_errors_back_off_and_the_watch_recovers(consul_standin: ConsulStandIn) -> None:
    async with open_consul(consul_standin) as writer, open_consul(consul_standin) as watcher:
        await writer.register(inst("a"))
        collector = Collector(aiter(watcher.watch("user-service")))
        await collector.until(["a"])
        await blocking_query(consul_standin)
        before = len(consul_standin.requests)
        consul_standin.fail_reads(4)
        await writer.register(inst("b", port=50052))  # answers the hanging query; the next 4 fail
        await collector.until(["a", "b"])
        await writer.register(inst("c", port=50053))
        await collector.until(["a", "b", "c"], timeout=10)
        await collector.stop()
    queries = [r for r in consul_standin.requests[before:] if r.path == "/v1/health/service/user-service"]
    assert len(queries) >= 5  # 4 failures, then the query that saw b and c
    gaps = [later.at - earlier.at for earlier, later in itertools.pairwise(queries[:5])]
    assert gaps[0] < gaps[3]  # the retry delay grows (0.05-0.1 s, then up to 0.4-0.8 s)
    assert sum(gaps) >= 0.3  # at least 0.05 + 0.1 + 0.2 + 0.4 with jitter: not a hot loop
    assert collector.snapshots == [["a"], ["a", "b"], ["a", "b", "c"]]  # nothing emptied or lost


# -- the instance inside Meta ---------------------------------------------------------------


async def test_large_metadata_round_trips_within_meta_limits(consul_standin: ConsulStandIn) -> None:
    big = inst(
        "big",
        version="v2.1.0",
        metadata={f"key-{n:03d}": ("välue ✓ " * 25)[: 150 + n] for n in range(50)},
        endpoints=tuple(f"Method{n:03d}WithALongName" for n in range(40)),
        dependencies=("order-service", "payment-service"),
        weight=250,
        health=HealthStatus.NOT_SERVING,
    )
    async with open_consul(consul_standin) as reg, open_consul(consul_standin) as reader:
        await reg.register(big)
        assert await reader.get_service("user-service") == [big]
    meta = registrations(consul_standin)[0].body["Meta"]
    assert len(meta) <= 64
    assert all(len(k) <= 128 and len(v.encode()) <= 512 for k, v in meta.items())
    assert int(meta["grpcmesh-chunks"]) > 10
    assert "endpoints" not in meta  # 1,000+ characters joined: too long for the seed's key
    assert meta["dependencies"] == "order-service,payment-service"


async def test_too_large_an_instance_is_refused_before_sending(consul_standin: ConsulStandIn) -> None:
    huge = inst("huge", metadata={f"k{n}": "x" * 500 for n in range(80)})
    async with open_consul(consul_standin) as reg:
        with pytest.raises(InvalidInstanceError, match="metadata"):
            await reg.register(huge)
    assert registrations(consul_standin) == []


async def test_seed_style_registration_is_readable(consul_standin: ConsulStandIn) -> None:
    """A service registered by the seed's Go code (no grpcmesh record) still reads back."""
    body = {"ID": "9b1d", "Name": "order-service", "Tags": ["v1"], "Address": "10.0.0.7", "Port": 50052}
    body |= {"Meta": {"endpoints": "CreateOrder,GetOrder", "dependencies": "payment-service"}}
    async with (
        aiohttp.ClientSession() as http,
        http.put(f"{consul_standin.url}/v1/agent/service/register", json=body) as response,
    ):
        assert response.status == 200
    async with open_consul(consul_standin) as reg:
        [got] = await reg.get_service("order-service")
    assert (got.id, got.version, got.target) == ("9b1d", "v1", "10.0.0.7:50052")
    assert got.endpoints == ("CreateOrder", "GetOrder")
    assert got.dependencies == ("payment-service",)
    assert got.health is HealthStatus.SERVING  # a service without checks is passing in Consul


# -- health -----------------------------------------------------------------------------------


async def test_check_status_becomes_instance_health(consul_standin: ConsulStandIn) -> None:
    async with open_consul(consul_standin) as reg, open_consul(consul_standin) as watcher:
        await reg.register(inst("a"), ttl=30)
        stream = aiter(watcher.watch("user-service"))
        first = await next_matching(stream, lambda s: True)
        assert first[0].health is HealthStatus.SERVING
        for status, expected in [
            ("warning", HealthStatus.UNKNOWN),
            ("critical", HealthStatus.NOT_SERVING),
            ("passing", HealthStatus.SERVING),
        ]:
            consul_standin.set_check_status("user-service:a", status)
            snapshot = await next_matching(stream, lambda s, e=expected: s[0].health is e)  # type: ignore[misc]
            assert snapshot[0].id == "a"
            assert (await reg.get_service("user-service"))[0].health is expected


async def test_grpc_check_probes_a_real_health_service(consul_standin: ConsulStandIn) -> None:
    server = grpc.aio.server()
    servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        await servicer.set("", health_pb2.HealthCheckResponse.SERVING)
        url = f"consul://{consul_standin.address}?check=grpc&check_interval=200ms&check_timeout=1s"
        async with open_registry(url) as reg:
            await reg.register(inst("live", port=port))
            stream = aiter(reg.watch("user-service"))
            await next_matching(stream, lambda s: s and s[0].health is HealthStatus.SERVING)
            await servicer.set("", health_pb2.HealthCheckResponse.NOT_SERVING)
            await next_matching(stream, lambda s: s and s[0].health is HealthStatus.NOT_SERVING)
            await server.stop(None)
            await asyncio.sleep(0.5)
            assert (await reg.get_service("user-service"))[0].health is HealthStatus.NOT_SERVING
    finally:
        await server.stop(None)


async def test_owner_reregisters_when_the_agent_forgets(consul_standin: ConsulStandIn) -> None:
    async with open_consul(consul_standin) as reg:
        await reg.register(inst("a"), ttl=1.5)
        async with (  # as if the agent restarted without its state
            aiohttp.ClientSession() as http,
            http.put(f"{consul_standin.url}/v1/agent/service/deregister/user-service:a") as response,
        ):
            assert response.status == 200
        assert await reg.get_service("user-service") == []
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline and not await reg.get_service("user-service"):
            await asyncio.sleep(0.1)
        assert ids(await reg.get_service("user-service")) == ["a"]


# -- connection options -------------------------------------------------------------------------


@pytest.fixture
def guarded_standin() -> Iterator[ConsulStandIn]:
    with ConsulStandIn(token="s3cret-token") as standin:
        yield standin


async def test_token_from_option_or_environment(
    guarded_standin: ConsulStandIn, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("CONSUL_HTTP_TOKEN", raising=False)
    async with open_consul(guarded_standin) as anonymous:
        with pytest.raises(RegistryError, match="403") as refused:
            await anonymous.register(inst("a"))
    assert "s3cret" not in str(refused.value)
    assert "token" in str(refused.value)
    async with open_consul(guarded_standin, token="wrong") as wrong:
        with pytest.raises(RegistryError, match="ACL not found"):
            await wrong.get_service("user-service")
    async with open_consul(guarded_standin, token="s3cret-token") as by_option:
        await by_option.register(inst("a"))
        assert ids(await by_option.get_service("user-service")) == ["a"]
        assert "s3cret" not in repr(by_option.options)  # type: ignore[attr-defined]
    monkeypatch.setenv("CONSUL_HTTP_TOKEN", "s3cret-token")
    async with open_consul(guarded_standin) as by_env:
        await by_env.register(inst("b"))
        assert await by_env.list_services() == ["user-service"]


async def test_datacenter_and_namespace(consul_standin: ConsulStandIn) -> None:
    async with open_consul(consul_standin, dc="dc2") as elsewhere:
        with pytest.raises(RegistryUnavailableError, match="No path to datacenter"):
            await elsewhere.get_service("user-service")
    async with (
        open_consul(consul_standin, ns="team-a", dc="dc1") as team_a,
        open_consul(consul_standin, ns="team-b") as team_b,
    ):
        await team_a.register(inst("a"))
        assert ids(await team_a.get_service("user-service")) == ["a"]
        assert await team_b.get_service("user-service") == []
        assert await team_a.list_services() == ["user-service"]
        assert await team_b.list_services() == []
    sent = [r for r in consul_standin.requests if r.query.get("ns") == "team-a"]
    assert any(r.path == "/v1/agent/service/register" for r in sent)
    catalog_reads = [r for r in sent if r.method == "GET" and not r.path.startswith("/v1/agent/")]
    assert catalog_reads
    assert all(r.query.get("dc") == "dc1" for r in catalog_reads)  # the agent's own API takes no dc
    assert all("dc" not in r.query for r in sent if r.method == "PUT")  # the agent API is local
    assert consul_standin.service_ids() == []
    assert consul_standin.service_ids("team-a") == []  # closed: deregistered


def _self_signed(directory: Path) -> tuple[Path, Path]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "consul-standin")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "consul.pem", directory / "consul.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return cert_path, key_path


async def test_https_with_a_private_ca(tmp_path: Path) -> None:
    cert_path, key_path = _self_signed(tmp_path)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert_path, key_path)
    with ConsulStandIn(ssl_context=context) as standin:
        async with open_consul(standin, scheme="https", ca=str(cert_path)) as reg:
            await reg.register(inst("a"))
            assert ids(await reg.get_service("user-service")) == ["a"]
        async with open_consul(standin, scheme="https") as untrusting:
            with pytest.raises(RegistryUnavailableError, match="unreachable"):
                await untrusting.get_service("user-service")
        assert standin.requests[0].path == "/v1/agent/service/register"


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("consul://127.0.0.1:8500?colour=blue", "colour"),
        ("consul://127.0.0.1:8500?check=http", "check="),
        ("consul://127.0.0.1:8500?check_interval=soon", "check_interval"),
        ("consul://127.0.0.1:8500?wait=11m", "wait"),
        ("consul://127.0.0.1:8500/prefix", "path"),
        ("consul://127.0.0.1:8500?ca=/x.pem", "scheme=https"),
        ("consul://127.0.0.1:8500?scheme=https&cert=/c.pem", "key"),
        ("consul://127.0.0.1:99999", "invalid port"),
        ("consul://127.0.0.1:port", "invalid port"),
        ("consul://127.0.0.1:8500?scheme=https&ca=/no/such/ca.pem", r"ca='/no/such/ca.pem' is not a file"),
        ("consul://127.0.0.1:8500?watch_rate=nan", "watch_rate"),
    ],
)
def test_bad_options_are_named(url: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        open_registry(url)


def test_url_defaults_and_durations() -> None:
    reg = open_registry("consul://")
    assert isinstance(reg, ConsulRegistry)
    assert reg.options.base_url == "http://127.0.0.1:8500"
    assert (reg.options.check, reg.options.check_interval, reg.options.deregister_after) == ("grpc", 10.0, 30.0)
    assert [go_duration(s) for s in (10, 0.5, 1.5, 90)] == ["10s", "500ms", "1500ms", "90s"]
    assert json.dumps(reg.registration(inst("a"), 10.0)["Check"]["Interval"]) == '"10s"'


def test_durations_as_the_configuration_writes_them() -> None:
    reg = open_registry("consul://127.0.0.1:8500?wait=1m30s&check_interval=1m&deregister_after=2m30s")
    assert isinstance(reg, ConsulRegistry)
    assert (reg.options.wait, reg.options.check_interval, reg.options.deregister_after) == (90.0, 60.0, 150.0)


@pytest.mark.parametrize(
    "url",
    [
        "consul://alice:s3cr3t-pass@127.0.0.1:8500",
        "consul://127.0.0.1:99999?token=s3cr3t-pass",
        "consul://127.0.0.1:8500?token=s3cr3t-pass&colour=blue",
    ],
)
def test_url_errors_never_echo_a_secret(url: str) -> None:
    with pytest.raises(ConfigError) as caught:
        open_registry(url)
    assert "s3cr3t-pass" not in str(caught.value)
    assert "s3cr3t-pass" not in repr(caught.value)


def test_a_tls_file_that_is_not_pem_is_a_config_error_naming_it(tmp_path: Path) -> None:
    bogus = tmp_path / "ca.pem"
    bogus.write_text("not a certificate")
    with pytest.raises(ConfigError, match=r"ca='.*ca\.pem'"):
        open_registry(f"consul://127.0.0.1:8500?scheme=https&ca={bogus}")
