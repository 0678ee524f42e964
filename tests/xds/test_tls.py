"""ADS over mTLS with the mesh's security settings, used by grpcio's own xDS client."""

from __future__ import annotations

import json
from pathlib import Path

import grpc
import pytest

from grpcmesh.config.models import SecurityConfig
from grpcmesh.security.certs import generate_dev_certs
from grpcmesh.security.tls import client_credentials
from grpcmesh.xds import XdsServer, bootstrap_json
from grpcmesh.xds.resources import LISTENER_TYPE
from tests.helpers import stop_process
from tests.xds.conftest import EchoFleet
from tests.xds.test_ads_server import AdsStream
from tests.xds.test_grpc_xds_client import start_client


@pytest.fixture
def certs(tmp_path: Path) -> dict[str, Path]:
    made = generate_dev_certs(tmp_path / "certs", ["xds-control-plane", "order-service"])
    plane, client = made.services["xds-control-plane"], made.services["order-service"]
    return {
        "ca": made.ca_file,
        "plane_cert": plane.cert_file,
        "plane_key": plane.key_file,
        "client_cert": client.cert_file,
        "client_key": client.key_file,
    }


def test_bootstrap_names_tls_credentials_when_tls_is_enabled(certs: dict[str, Path]) -> None:
    security = SecurityConfig(
        tls_enabled=True, ca_file=certs["ca"], cert_file=certs["client_cert"], key_file=certs["client_key"]
    )
    (server,) = json.loads(bootstrap_json("127.0.0.1:18000", security=security))["xds_servers"]
    (creds,) = server["channel_creds"]
    assert creds["type"] == "tls"
    assert creds["config"]["ca_certificate_file"] == str(certs["ca"].resolve())
    assert creds["config"]["certificate_file"] == str(certs["client_cert"].resolve())
    plain = json.loads(bootstrap_json("127.0.0.1:18000"))["xds_servers"][0]["channel_creds"]
    assert plain == [{"type": "insecure"}]


@pytest.mark.slow
async def test_grpc_xds_client_uses_the_control_plane_over_mtls(
    fleet: EchoFleet, certs: dict[str, Path], client_dir: Path, tmp_path: Path
) -> None:
    await fleet.add("a")
    server_security = SecurityConfig(
        tls_enabled=True,
        cert_file=certs["plane_cert"],
        key_file=certs["plane_key"],
        ca_file=certs["ca"],
        client_auth=True,
    )
    client_security = SecurityConfig(
        tls_enabled=True, ca_file=certs["ca"], cert_file=certs["client_cert"], key_file=certs["client_key"]
    )
    async with XdsServer(fleet.registry, security=server_security) as plane:
        bootstrap = tmp_path / "bootstrap.json"
        bootstrap.write_text(bootstrap_json(plane.address, node_id="tls-client", security=client_security))
        client = await start_client(client_dir, bootstrap)
        try:
            assert await client.next_reply(timeout=30) == "a"
        finally:
            await stop_process(client.proc)

        # Without a client certificate the mTLS control plane refuses the stream.
        credentials = client_credentials(certs["ca"])
        async with grpc.aio.secure_channel(plane.address, credentials) as channel:
            stream = AdsStream(channel, "no-cert")
            stream.send(LISTENER_TYPE, "echo-service")
            with pytest.raises(grpc.aio.AioRpcError) as raised:
                await stream.receive(timeout=10)
            assert raised.value.code() == grpc.StatusCode.UNAVAILABLE
