"""A mesh call whose TLS handshake fails says the likely cause in its error, not just "Socket closed".

Real servers on 127.0.0.1 with a throwaway CA (see tests/security/test_client_tls.py): an mTLS
server refusing a client without a certificate, a client trusting another CA, and a TLS client
against a plaintext server. Channels built without TLS settings keep gRPC's own error.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest

from grpcmesh import Mesh, MeshError, ServiceInstance, open_registry
from grpcmesh.client import MeshChannel
from grpcmesh.config import SecurityConfig
from grpcmesh.protos import echo_pb2, echo_pb2_grpc
from grpcmesh.security import handshake_hint, mesh_channel_credentials
from grpcmesh.testing import EchoServicer
from tests import pki as test_pki
from tests.security.test_client_tls import client_yaml, serve, server_yaml

REQUEST = echo_pb2.EchoRequest(message="hi")


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> test_pki.TestPki:
    return test_pki.make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture
async def mtls_server(tmp_path: Path, pki: test_pki.TestPki) -> AsyncIterator[Mesh]:
    async for mesh in serve(server_yaml(tmp_path, pki, client_auth=True)):
        yield mesh


@pytest.fixture
async def plain_port() -> AsyncIterator[int]:
    server = grpc.aio.server()
    echo_pb2_grpc.add_EchoServicer_to_server(EchoServicer("plain"), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    yield port
    await server.stop(None)


async def test_mtls_server_refusing_a_client_without_certificate_is_explained(
    mtls_server: Mesh, tmp_path: Path, pki: test_pki.TestPki
) -> None:
    async with Mesh.from_config(client_yaml(tmp_path, f"  ca_file: {pki.ca}\n")) as mesh:
        stub = echo_pb2_grpc.EchoStub(mesh.channel("echo-service"))
        call = stub.Unary(REQUEST, timeout=10)
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await call
        error = info.value
        assert error.code() is grpc.StatusCode.UNAVAILABLE
        assert isinstance(error, MeshError)
        details = error.details() or ""
        assert "likely cause" in details
        assert "requires a client certificate" in details
        assert "cert_file" in details
        assert isinstance(error.__cause__, grpc.aio.AioRpcError)  # gRPC's own error is kept
        # The call object reports the same status.
        assert await call.code() is grpc.StatusCode.UNAVAILABLE
        assert "requires a client certificate" in await call.details()

        # A streamed request fails on its first read with the same explanation.
        async def exchange() -> None:
            bidi = stub.BidiStream(timeout=10)
            await bidi.write(REQUEST)
            await bidi.read()

        with pytest.raises(grpc.aio.AioRpcError) as streamed:
            await exchange()
        assert "requires a client certificate" in (streamed.value.details() or "")


async def test_tls_client_against_a_plaintext_server_is_explained(
    plain_port: int, tmp_path: Path, pki: test_pki.TestPki
) -> None:
    security = SecurityConfig(tls_enabled=True, ca_file=str(pki.ca))
    registry = open_registry(f"sqlite://{tmp_path}/hint.db")
    await registry.register(ServiceInstance(name="echo-plain", id="p1", address="127.0.0.1", port=plain_port))
    try:
        credentials = mesh_channel_credentials(security)
        async with MeshChannel(registry, "echo-plain", credentials=credentials, security=security) as channel:
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await echo_pb2_grpc.EchoStub(channel).Unary(REQUEST, timeout=10)
        assert info.value.code() is grpc.StatusCode.UNAVAILABLE
        assert "likely cause" in (info.value.details() or "")
        # Without the security settings the same failure keeps gRPC's own details.
        async with MeshChannel(registry, "echo-plain", credentials=credentials) as channel:
            with pytest.raises(grpc.aio.AioRpcError) as bare:
                await echo_pb2_grpc.EchoStub(channel).Unary(REQUEST, timeout=10)
        assert "likely cause" not in (bare.value.details() or "")
        assert not isinstance(bare.value, MeshError)
    finally:
        await registry.close()


async def test_untrusted_server_certificate_is_explained(
    mtls_server: Mesh, tmp_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    other = test_pki.make_pki(tmp_path_factory.mktemp("other-ca"))
    security = f"  ca_file: {other.ca}\n  cert_file: {other.client_cert}\n  key_file: {other.client_key}\n"
    async with Mesh.from_config(client_yaml(tmp_path, security)) as mesh:
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await echo_pb2_grpc.EchoStub(mesh.channel("echo-service")).Unary(REQUEST, timeout=10)
    assert info.value.code() is grpc.StatusCode.UNAVAILABLE
    assert "likely cause" in (info.value.details() or "")


def test_a_bad_signature_and_other_failed_handshakes_get_a_hint() -> None:
    on = SecurityConfig(tls_enabled=True)
    bad = "Tls handshake failed (TSI_PROTOCOL_FAILURE): SSL_ERROR_SSL: BAD_SIGNATURE: certificate signature failure"
    assert "not signed by a CA" in (handshake_hint(bad, on) or "")
    other = "Tls handshake failed (TSI_PROTOCOL_FAILURE): SSL_ERROR_SSL: error:10000412:SSL routines:BAD_CERT"
    assert "trusts the CA" in (handshake_hint(other, on) or "")
    assert handshake_hint(other, SecurityConfig()) is None
