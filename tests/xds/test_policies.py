"""Each xDS policy observed in the behaviour of grpcio's own xDS client (a child process).

Split (gRFC A28), fault injection (A33), ring hash on a header (A42), retries (A44),
outlier ejection (A50) and locality priorities with failover (A27): the client is a plain
grpcio program with only a bootstrap file; it never imports grpcmesh.
"""

from __future__ import annotations

import asyncio
import collections
import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from grpcmesh.model import HealthStatus, ServiceInstance
from grpcmesh.xds import XdsServer
from grpcmesh.xds.policy import ServicePolicy, XdsPolicies
from tests.helpers import read_line_with, stop_process
from tests.xds.conftest import SERVICE, EchoFleet

pytestmark = pytest.mark.slow


class Results:
    """What the client printed: per call the instance (or failure code) and the key sent."""

    def __init__(self, lines: list[str]) -> None:
        self.calls = [line.split() for line in lines if line.startswith(("OK ", "FAIL "))]

    @property
    def instances(self) -> collections.Counter[str]:
        return collections.Counter(parts[1] for parts in self.calls if parts[0] == "OK")

    @property
    def failures(self) -> collections.Counter[str]:
        return collections.Counter(parts[1] for parts in self.calls if parts[0] == "FAIL")

    def by_key(self) -> dict[str, set[str]]:
        seen: dict[str, set[str]] = collections.defaultdict(set)
        for kind, value, key in self.calls:
            if kind == "OK":
                seen[key].add(value)
        return seen


async def start_policy_client(client_dir: Path, bootstrap: Path, *args: str) -> asyncio.subprocess.Process:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GRPC_XDS")}
    env.update(GRPC_XDS_BOOTSTRAP=str(bootstrap), PYTHONPATH=str(client_dir), PYTHONUNBUFFERED="1")
    script = str(Path(__file__).with_name("policy_client.py"))
    proc = await asyncio.create_subprocess_exec(
        sys.executable, script, f"xds:///{SERVICE}", *args, stdout=asyncio.subprocess.PIPE, env=env, cwd=client_dir
    )
    await read_line_with(proc, "STARTED", timeout=60)
    return proc


async def collect(proc: asyncio.subprocess.Process, timeout: float = 120.0) -> Results:
    assert proc.stdout is not None
    try:
        out = await asyncio.wait_for(proc.stdout.read(), timeout)
    finally:
        await stop_process(proc)
    lines = out.decode().splitlines()
    assert "DONE" in lines, lines[-5:]
    return Results(lines)


async def run_client(client_dir: Path, bootstrap: Path, *args: str) -> Results:
    return await collect(await start_policy_client(client_dir, bootstrap, *args))


@pytest.fixture
async def plane(fleet: EchoFleet, tmp_path: Path) -> AsyncIterator[Any]:
    """A factory: an xDS server over the fleet's registry with the given policy for the Echo service."""
    servers: list[XdsServer] = []

    async def start(policy: ServicePolicy) -> Path:
        server = XdsServer(fleet.registry, policies=XdsPolicies(services={SERVICE: policy}))
        await server.start()
        servers.append(server)
        bootstrap = tmp_path / "bootstrap.json"
        bootstrap.write_text(server.bootstrap_json(node_id="policy-client"))
        return bootstrap

    yield start
    for server in servers:
        await server.stop()


async def test_version_split_sends_the_configured_share(fleet: EchoFleet, plane: Any, client_dir: Path) -> None:
    await fleet.add("a", version="v1")
    await fleet.add("b", version="v1")
    await fleet.add("c", version="v2")
    bootstrap = await plane(ServicePolicy(split={"v1": 90, "v2": 10}))
    results = await run_client(client_dir, bootstrap, "1000")
    calls = results.instances
    assert sum(calls.values()) == 1000, results.failures
    share = calls["c"] / 1000
    print("v2 share over 1,000 calls:", share, dict(calls))
    assert 0.05 <= share <= 0.15


async def test_fault_injection_aborts_the_configured_share(fleet: EchoFleet, plane: Any, client_dir: Path) -> None:
    await fleet.add("a")
    bootstrap = await plane(ServicePolicy(fault={"abort_percent": 20, "abort_code": 14}))
    results = await run_client(client_dir, bootstrap, "1000")
    aborted = results.failures["UNAVAILABLE"] / 1000
    print("aborted share over 1,000 calls:", aborted)
    assert 0.15 <= aborted <= 0.25
    assert results.instances["a"] + results.failures["UNAVAILABLE"] == 1000


async def test_ring_hash_keeps_each_key_on_one_endpoint(fleet: EchoFleet, plane: Any, client_dir: Path) -> None:
    for instance_id in ("a", "b", "c"):
        await fleet.add(instance_id)
    bootstrap = await plane(ServicePolicy(balancing="consistent_hash", hash_header="x-user-id"))
    keys = [f"user-{i}" for i in range(20)]
    results = await run_client(client_dir, bootstrap, "400", "x-user-id", ",".join(keys))
    by_key = results.by_key()
    assert sum(results.instances.values()) == 400
    assert all(len(instances) == 1 for instances in by_key.values()), by_key
    assert len(set().union(*by_key.values())) >= 2  # different keys land on different endpoints


class AlwaysFailing:
    """An Echo endpoint that fails every call with ``code`` (and counts them)."""

    def __init__(self, code: grpc.StatusCode) -> None:
        self.code = code
        self.calls = 0
        self.server = grpc.aio.server()

        async def unary(request: bytes, context: grpc.aio.ServicerContext[Any, Any]) -> bytes:
            self.calls += 1
            await context.abort(self.code, "this endpoint always fails")
            return b""

        handler = grpc.unary_unary_rpc_method_handler(unary)
        generic = grpc.method_handlers_generic_handler("grpcmesh.echo.v1.Echo", {"Unary": handler})
        self.server.add_generic_rpc_handlers((generic,))
        self.port = self.server.add_insecure_port("127.0.0.1:0")


@pytest.fixture
async def failing(fleet: EchoFleet) -> AsyncIterator[AlwaysFailing]:
    endpoint = AlwaysFailing(grpc.StatusCode.UNAVAILABLE)
    await endpoint.server.start()
    instance = ServiceInstance(name=SERVICE, id="bad", address="127.0.0.1", port=endpoint.port)
    await fleet.registry.register(instance)
    try:
        yield endpoint
    finally:
        await endpoint.server.stop(None)


async def test_retry_policy_retries_the_configured_method(
    fleet: EchoFleet, failing: AlwaysFailing, plane: Any, client_dir: Path
) -> None:
    await fleet.add("a")
    policy = ServicePolicy(retry_methods=["grpcmesh.echo.v1.Echo/Unary"], retry={"num_retries": 3})
    bootstrap = await plane(policy)
    results = await run_client(client_dir, bootstrap, "200")
    print("retried: failing endpoint got", failing.calls, "attempts; failures", dict(results.failures))
    assert failing.calls >= 20  # round robin kept sending first attempts there...
    assert sum(results.failures.values()) <= 2  # ...and each was retried on the good endpoint


async def test_outlier_detection_ejects_the_failing_endpoint(
    fleet: EchoFleet, failing: AlwaysFailing, plane: Any, client_dir: Path
) -> None:
    await fleet.add("a")
    await fleet.add("b")
    outlier = {
        "failure_percentage": 50,
        "request_volume": 5,
        "minimum_hosts": 3,
        "interval": 0.5,
        "base_ejection_time": 60,
        "max_ejection_percent": 50,
    }
    bootstrap = await plane(ServicePolicy(outlier=outlier))
    results = await run_client(client_dir, bootstrap, "600", "", "", "5")  # ~3 s, several intervals
    tail = Results([f"{parts[0]} {parts[1]} -" for parts in results.calls[-200:]])
    print("first calls failures:", dict(results.failures), "last 200:", dict(tail.instances), dict(tail.failures))
    assert sum(results.failures.values()) > 0  # the bad endpoint was tried...
    assert sum(tail.failures.values()) == 0  # ...then ejected: no calls reach it
    assert set(tail.instances) == {"a", "b"}


async def test_locality_priority_prefers_the_first_and_fails_over(
    fleet: EchoFleet, plane: Any, client_dir: Path
) -> None:
    await fleet.add("near", metadata={"region": "r1", "zone": "z1"})
    await fleet.add("far", metadata={"region": "r2", "zone": "z9"})
    bootstrap = await plane(ServicePolicy(locality_priority=["r1/z1", "r2"]))
    results = await run_client(client_dir, bootstrap, "50")
    assert results.instances == collections.Counter({"near": 50})

    await fleet.registry.register(fleet.instances["near"].replace(health=HealthStatus.NOT_SERVING))
    await asyncio.sleep(1.0)
    results = await run_client(client_dir, bootstrap, "50")
    assert results.instances == collections.Counter({"far": 50}), results.failures
