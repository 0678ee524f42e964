"""``grpcmesh register`` argument errors, and the agent reaching a TLS target with the config's security."""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from typer.testing import CliRunner

from grpcmesh import open_registry
from grpcmesh.agent import RegistrationAgent, agent_instance_id
from grpcmesh.cli import app
from grpcmesh.model import HealthStatus, ServiceInstance
from grpcmesh.security.certs import generate_dev_certs
from grpcmesh.security.tls import client_credentials, server_credentials

runner = CliRunner()


@pytest.mark.parametrize("target", ["localhost", "host:port", "10.0.0.1:70000", ":50051"])
def test_register_rejects_a_target_that_is_not_host_port(target: str) -> None:
    result = runner.invoke(app, ["register", "inventory-service", target, "-r", "memory://"])
    assert result.exit_code != 0
    assert "HOST:PORT" in result.output


def test_register_rejects_metadata_that_is_not_key_value() -> None:
    result = runner.invoke(app, ["register", "inventory-service", "127.0.0.1:1", "-r", "memory://", "-m", "zone"])
    assert result.exit_code != 0
    assert "KEY=VALUE" in result.output


def test_register_rejects_an_invalid_service_name() -> None:
    result = runner.invoke(app, ["register", "Not A Name", "127.0.0.1:1", "-r", "memory://"])
    assert result.exit_code != 0
    assert "service name" in result.output


def test_instance_id_is_stable_and_valid() -> None:
    assert agent_instance_id("inventory-service", "10.0.0.7", 50051) == "inventory-service@10.0.0.7:50051"
    assert agent_instance_id("svc", "::1", 1) == "svc@::1:1"


async def test_agent_follows_a_tls_target_with_client_certificates(tmp_path: Path) -> None:
    certs = generate_dev_certs(tmp_path, ["inventory-service", "agent"])
    target, agent_cert = certs.services["inventory-service"], certs.services["agent"]
    server = grpc.aio.server()
    status = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(status, server)
    credentials = server_credentials(target.cert_file, target.key_file, certs.ca_file)  # mTLS
    port = server.add_secure_port("127.0.0.1:0", credentials)
    await server.start()
    await status.set("", health_pb2.HealthCheckResponse.SERVING)
    instance = ServiceInstance(name="inventory-service", id="inv-1", address="127.0.0.1", port=port)
    try:
        async with open_registry("memory://") as registry:
            channel_creds = client_credentials(certs.ca_file, agent_cert.cert_file, agent_cert.key_file)
            agent = RegistrationAgent(registry, instance, credentials=channel_creds, check_interval=0.2)
            async with agent:
                await agent.wait_for(HealthStatus.SERVING, 5.0)
                await status.set("", health_pb2.HealthCheckResponse.NOT_SERVING)
                await agent.wait_for(HealthStatus.NOT_SERVING, 5.0)
    finally:
        await server.stop(None)
