"""Mesh: configuration drives servers; TLS from the security section."""

from __future__ import annotations

import datetime
import ipaddress
from pathlib import Path

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from grpcmesh import ConfigError, HealthStatus, Mesh, ServerError, check_service_health
from grpcmesh.protos import echo_pb2, echo_pb2_grpc
from grpcmesh.server import check_instance_health
from grpcmesh.testing import EchoServicer


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "svc.yaml"
    path.write_text(text)
    return path


async def test_server_defaults_come_from_the_config(tmp_path: Path) -> None:
    config = write(
        tmp_path,
        "service:\n  name: orders\n  version: v2.1\n  port: 0\n  weight: 7\n  propagation_delay: 0s\n"
        "  metadata:\n    zone: ${ZONE:-eu}\n"
        "registry:\n  type: memory\n  address: mesh-test-config\n  deregister_after: 5s\n"
        "dependencies:\n  - name: stock\n    required: false\n",
    )
    async with Mesh.from_config(config) as mesh:
        assert mesh.config.service is not None
        server = mesh.server()
        echo_pb2_grpc.add_EchoServicer_to_server(EchoServicer("o"), server.grpc)
        assert server.settings.ttl == 5.0
        async with server:
            [instance] = await mesh.registry.get_service("orders")
            assert (instance.version, instance.weight, instance.dependencies) == ("v2.1", 7, ("stock",))
            assert instance.metadata["zone"] == "eu"
            assert instance.port == server.port
            # Arguments override the config.
            other = mesh.server("orders-admin", version="v9", dependencies=[])
            assert (other.settings.version, other.settings.dependencies) == ("v9", ())


async def test_environment_picks_the_registry(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    db = tmp_path / "env.db"
    monkeypatch.setenv("GRPCMESH_REGISTRY", f"sqlite://{db}")
    mesh = Mesh.from_config(write(tmp_path, "registry:\n  type: consul\n  address: nowhere:8500\n"))
    async with mesh:
        assert mesh.config.registry.resolved_url == f"sqlite://{db}"
        assert await mesh.registry.list_services() == []
    assert db.exists()


async def test_server_without_a_name_is_a_config_error() -> None:
    async with Mesh("memory://") as mesh:
        with pytest.raises(ConfigError, match=r"name=\.\.\. or set service\.name"):
            mesh.server()


def _pem_pair(tmp_path: Path) -> tuple[Path, Path, bytes]:
    """A CA and a server certificate for 127.0.0.1 signed by it; returns cert, key files and the CA PEM."""
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "grpcmesh test CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
        .sign(ca_key, hashes.SHA256())
    )
    cert_file, key_file = tmp_path / "server.crt", tmp_path / "server.key"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return cert_file, key_file, ca.public_bytes(serialization.Encoding.PEM)


async def test_tls_from_the_security_section(tmp_path: Path) -> None:
    cert_file, key_file, ca_pem = _pem_pair(tmp_path)
    config = write(
        tmp_path,
        "service:\n  name: secure\n  propagation_delay: 0s\nregistry:\n  url: memory://\n"
        f"security:\n  tls_enabled: true\n  cert_file: {cert_file}\n  key_file: {key_file}\n",
    )
    async with Mesh.from_config(config) as mesh:
        server = mesh.server()
        echo_pb2_grpc.add_EchoServicer_to_server(EchoServicer("s"), server.grpc)
        async with server:
            assert server.instance.metadata["tls"] == "true"
            trusted = grpc.ssl_channel_credentials(root_certificates=ca_pem)
            report = await check_service_health(mesh.registry, "secure", timeout=5, credentials=trusted)
            assert report.status is HealthStatus.SERVING
            async with grpc.aio.secure_channel(server.target, trusted) as channel:
                reply = await echo_pb2_grpc.EchoStub(channel).Unary(echo_pb2.EchoRequest(message="tls"), timeout=5)
                assert reply.message == "tls"
            plaintext = await check_instance_health(server.instance, timeout=2)
            assert plaintext.status is HealthStatus.NOT_SERVING  # a plaintext client cannot talk to it


async def test_unreadable_tls_file_names_the_file(tmp_path: Path) -> None:
    config = write(
        tmp_path,
        "service:\n  name: secure\nregistry:\n  url: memory://\n"
        f"security:\n  tls_enabled: true\n  cert_file: {tmp_path}/absent.crt\n  key_file: {tmp_path}/absent.key\n",
    )
    async with Mesh.from_config(config) as mesh:
        server = mesh.server()
        with pytest.raises(ServerError, match=r"cert_file .*absent\.crt"):
            await server.start()
        assert await mesh.registry.get_service("secure") == []
