"""Real etcd processes for tests: a single node and a three-member cluster on 127.0.0.1.

Each member gets free ports and a data directory under the test's temporary directory, logs
to a file there, and is killed when its fixture ends. ``etcd`` comes from Debian's
``etcd-server`` package, installed by ``scripts/install-test-deps.sh`` (``make test`` runs it);
when it is missing the fixtures fail, saying so, rather than skipping.

Import the fixtures into a ``conftest.py`` to use them::

    from tests.etcd_server import (  # noqa: F401
        etcd_cluster, etcd_cluster_processes, etcd_private_server, etcd_server, etcd_tls_server
    )
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import ssl
import subprocess
import time
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.helpers import free_port
from tests.pki import TestPki, make_pki

INSTALL_HINT = "run scripts/install-test-deps.sh (make test does) to install Debian's etcd-server and etcd-client"


def etcd_binary(name: str = "etcd") -> str:
    """Path of ``etcd`` or ``etcdctl``; fails the test with how to install it when missing."""
    found = shutil.which(name) or (f"/usr/bin/{name}" if os.access(f"/usr/bin/{name}", os.X_OK) else None)
    if found is None:
        pytest.fail(f"{name} is not installed: {INSTALL_HINT}", pytrace=False)
    return found


@dataclass
class EtcdMember:
    name: str
    client_port: int
    peer_port: int
    data_dir: Path
    proc: subprocess.Popen[bytes] | None = None
    pki: TestPki | None = None
    """When set, clients must use TLS with a client certificate."""

    @property
    def client_url(self) -> str:
        return f"{'https' if self.pki else 'http'}://{self.endpoint}"

    @property
    def endpoint(self) -> str:
        return f"127.0.0.1:{self.client_port}"

    @property
    def peer_url(self) -> str:
        return f"http://127.0.0.1:{self.peer_port}"

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def healthy(self) -> bool:
        try:
            context = None
            if self.pki is not None:
                context = ssl.create_default_context(cafile=str(self.pki.ca))
                context.load_cert_chain(self.pki.client_cert, self.pki.client_key)
            with urllib.request.urlopen(f"{self.client_url}/health", timeout=0.5, context=context) as reply:
                return bool(json.loads(reply.read()).get("health") == "true")
        except (OSError, ValueError):
            return False


@dataclass
class EtcdCluster:
    """One or more etcd members started as child processes."""

    members: list[EtcdMember]
    token: str = field(default_factory=lambda: f"grpcmesh-test-{uuid.uuid4().hex[:8]}")

    @property
    def endpoints(self) -> str:
        """``host:port,host:port,...`` as an etcd:// URL takes them."""
        return ",".join(m.endpoint for m in self.members)

    def url(self, prefix: str = "/services") -> str:
        return f"etcd://{self.endpoints}{prefix}"

    def member_at(self, endpoint: str) -> EtcdMember:
        return next(m for m in self.members if m.endpoint == endpoint)

    def start(self, member: EtcdMember) -> None:
        initial = ",".join(f"{m.name}={m.peer_url}" for m in self.members)
        member.data_dir.mkdir(parents=True, exist_ok=True)
        log = (member.data_dir.parent / f"{member.name}.log").open("ab")
        try:
            member.proc = subprocess.Popen(
                [
                    etcd_binary(),
                    "--name", member.name,
                    "--data-dir", str(member.data_dir),
                    "--listen-client-urls", member.client_url,
                    "--advertise-client-urls", member.client_url,
                    "--listen-peer-urls", member.peer_url,
                    "--initial-advertise-peer-urls", member.peer_url,
                    "--initial-cluster", initial,
                    "--initial-cluster-token", self.token,
                    "--initial-cluster-state", "new",
                    "--logger", "zap",
                    "--log-level", "warn",
                    *self._tls_args(member),
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
            )  # fmt: skip
        finally:
            log.close()

    @staticmethod
    def _tls_args(member: EtcdMember) -> list[str]:
        if member.pki is None:
            return []
        return [
            "--cert-file", str(member.pki.server_cert),
            "--key-file", str(member.pki.server_key),
            "--trusted-ca-file", str(member.pki.ca),
            "--client-cert-auth",
        ]  # fmt: skip

    def wait_healthy(self, members: list[EtcdMember] | None = None, timeout: float = 30.0) -> None:
        """Block until every member (or ``members``) reports healthy (has a leader)."""
        deadline = time.monotonic() + timeout
        pending = list(members if members is not None else self.members)
        while pending:
            for member in pending:
                if not member.running:
                    raise RuntimeError(f"etcd member {member.name} exited; see {member.data_dir.parent}/*.log")
            pending = [m for m in pending if not m.healthy()]
            if pending and time.monotonic() > deadline:
                raise RuntimeError(f"etcd member(s) {[m.name for m in pending]} not healthy after {timeout:g}s")
            if pending:
                time.sleep(0.05)

    async def await_healthy(self, members: list[EtcdMember] | None = None, timeout: float = 30.0) -> None:
        """:meth:`wait_healthy` without blocking the event loop (so clients keep running)."""
        await asyncio.to_thread(self.wait_healthy, members, timeout)

    def kill(self, member: EtcdMember) -> None:
        """SIGKILL, as a crash would."""
        if member.proc is not None and member.proc.poll() is None:
            member.proc.kill()
            member.proc.wait()

    def wipe(self, member: EtcdMember) -> None:
        self.kill(member)
        shutil.rmtree(member.data_dir, ignore_errors=True)

    def stop(self) -> None:
        for member in self.members:
            self.kill(member)

    def etcdctl(self, *args: str, stdin: bytes | None = None) -> str:
        """Run ``etcdctl`` against the cluster; returns its stdout."""
        env = {**os.environ, "ETCDCTL_API": "3"}
        pki = self.members[0].pki
        tls = []
        if pki is not None:
            tls = ["--cacert", str(pki.ca), "--cert", str(pki.client_cert), "--key", str(pki.client_key)]
        result = subprocess.run(
            [etcd_binary("etcdctl"), "--endpoints", self.endpoints, *tls, *args],
            input=stdin,
            capture_output=True,
            env=env,
            timeout=20,
            check=False,
        )
        if result.returncode != 0:
            raise RuntimeError(f"etcdctl {' '.join(args)} failed: {result.stderr.decode(errors='replace')}")
        return result.stdout.decode()


def start_cluster(base: Path, size: int, *, tls: bool = False) -> EtcdCluster:
    """Start ``size`` members under ``base`` and wait until they are healthy.

    With ``tls``, clients must present a certificate from a CA written to ``base / "pki"``.
    """
    etcd_binary()
    pki = make_pki(base / "pki") if tls else None
    members = [EtcdMember(f"m{i}", free_port(), free_port(), base / f"m{i}.data", pki=pki) for i in range(size)]
    cluster = EtcdCluster(members)
    try:
        for member in members:
            cluster.start(member)
        cluster.wait_healthy()
    except BaseException:
        cluster.stop()
        raise
    return cluster


@pytest.fixture(scope="session")
def etcd_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EtcdCluster]:
    """One etcd node shared by the session; tests keep apart by using their own key prefix."""
    cluster = start_cluster(tmp_path_factory.mktemp("etcd-single"), 1)
    yield cluster
    cluster.stop()


@pytest.fixture
def etcd_private_server(tmp_path: Path) -> Iterator[EtcdCluster]:
    """A single etcd node of the test's own (for tests that kill or wipe it)."""
    cluster = start_cluster(tmp_path / "etcd", 1)
    yield cluster
    cluster.stop()


@pytest.fixture
def etcd_tls_server(tmp_path: Path) -> Iterator[EtcdCluster]:
    """A single etcd node that requires TLS with a client certificate (see ``members[0].pki``)."""
    cluster = start_cluster(tmp_path / "etcd", 1, tls=True)
    yield cluster
    cluster.stop()


@pytest.fixture(scope="session")
def etcd_cluster_processes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EtcdCluster]:
    cluster = start_cluster(tmp_path_factory.mktemp("etcd-cluster"), 3)
    yield cluster
    cluster.stop()


@pytest.fixture
def etcd_cluster(etcd_cluster_processes: EtcdCluster) -> Iterator[EtcdCluster]:
    """A three-member cluster; members a test killed are restarted (with their data) after it."""
    cluster = etcd_cluster_processes
    yield cluster
    stopped = [m for m in cluster.members if not m.running]
    for member in stopped:
        cluster.start(member)
    if stopped:
        cluster.wait_healthy()
