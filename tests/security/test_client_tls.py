"""Client-side TLS from a ``security:`` section: the client's own settings, not the server's.

A client presents its certificate whenever cert_file/key_file are set (``client_auth`` is the
server's switch), a call-only client can turn TLS on with only a CA, and a refused handshake
is explained. Real servers on 127.0.0.1 with a throwaway CA.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest

from grpcmesh import ConfigError, Mesh
from grpcmesh.config import SecurityConfig, parse_config
from grpcmesh.protos import echo_pb2, echo_pb2_grpc
from grpcmesh.security import handshake_hint
from grpcmesh.testing import EchoServicer
from tests import pki as test_pki


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> test_pki.TestPki:
    return test_pki.make_pki(tmp_path_factory.mktemp("pki"))


def server_yaml(tmp_path: Path, pki: test_pki.TestPki, *, client_auth: bool) -> Path:
    config = tmp_path / "server.yaml"
    config.write_text(
        "service:\n  name: echo-service\n  port: 0\n  host: 127.0.0.1\n  propagation_delay: 0s\n"
        f"registry:\n  url: sqlite://{tmp_path}/reg.db\n"
        f"security:\n  tls_enabled: true\n  client_auth: {str(client_auth).lower()}\n"
        f"  cert_file: {pki.server_cert}\n  key_file: {pki.server_key}\n  ca_file: {pki.ca}\n"
    )
    return config


async def serve(config: Path) -> AsyncIterator[Mesh]:
    async with Mesh.from_config(config) as mesh:
        server = mesh.server()
        echo_pb2_grpc.add_EchoServicer_to_server(EchoServicer("e1"), server.grpc)
        async with server:
            yield mesh


@pytest.fixture
async def tls_server(tmp_path: Path, pki: test_pki.TestPki) -> AsyncIterator[Mesh]:
    async for mesh in serve(server_yaml(tmp_path, pki, client_auth=False)):
        yield mesh


@pytest.fixture
async def mtls_server(tmp_path: Path, pki: test_pki.TestPki) -> AsyncIterator[Mesh]:
    async for mesh in serve(server_yaml(tmp_path, pki, client_auth=True)):
        yield mesh


def client_yaml(tmp_path: Path, security: str) -> Path:
    config = tmp_path / "client.yaml"
    config.write_text(f"registry:\n  url: sqlite://{tmp_path}/reg.db\nsecurity:\n  tls_enabled: true\n{security}")
    return config


async def echo(config: Path) -> str:
    async with Mesh.from_config(config) as mesh:
        stub = echo_pb2_grpc.EchoStub(mesh.channel("echo-service"))
        reply = await stub.Unary(echo_pb2.EchoRequest(message="hi"), timeout=10)
        return reply.message


async def test_call_only_client_needs_only_a_ca(tls_server: Mesh, tmp_path: Path, pki: test_pki.TestPki) -> None:
    assert await echo(client_yaml(tmp_path, f"  ca_file: {pki.ca}\n")) == "hi"


async def test_client_presents_its_cert_without_client_auth(
    mtls_server: Mesh, tmp_path: Path, pki: test_pki.TestPki
) -> None:
    security = f"  ca_file: {pki.ca}\n  cert_file: {pki.client_cert}\n  key_file: {pki.client_key}\n"
    assert await echo(client_yaml(tmp_path, security)) == "hi"


async def test_refused_handshake_has_a_likely_cause(mtls_server: Mesh, tmp_path: Path, pki: test_pki.TestPki) -> None:
    config = client_yaml(tmp_path, f"  ca_file: {pki.ca}\n")
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await echo(config)
    assert info.value.code() is grpc.StatusCode.UNAVAILABLE
    hint = handshake_hint(info.value.details() or "", parse_config(config.read_text(), env={}).security)
    assert hint is not None
    assert "requires a client certificate" in hint


def test_hints_for_plaintext_and_untrusted_servers() -> None:
    off = SecurityConfig()
    on = SecurityConfig(tls_enabled=True)
    assert "expects TLS" in (handshake_hint("last error: UNAVAILABLE: ipv4:1.2.3.4:5: Socket closed", off) or "")
    assert "does not speak TLS" in (handshake_hint("SSL routines:OPENSSL_internal:WRONG_VERSION_NUMBER", on) or "")
    assert "not signed by a CA" in (handshake_hint("CERTIFICATE_VERIFY_FAILED: unable to get", on) or "")
    assert handshake_hint("Deadline Exceeded", on) is None


async def test_a_server_still_needs_its_cert_and_key(tmp_path: Path) -> None:
    config = tmp_path / "server.yaml"
    config.write_text("service:\n  name: echo-service\nregistry:\n  type: memory\nsecurity:\n  tls_enabled: true\n")
    async with Mesh.from_config(config) as mesh:
        with pytest.raises(ConfigError, match=r"cert_file and security.key_file are required to serve"):
            mesh.server()


async def test_streamed_request_to_a_refusing_server_fails_with_its_status(
    mtls_server: Mesh, tmp_path: Path, pki: test_pki.TestPki
) -> None:
    """A bidi call whose only endpoint cannot connect (no client cert) ends with gRPC's status, not a crash."""
    async with Mesh.from_config(client_yaml(tmp_path, f"  ca_file: {pki.ca}\n")) as mesh:
        stub = echo_pb2_grpc.EchoStub(mesh.channel("echo-service"))

        async def exchange() -> None:
            call = stub.BidiStream(timeout=5)
            await call.write(echo_pb2.EchoRequest(message="hi"))
            await call.read()

        for _ in range(3):
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await exchange()
            assert info.value.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)
