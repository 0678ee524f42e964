"""``grpcmesh xds bootstrap`` and ``grpcmesh xds serve`` as a user runs them."""

from __future__ import annotations

import json
from pathlib import Path

import grpc
from typer.testing import CliRunner

from grpcmesh.cli import app
from grpcmesh.xds.resources import LISTENER_TYPE
from tests.helpers import free_port, read_line_with, start_python, stop_process
from tests.xds import messages
from tests.xds.test_ads_server import AdsStream

runner = CliRunner()


def test_bootstrap_prints_the_json_for_the_given_server(tmp_path: Path) -> None:
    result = runner.invoke(app, ["xds", "bootstrap", "--server", "127.0.0.1:18123", "--node-id", "java-client"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["xds_servers"][0]["server_uri"] == "127.0.0.1:18123"
    assert data["node"]["id"] == "java-client"

    out = tmp_path / "bootstrap.json"
    assert runner.invoke(app, ["xds", "bootstrap", "--server", "127.0.0.1:18123", "-o", str(out)]).exit_code == 0
    assert json.loads(out.read_text())["xds_servers"][0]["server_uri"] == "127.0.0.1:18123"


def test_bootstrap_rejects_a_server_without_port() -> None:
    result = runner.invoke(app, ["xds", "bootstrap", "--server", "localhost"])
    assert result.exit_code != 0
    assert "server_uri" in result.output


async def test_serve_runs_an_ads_server_on_the_given_port(tmp_path: Path) -> None:
    port = free_port()
    proc = await start_python(
        "-c",
        "from grpcmesh.cli import main; main()",
        "xds",
        "serve",
        "--registry",
        f"sqlite:///{tmp_path / 'registry.db'}",
        "--port",
        str(port),
    )
    try:
        line = await read_line_with(proc, "listening on")
        assert f"127.0.0.1:{port}" in line
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            stream = AdsStream(channel, "cli-test")
            stream.send(LISTENER_TYPE, "user-service")
            response = await stream.receive(timeout=10)
            listener = messages.Listener()
            assert response.resources[0].Unpack(listener)
            assert listener.name == "user-service"
            stream.call.cancel()
    finally:
        await stop_process(proc)


def test_bootstrap_with_a_tls_config_names_tls_credentials(tmp_path: Path) -> None:
    config = tmp_path / "mesh.yaml"
    config.write_text(
        "security:\n"
        "  tls_enabled: true\n"
        f"  ca_file: {tmp_path / 'ca.pem'}\n"
        f"  cert_file: {tmp_path / 'client.pem'}\n"
        f"  key_file: {tmp_path / 'client-key.pem'}\n"
    )
    result = runner.invoke(app, ["xds", "bootstrap", "--server", "127.0.0.1:18123", "--config", str(config)])
    assert result.exit_code == 0, result.output
    (creds,) = json.loads(result.stdout)["xds_servers"][0]["channel_creds"]
    assert creds["type"] == "tls"
    assert creds["config"]["certificate_file"] == str(tmp_path / "client.pem")


def test_serve_rejects_a_bad_policy_file_with_the_key_path(tmp_path: Path) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text("services:\n  echo-service:\n    split: {v1: -5}\n")
    result = runner.invoke(app, ["xds", "serve", "-r", "memory://", "--port", "0", "--policy", str(policy)])
    assert result.exit_code != 0
    assert "services.echo-service.split.v1" in result.output
