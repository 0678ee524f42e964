"""The ``backend`` fixture: every registry backend the conformance suite runs against.

To add a backend, add its name to ``BACKEND_NAMES`` and a branch to ``backend`` that
returns a :class:`Backend` (starting whatever server it needs through a fixture).
"""

from __future__ import annotations

import sqlite3
import uuid
from collections.abc import Callable
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

BACKEND_NAMES = ["memory", "sqlite", "etcd"]


@dataclass
class Backend:
    name: str
    url: str
    multiprocess: bool
    """True when separate processes share the store (so owner death can be tested)."""
    corrupt: Callable[[str, str, bytes], None] | None = None
    """Writes raw bytes as the record of (service, id), bypassing validation."""

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


def _etcd_corrupter(cluster: EtcdCluster, prefix: str) -> Callable[[str, str, bytes], None]:
    def corrupt(service: str, instance_id: str, raw: bytes) -> None:
        cluster.etcdctl("put", f"{prefix}/{service}/{instance_id}", stdin=raw)

    return corrupt


@pytest.fixture(params=BACKEND_NAMES)
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    name = request.param
    if name == "memory":
        return Backend("memory", f"memory://{uuid.uuid4().hex}", multiprocess=False)
    if name == "sqlite":
        path = tmp_path / "registry.db"
        return Backend("sqlite", f"sqlite://{path}", multiprocess=True, corrupt=_sqlite_corrupter(path))
    if name == "etcd":
        cluster: EtcdCluster = request.getfixturevalue("etcd_server")
        prefix = f"/test-{uuid.uuid4().hex[:12]}"  # one shared server: each test under its own prefix
        return Backend("etcd", cluster.url(prefix), multiprocess=True, corrupt=_etcd_corrupter(cluster, prefix))
    raise AssertionError(f"no setup for backend {name}")
