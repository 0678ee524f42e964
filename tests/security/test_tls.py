"""mTLS with the dev CA: certificates are checked, and the certificate identity drives the policy."""

from __future__ import annotations

import stat
from pathlib import Path

import grpc
import pytest
from cryptography import x509

from grpcmesh.errors import ConfigError
from grpcmesh.middleware import auth_server_interceptor
from grpcmesh.security import DevCerts, client_credentials, generate_dev_certs, server_credentials
from tests.middleware.echo_calls import call_kind, echo_server, echo_stub

SERVICES = ["echo-service", "order-service", "user-service"]


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> DevCerts:
    return generate_dev_certs(tmp_path_factory.mktemp("certs"), SERVICES)


@pytest.fixture(scope="module")
def foreign_certs(tmp_path_factory: pytest.TempPathFactory) -> DevCerts:
    return generate_dev_certs(tmp_path_factory.mktemp("foreign"), ["order-service"])


def mtls_server(certs: DevCerts) -> grpc.ServerCredentials:
    echo = certs.services["echo-service"]
    return server_credentials(echo.cert_file, echo.key_file, ca_file=certs.ca_file)


def as_client(certs: DevCerts, name: str | None, ca: DevCerts | None = None) -> grpc.ChannelCredentials:
    trust = (ca or certs).ca_file
    if name is None:
        return client_credentials(trust)
    pair = certs.services[name]
    return client_credentials(trust, pair.cert_file, pair.key_file)


def test_dev_certs_carry_service_name_localhost_and_loopback(certs: DevCerts) -> None:
    ca = x509.load_pem_x509_certificate(certs.ca_file.read_bytes())
    for name in SERVICES:
        pair = certs.services[name]
        cert = x509.load_pem_x509_certificate(pair.cert_file.read_bytes())
        cert.verify_directly_issued_by(ca)
        sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        assert sans.get_values_for_type(x509.DNSName) == [name, "localhost"]
        assert [str(ip) for ip in sans.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]
        assert stat.S_IMODE(pair.key_file.stat().st_mode) == 0o600
    assert stat.S_IMODE(certs.ca_key_file.stat().st_mode) == 0o600


async def test_mtls_refuses_clients_without_a_valid_certificate(certs: DevCerts, foreign_certs: DevCerts) -> None:
    async with echo_server(credentials=mtls_server(certs)) as port:
        async with echo_stub(port, credentials=as_client(certs, "order-service")) as stub:
            assert await call_kind(stub, "unary") == grpc.StatusCode.OK
            assert await call_kind(stub, "bidi_stream") == grpc.StatusCode.OK
        async with echo_stub(port, credentials=as_client(certs, None)) as stub:  # no client certificate
            assert await call_kind(stub, "unary") == grpc.StatusCode.UNAVAILABLE
        # A certificate for the right name, signed by another CA.
        async with echo_stub(port, credentials=as_client(foreign_certs, "order-service", ca=certs)) as stub:
            assert await call_kind(stub, "unary") == grpc.StatusCode.UNAVAILABLE
        async with echo_stub(port) as stub:  # plaintext
            assert await call_kind(stub, "unary") == grpc.StatusCode.UNAVAILABLE


async def test_certificate_identity_drives_the_caller_policy(certs: DevCerts) -> None:
    policy = {"order-service": ["/grpcmesh.echo.v1.Echo/Unary"]}
    async with echo_server([auth_server_interceptor(None, policy=policy)], credentials=mtls_server(certs)) as port:
        async with echo_stub(port, credentials=as_client(certs, "order-service")) as stub:
            assert await call_kind(stub, "unary") == grpc.StatusCode.OK
            assert await call_kind(stub, "server_stream") == grpc.StatusCode.PERMISSION_DENIED
        async with echo_stub(port, credentials=as_client(certs, "user-service")) as stub:
            assert await call_kind(stub, "unary") == grpc.StatusCode.PERMISSION_DENIED


def test_missing_files_and_half_pairs_name_the_field(certs: DevCerts, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"security\.cert_file"):
        server_credentials(tmp_path / "missing.pem", certs.services["echo-service"].key_file)
    with pytest.raises(ConfigError, match=r"security\.ca_file"):
        server_credentials(
            certs.services["echo-service"].cert_file, certs.services["echo-service"].key_file, require_client_cert=True
        )
    with pytest.raises(ConfigError, match="key_file"):
        client_credentials(certs.ca_file, cert_file=certs.services["echo-service"].cert_file)
    with pytest.raises(ConfigError, match=r"services\[1\]"):
        generate_dev_certs(tmp_path, ["ok-service", "bad name"])
