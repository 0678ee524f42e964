"""The CLI with --config, the services' environment overrides, TLS flags, and hostile registry data.

Each test runs the real ``grpcmesh`` command (``python -m grpcmesh.cli``) against a real sqlite
registry in a tmp dir and, for TLS, a real mTLS service started through ``Mesh``.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from grpcmesh import Mesh, ServiceInstance, open_registry
from grpcmesh.protos import echo_pb2_grpc
from grpcmesh.testing import EchoServicer
from tests import pki as test_pki
from tests.cli.test_registry_cmds import run_cli

MARKUP_VERSION = "[/x]v1[bold]"
"""A version the model accepts that rich would read as markup (a closing tag with no opening one)."""


async def cli(*args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    """Run the CLI off the event loop, so registrations and servers here keep running meanwhile."""
    out = await asyncio.to_thread(run_cli, *args, env_extra=env)
    return out.returncode, out.stdout, out.stderr


async def test_registry_data_is_never_read_as_markup(tmp_path: Path) -> None:
    url = f"sqlite://{tmp_path}/reg.db"
    async with open_registry(url) as reg:
        await reg.register(
            ServiceInstance(name="user-service", id="m1", address="127.0.0.1", port=1, version=MARKUP_VERSION)
        )
        code, out, err = await cli("ls", "--registry", url)
        assert code == 0, err
        assert MARKUP_VERSION in out
        code, out, err = await cli("watch", "user-service", "--count", "1", "--registry", url)
        assert code == 0, err
        assert MARKUP_VERSION in out
        code, out, err = await cli("health", "user-service", "--timeout", "1", "--registry", url)
        assert code == 1, err  # nothing listens on port 1: NOT_SERVING, printed, not a crash
        assert MARKUP_VERSION in out
        assert "Traceback" not in err


async def test_ls_piped_prints_whole_values(tmp_path: Path) -> None:
    url = f"sqlite://{tmp_path}/reg.db"
    version = "v1-" + "a" * 60
    endpoints = tuple(f"shop.user.v1.UserService/GetUserWithAVeryLongName{i}" for i in range(3))
    async with open_registry(url) as reg:
        await reg.register(
            ServiceInstance(
                name="user-service", id="w1", address="127.0.0.1", port=5001, version=version, endpoints=endpoints
            )
        )
        code, out, err = await cli("ls", "--registry", url)
    assert code == 0, err
    # Not cut or folded at 80 columns although stdout is a pipe here.
    assert version in out
    assert ",".join(endpoints) in out


async def test_registry_type_and_address_from_the_environment(tmp_path: Path) -> None:
    db = tmp_path / "env.db"
    async with open_registry(f"sqlite://{db}") as reg:
        await reg.register(ServiceInstance(name="user-service", id="e1", address="127.0.0.1", port=5001))
        code, out, err = await cli(
            "ls", "--json", env={"GRPCMESH_REGISTRY_TYPE": "sqlite", "GRPCMESH_REGISTRY_ADDRESS": str(db)}
        )
    assert code == 0, err
    assert [i["id"] for i in json.loads(out)] == ["e1"]


async def test_config_file_names_the_registry(tmp_path: Path) -> None:
    db = tmp_path / "cfg.db"
    config = tmp_path / "svc.yaml"
    config.write_text(f"registry:\n  type: sqlite\n  address: {db}\n")
    async with open_registry(f"sqlite://{db}") as reg:
        await reg.register(ServiceInstance(name="user-service", id="c1", address="127.0.0.1", port=5001))
        code, out, err = await cli("ls", "--json", "--config", str(config))
        assert code == 0, err
        assert [i["id"] for i in json.loads(out)] == ["c1"]
        # --registry beats the file.
        code, out, err = await cli("ls", "--json", "--config", str(config), "--registry", f"sqlite://{tmp_path}/o.db")
        assert code == 0, err
        assert json.loads(out) == []


async def test_config_file_errors_are_one_line(tmp_path: Path) -> None:
    code, _, err = await cli("ls", "--config", str(tmp_path / "missing.yaml"))
    assert code == 2
    assert "configuration file not found" in err
    assert "Traceback" not in err


async def test_call_to_an_unknown_service_lists_known_ones(tmp_path: Path) -> None:
    url = f"sqlite://{tmp_path}/reg.db"
    async with open_registry(url) as reg:
        await reg.register(ServiceInstance(name="user-service", id="u1", address="127.0.0.1", port=5001))
        await reg.register(ServiceInstance(name="order-service", id="o1", address="127.0.0.1", port=5002))
        code, _, err = await cli("call", "ghost-service", "Echo", "{}", "--timeout", "30", "--registry", url)
    assert code == 2
    assert "no instance of 'ghost-service'" in err
    assert "known services: order-service, user-service" in err


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> test_pki.TestPki:
    return test_pki.make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture
async def mtls_service(tmp_path: Path, pki: test_pki.TestPki) -> AsyncIterator[str]:
    """An echo service requiring client certificates, registered in a tmp sqlite registry; yields its URL."""
    url = f"sqlite://{tmp_path}/mtls.db"
    config = tmp_path / "echo.yaml"
    config.write_text(
        "service:\n  name: echo-service\n  port: 0\n  host: 127.0.0.1\n  propagation_delay: 0s\n"
        f"registry:\n  url: {url}\n"
        f"security:\n  tls_enabled: true\n  client_auth: true\n  cert_file: {pki.server_cert}\n"
        f"  key_file: {pki.server_key}\n  ca_file: {pki.ca}\n"
    )
    async with Mesh.from_config(config) as mesh:
        server = mesh.server()
        echo_pb2_grpc.add_EchoServicer_to_server(EchoServicer("e1"), server.grpc)
        async with server:
            yield url


async def test_health_and_call_against_an_mtls_service(
    mtls_service: str, pki: test_pki.TestPki, tmp_path: Path
) -> None:
    url = mtls_service
    tls = ["--ca", str(pki.ca), "--cert", str(pki.client_cert), "--key", str(pki.client_key)]
    code, out, err = await cli("health", "echo-service", "--json", "--registry", url, *tls)
    assert code == 0, (out, err)
    assert json.loads(out)["status"] == "SERVING"

    code, out, err = await cli("call", "echo-service", "Unary", '{"message": "hi"}', "--registry", url, *tls)
    assert code == 0, (out, err)
    assert json.loads(out)["message"] == "hi"

    # The same from a client config file (what a service's own YAML holds).
    client = tmp_path / "client.yaml"
    client.write_text(
        f"registry:\n  url: {url}\nsecurity:\n  tls_enabled: true\n  ca_file: {pki.ca}\n"
        f"  cert_file: {pki.client_cert}\n  key_file: {pki.client_key}\n"
    )
    code, out, err = await cli("health", "echo-service", "--json", "--config", str(client))
    assert code == 0, (out, err)


async def test_missing_client_certificate_is_explained(mtls_service: str, pki: test_pki.TestPki) -> None:
    code, out, err = await cli(
        "health", "echo-service", "--json", "--timeout", "2", "--registry", mtls_service, "--ca", str(pki.ca)
    )
    assert code == 1
    [instance] = json.loads(out)["instances"]
    assert "requires a client certificate" in instance["error"], instance

    code, out, err = await cli(
        "call", "echo-service", "Unary", "{}", "--timeout", "3", "--registry", mtls_service, "--ca", str(pki.ca)
    )
    assert code == 1
    assert "requires a client certificate" in err, err
