"""The ``backend`` fixture: every registry backend the conformance suite runs against.

To add a backend, add its name to ``BACKEND_NAMES`` and a branch to ``backend`` that
returns a :class:`Backend` (starting whatever server it needs through a fixture).
"""

from __future__ import annotations

import json
import sqlite3
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from grpcmesh import Registry, open_registry
from tests.etcd_server import (  # noqa: F401 - fixtures used by the etcd tests
    EtcdCluster,
    etcd_cluster,
    etcd_cluster_processes,
    etcd_private_server,
    etcd_server,
    etcd_tls_server,
)
from tests.registry.consul_standin import ConsulStandIn

BACKEND_NAMES = ["memory", "sqlite", "etcd", "consul"]


@dataclass
class Backend:
    name: str
    url: str
    multiprocess: bool
    """True when separate processes share the store (so owner death can be tested)."""
    corrupt: Callable[[str, str, bytes], None] | None = None
    """Writes raw bytes as the record of (service, id), bypassing validation, as an attacker would."""
    remove: Callable[[str, str], None] | None = None
    """Deletes the record of (service, id) behind every registry's back (raw store access)."""

    def open(self) -> Registry:
        return open_registry(self.url)


def _sqlite_corrupter(path: Path) -> Callable[[str, str, bytes], None]:
    def corrupt(service: str, instance_id: str, raw: bytes) -> None:
        conn = sqlite3.connect(path, isolation_level=None)
        try:
            conn.execute("BEGIN IMMEDIATE")
            conn.execute(
                "INSERT OR REPLACE INTO instances (name, id, record, owner, expires_at) VALUES (?, ?, ?, 'test', 9e18)",
                (service, instance_id, raw.decode("utf-8", "replace")),
            )
            conn.execute("UPDATE revisions SET revision = revision + 1 WHERE name IN (?, '')", (service,))
            conn.execute("INSERT OR IGNORE INTO revisions (name, revision) VALUES (?, 1)", (service,))
            conn.execute("COMMIT")
        finally:
            conn.close()

    return corrupt


def _sqlite_remover(path: Path) -> Callable[[str, str], None]:
    def remove(service: str, instance_id: str) -> None:
        conn = sqlite3.connect(path, isolation_level=None)
        try:
            conn.execute("BEGIN IMMEDIATE")
            conn.execute("DELETE FROM instances WHERE name = ? AND id = ?", (service, instance_id))
            conn.execute("UPDATE revisions SET revision = revision + 1 WHERE name IN (?, '')", (service,))
            conn.execute("COMMIT")
        finally:
            conn.close()

    return remove


def _memory_corrupter(namespace: str) -> Callable[[str, str, bytes], None]:
    """Puts ``raw`` straight into the shared store's dict, where only instances belong."""

    def corrupt(service: str, instance_id: str, raw: bytes) -> None:
        from grpcmesh.registry.memory import _shared_stores

        _shared_stores[namespace].instances.setdefault(service, {})[instance_id] = raw  # type: ignore[assignment]

    return corrupt


def _memory_remover(namespace: str) -> Callable[[str, str], None]:
    def remove(service: str, instance_id: str) -> None:
        from grpcmesh.registry.memory import _shared_stores

        _shared_stores[namespace].instances.get(service, {}).pop(instance_id, None)

    return remove


def _consul_call(standin: ConsulStandIn, method: str, path: str, body: object = None) -> None:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(f"{standin.url}{path}", data=data, method=method)
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.status == 200


def _consul_corrupter(standin: ConsulStandIn) -> Callable[[str, str, bytes], None]:
    """Registers, through the agent API, a service whose grpcmesh record is ``raw`` (in Meta chunks)."""

    def corrupt(service: str, instance_id: str, raw: bytes) -> None:
        text = raw.decode("utf-8", "replace")
        chunks = [text[i : i + 512] for i in range(0, len(text), 512)] or [""]
        meta = {"grpcmesh-chunks": str(len(chunks))} | {f"grpcmesh-{n}": c for n, c in enumerate(chunks)}
        body = {"ID": f"{service}:{instance_id}", "Name": service, "Port": 1, "Meta": meta}
        _consul_call(standin, "PUT", "/v1/agent/service/register", body)

    return corrupt


def _consul_remover(standin: ConsulStandIn) -> Callable[[str, str], None]:
    def remove(service: str, instance_id: str) -> None:
        _consul_call(standin, "PUT", f"/v1/agent/service/deregister/{service}:{instance_id}")

    return remove


def _etcd_corrupter(cluster: EtcdCluster, prefix: str) -> Callable[[str, str, bytes], None]:
    def corrupt(service: str, instance_id: str, raw: bytes) -> None:
        cluster.etcdctl("put", f"{prefix}/{service}/{instance_id}", stdin=raw)

    return corrupt


def _etcd_remover(cluster: EtcdCluster, prefix: str) -> Callable[[str, str], None]:
    def remove(service: str, instance_id: str) -> None:
        cluster.etcdctl("del", f"{prefix}/{service}/{instance_id}")

    return remove


@pytest.fixture
def consul_standin() -> Iterator[ConsulStandIn]:
    """A fresh Consul stand-in (see ``consul_standin.py``) on 127.0.0.1, on its own thread."""
    with ConsulStandIn() as standin:
        yield standin


@pytest.fixture(params=BACKEND_NAMES)
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    name = request.param
    if name == "memory":
        namespace = uuid.uuid4().hex
        return Backend(
            "memory",
            f"memory://{namespace}",
            multiprocess=False,
            corrupt=_memory_corrupter(namespace),
            remove=_memory_remover(namespace),
        )
    if name == "sqlite":
        path = tmp_path / "registry.db"
        return Backend(
            "sqlite",
            f"sqlite://{path}",
            multiprocess=True,
            corrupt=_sqlite_corrupter(path),
            remove=_sqlite_remover(path),
        )
    if name == "consul":
        standin: ConsulStandIn = request.getfixturevalue("consul_standin")
        # TTL checks so a killed owner's registrations expire; the stand-in reaps them
        # 200 ms after their check goes critical (real Consul waits at least a minute).
        url = f"consul://{standin.address}?check=ttl&deregister_after=200ms"
        return Backend(
            "consul", url, multiprocess=True, corrupt=_consul_corrupter(standin), remove=_consul_remover(standin)
        )
    if name == "etcd":
        cluster: EtcdCluster = request.getfixturevalue("etcd_server")
        prefix = f"/test-{uuid.uuid4().hex[:12]}"  # one shared server: each test under its own prefix
        return Backend(
            "etcd",
            cluster.url(prefix),
            multiprocess=True,
            corrupt=_etcd_corrupter(cluster, prefix),
            remove=_etcd_remover(cluster, prefix),
        )
    raise AssertionError(f"no setup for backend {name}")
