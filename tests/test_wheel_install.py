"""A user's install: build the wheel, install it into fresh virtualenvs outside the checkout, use it.

* core (``pip install grpcmesh``): none of the optional packages comes along, ``import grpcmesh``
  works, a feature without its extra and the ``grpcmesh`` command without ``[cli]`` name the
  ``pip install`` to run;
* ``[all]``: a traced service exports its spans to a real OTLP/gRPC receiver (run here), the
  xDS control plane serves from the same environment, and ``grpcmesh demo --seconds 10``
  reports 0 failed calls with the shop the wheel ships.

Nothing here imports from the checkout: every child runs in a temp dir with the venv's own
Python and no PYTHONPATH. One wheel and one venv per kind for the whole module; pip's cache
makes a re-run cheap.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import grpc
import pytest
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

ROOT = Path(__file__).resolve().parent.parent
OPTIONAL = ("aiohttp", "opentelemetry-sdk", "xds-protos", "aetcd", "typer", "rich", "cryptography")
"""Distributions a core install must not pull in."""

INSTALL_TIMEOUT = 600.0
"""Seconds for one pip run (a cold cache downloads the [all] dependencies)."""


def clean_env(home: Path) -> dict[str, str]:
    """The environment of a user's shell: no checkout on the path, no grpcmesh overrides."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GRPCMESH_", "PYTHON", "VIRTUAL_ENV"))}
    env.update(XDG_DATA_HOME=str(home / "data"), PYTHONUNBUFFERED="1")
    return env


def sh(argv: list[str], cwd: Path, timeout: float = INSTALL_TIMEOUT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, cwd=cwd, env=clean_env(cwd), capture_output=True, text=True, timeout=timeout)


SOURCE_IGNORE = shutil.ignore_patterns(
    ".git", ".venv", "__pycache__", "*.pyc", ".*_cache", ".protos-stamp", "dist", "test-artifacts", "*.db"
)


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel, built from a copy of the source tree (the build hook writes generated code into it)."""
    source = tmp_path_factory.mktemp("source") / "grpcmesh"
    shutil.copytree(ROOT, source, ignore=SOURCE_IGNORE)
    out = tmp_path_factory.mktemp("wheel")
    built = sh([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(out), str(source)], out)
    assert built.returncode == 0, built.stderr[-3000:]
    [found] = out.glob("grpcmesh-*.whl")
    return found


def make_venv(base: Path, requirement: str) -> Path:
    """A fresh venv with ``requirement`` installed; returns its bin directory."""
    made = sh([sys.executable, "-m", "venv", str(base / "venv")], base)
    assert made.returncode == 0, made.stderr
    bin_dir = base / "venv" / "bin"
    installed = sh([str(bin_dir / "python"), "-m", "pip", "install", "-q", requirement], base)
    assert installed.returncode == 0, installed.stderr[-3000:]
    return bin_dir


@pytest.fixture(scope="module")
def core(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_venv(tmp_path_factory.mktemp("core"), str(wheel))


@pytest.fixture(scope="module")
def full(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_venv(tmp_path_factory.mktemp("all"), f"{wheel}[all]")


@pytest.fixture(scope="module")
def cli_only(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_venv(tmp_path_factory.mktemp("cli"), f"{wheel}[cli]")


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    """A directory outside the checkout to run the user's commands in."""
    assert not tmp_path.is_relative_to(ROOT)
    return tmp_path


def installed(bin_dir: Path, cwd: Path) -> set[str]:
    listed = sh([str(bin_dir / "python"), "-m", "pip", "list", "--format=freeze"], cwd)
    return {line.split("==")[0].lower() for line in listed.stdout.splitlines() if "==" in line}


def test_core_install_is_small_and_names_extras(core: Path, workdir: Path) -> None:
    assert not installed(core, workdir) & set(OPTIONAL)
    script = textwrap.dedent(
        """
        import sys
        import grpcmesh
        assert "checkout" not in grpcmesh.__file__
        try:
            grpcmesh.open_registry("etcd://127.0.0.1:2379")
        except grpcmesh.MissingExtraError as exc:
            print(exc)
        config = grpcmesh.MeshConfig.model_validate({"tracing": {"enabled": True}})
        try:
            grpcmesh.Mesh("memory://", config=config)
        except grpcmesh.MissingExtraError as exc:
            print(exc)
        """
    )
    out = sh([str(core / "python"), "-c", script], workdir, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "pip install 'grpcmesh[etcd]'" in out.stdout
    assert "pip install 'grpcmesh[otel]'" in out.stdout
    cli = sh([str(core / "grpcmesh"), "ls"], workdir, timeout=120)
    assert cli.returncode == 1
    assert "pip install 'grpcmesh[cli]'" in cli.stderr
    assert "Traceback" not in cli.stderr


def test_cli_extra_alone(cli_only: Path, workdir: Path) -> None:
    """With [cli] only, the core commands work and the others name their extra (no traceback)."""
    assert not installed(cli_only, workdir) & {"aiohttp", "opentelemetry-sdk", "aetcd"}
    listed = sh([str(cli_only / "grpcmesh"), "ls", "--json", "--registry", "sqlite:registry.db"], workdir, 120)
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout.strip() == "[]"
    certs = sh([str(cli_only / "grpcmesh"), "certs", "dev", "greeter", "--out", "certs"], workdir, 120)
    assert certs.returncode == 0, certs.stderr
    assert (workdir / "certs" / "greeter.pem").is_file()
    dashboard = sh([str(cli_only / "grpcmesh"), "dashboard", "--port", "0"], workdir, 120)
    assert dashboard.returncode == 1
    assert "pip install 'grpcmesh[dashboard]'" in dashboard.stderr
    assert "Traceback" not in dashboard.stderr


class Collector(trace_service_pb2_grpc.TraceServiceServicer):
    """A real OTLP/gRPC trace receiver that keeps what it is sent."""

    def __init__(self) -> None:
        self.requests: list[trace_service_pb2.ExportTraceServiceRequest] = []

    async def Export(self, request: Any, context: Any) -> trace_service_pb2.ExportTraceServiceResponse:
        self.requests.append(request)
        return trace_service_pb2.ExportTraceServiceResponse()


TRACED_SERVICE = """
import asyncio

import grpcmesh
from grpcmesh.protos import echo_pb2, echo_pb2_grpc
from grpcmesh.testing import EchoServicer


async def main() -> None:
    async with grpcmesh.Mesh.from_config("traced.yaml") as mesh:
        server = mesh.server()
        echo_pb2_grpc.add_EchoServicer_to_server(EchoServicer("traced-1"), server.grpc)
        async with server:
            stub = echo_pb2_grpc.EchoStub(mesh.channel("traced-service"))
            print((await stub.Unary(echo_pb2.EchoRequest(message="traced"), timeout=10)).message)


asyncio.run(main())
"""


async def test_all_extras_trace_to_a_real_receiver(full: Path, workdir: Path) -> None:
    collector = Collector()
    receiver = grpc.aio.server()
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(collector, receiver)
    port = receiver.add_insecure_port("127.0.0.1:0")
    await receiver.start()
    try:
        (workdir / "traced.yaml").write_text(
            "service:\n  name: traced-service\n  host: 127.0.0.1\n  port: 0\n  propagation_delay: 0s\n"
            "registry:\n  url: sqlite:registry.db\n"
            f"tracing:\n  enabled: true\n  otlp_endpoint: http://127.0.0.1:{port}\n"
        )
        (workdir / "traced.py").write_text(TRACED_SERVICE)
        out = await asyncio.to_thread(sh, [str(full / "python"), "traced.py"], workdir, 180)
    finally:
        await receiver.stop(None)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.strip() == "traced"
    spans = [
        span
        for request in collector.requests
        for rs in request.resource_spans
        for scope in rs.scope_spans
        for span in scope.spans
    ]
    names = {span.name for span in spans}
    assert "grpcmesh.echo.v1.Echo/Unary" in names, names
    assert len(spans) >= 2  # the server's span and the client's


def test_all_extras_serve_xds(full: Path, workdir: Path) -> None:
    proc = subprocess.Popen(
        [str(full / "grpcmesh"), "xds", "serve", "--registry", "sqlite:registry.db", "--port", "0"],
        cwd=workdir,
        env=clean_env(workdir),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline()  # blocks until the server is up or the process ends
        assert "xDS control plane listening on 127.0.0.1:" in first, (first, proc.stderr.read() if proc.stderr else "")
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    bootstrap = sh([str(full / "grpcmesh"), "xds", "bootstrap", "--server", "127.0.0.1:18000"], workdir, 120)
    assert bootstrap.returncode == 0, bootstrap.stderr
    assert '"server_uri": "127.0.0.1:18000"' in bootstrap.stdout


def test_all_extras_run_the_demo(full: Path, workdir: Path) -> None:
    out = sh([str(full / "grpcmesh"), "demo", "--seconds", "10"], workdir, timeout=300)
    assert out.returncode == 0, (out.stdout[-3000:], out.stderr[-3000:])
    assert "failed calls: 0 " in out.stdout, out.stdout[-3000:]
