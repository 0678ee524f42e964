"""Config-driven middleware through the public API: metrics endpoint, auth, per-call logs, traces."""

from __future__ import annotations

import io
import json
from pathlib import Path

import aiohttp
import grpc
import pytest
import structlog
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import grpcmesh
from grpcmesh.config import parse_config
from grpcmesh.middleware import configure_logging
from grpcmesh.protos import echo_pb2, echo_pb2_grpc
from grpcmesh.testing import EchoServicer

KEY = "s3cret-key-that-must-never-be-logged"


def config(name: str | None, *, key: str | None = KEY, metrics: bool = True, tracing: bool = False) -> str:
    doc = {
        "security": {"service_auth_key": key} if key else {},
        "metrics": {"enabled": metrics, "prometheus_port": 0},
        "tracing": {"enabled": tracing, "sample_rate": 1.0},  # no endpoint: spans stay in-process
        "logging": {"enabled": True, "format": "json", "access_log": "all"},  # the default samples OK calls
    }
    if name:
        doc["service"] = {"name": name, "version": "v1"}
    return json.dumps(doc)


@pytest.fixture
def captured_logs() -> io.StringIO:
    stream = io.StringIO()
    configure_logging(json=True, stream=stream)
    yield stream
    structlog.reset_defaults()


async def start_echo(mesh: grpcmesh.Mesh, instance_id: str) -> grpcmesh.MeshServer:
    server = mesh.server(instance_id=instance_id, handle_signals=False, propagation_delay=0.0)
    echo_pb2_grpc.add_EchoServicer_to_server(EchoServicer(instance_id), server.grpc)
    await server.start()
    return server


async def test_metrics_endpoint_is_advertised_and_counts_calls(tmp_path: Path, captured_logs: io.StringIO) -> None:
    url = f"sqlite://{tmp_path}/mesh.db"
    server_cfg = parse_config(config("echo-service"))
    client_cfg = parse_config(config("caller-service"))
    async with grpcmesh.Mesh(url, config=server_cfg) as server_mesh, grpcmesh.Mesh(url, config=client_cfg) as client:
        server = await start_echo(server_mesh, "m1")
        metrics_url = server.instance.metadata["metrics_url"]
        assert metrics_url.startswith("http://127.0.0.1:")
        stub = echo_pb2_grpc.EchoStub(client.channel("echo-service"))
        for i in range(5):
            assert (await stub.Unary(echo_pb2.EchoRequest(message=str(i)), timeout=5)).instance_id == "m1"
        async with aiohttp.ClientSession() as session, session.get(metrics_url) as response:
            text = await response.text()
        handled = (
            'grpc_server_handled_total{grpc_code="OK",grpc_method="Unary",'
            'grpc_service="grpcmesh.echo.v1.Echo",grpc_type="unary"} 5.0'
        )
        assert handled in text
        assert (
            'grpc_service_requests_total{method="/grpcmesh.echo.v1.Echo/Unary",service="echo-service",status="OK"} 5.0'
        ) in text
        # the caller's own registry exports its channel state
        assert client.middleware.metrics_registry is not None
        assert (
            client.middleware.metrics_registry.get_sample_value("grpcmesh_endpoints", {"service": "echo-service"}) == 1
        )
    lines = [json.loads(line) for line in captured_logs.getvalue().splitlines() if line.startswith("{")]
    rpc_lines = [line for line in lines if line.get("event") == "rpc" and line.get("method", "").endswith("/Unary")]
    assert {line["side"] for line in rpc_lines} == {"server", "client"}
    assert all(line["code"] == "OK" and "duration_ms" in line for line in rpc_lines)
    assert KEY not in captured_logs.getvalue()


async def test_auth_key_from_config(tmp_path: Path, captured_logs: io.StringIO) -> None:
    url = f"sqlite://{tmp_path}/mesh.db"
    async with (
        grpcmesh.Mesh(url, config=parse_config(config("echo-service"))) as server_mesh,
        grpcmesh.Mesh(url, config=parse_config(config("good-caller"))) as good,
        grpcmesh.Mesh(url, config=parse_config(config("bad-caller", key="wrong-key"))) as bad,
        grpcmesh.Mesh(url, config=parse_config(config(None, key=None))) as anonymous,
    ):
        await start_echo(server_mesh, "a1")
        request = echo_pb2.EchoRequest(message="hi")
        assert (await echo_pb2_grpc.EchoStub(good.channel("echo-service")).Unary(request, timeout=5)).message == "hi"
        for mesh in (bad, anonymous):
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await echo_pb2_grpc.EchoStub(mesh.channel("echo-service")).Unary(request, timeout=5)
            assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert KEY not in captured_logs.getvalue()
    assert "wrong-key" not in captured_logs.getvalue()


async def test_tracing_from_config_links_client_and_server_spans(tmp_path: Path) -> None:
    url = f"sqlite://{tmp_path}/mesh.db"
    async with (
        grpcmesh.Mesh(url, config=parse_config(config("echo-service", tracing=True))) as server_mesh,
        grpcmesh.Mesh(url, config=parse_config(config("caller-service", tracing=True))) as client,
    ):
        exporters = []
        for mesh in (server_mesh, client):
            assert mesh.middleware.tracer_provider is not None
            exporter = InMemorySpanExporter()
            mesh.middleware.tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
            exporters.append(exporter)
        await start_echo(server_mesh, "t1")
        await echo_pb2_grpc.EchoStub(client.channel("echo-service")).Unary(echo_pb2.EchoRequest(message="x"), timeout=5)
        server_spans = [s for s in exporters[0].get_finished_spans() if s.name.endswith("/Unary")]
        client_spans = [s for s in exporters[1].get_finished_spans() if s.name.endswith("/Unary")]
        assert len(server_spans) == 1
        assert len(client_spans) == 1
        assert server_spans[0].context.trace_id == client_spans[0].context.trace_id
        assert server_spans[0].parent is not None
        assert server_spans[0].parent.span_id == client_spans[0].context.span_id


def tls_config(name: str, certs: Path, *, client_cert: bool = True) -> str:
    security: dict[str, object] = {"tls_enabled": True, "ca_file": str(certs / "ca.pem")}
    own = name if client_cert else "stranger"
    security.update(cert_file=str(certs / f"{own}.pem"), key_file=str(certs / f"{own}-key.pem"), client_auth=True)
    return json.dumps({"service": {"name": name}, "security": security, "logging": {"enabled": False}})


async def test_mtls_from_config_with_certs_from_the_cli(tmp_path: Path) -> None:
    from tests.cli.test_registry_cmds import run_cli

    certs = tmp_path / "certs"
    made = run_cli("certs", "dev", "echo-service", "caller-service", "--out", str(certs))
    assert made.returncode == 0, made.stderr
    assert (certs / "ca.pem").exists()
    assert (certs / "echo-service-key.pem").stat().st_mode & 0o077 == 0  # private keys are owner-only
    other_ca = tmp_path / "other"
    assert run_cli("certs", "dev", "stranger", "--out", str(other_ca)).returncode == 0
    for suffix in (".pem", "-key.pem"):  # a cert from another CA, placed where the stranger config finds it
        (certs / f"stranger{suffix}").write_bytes((other_ca / f"stranger{suffix}").read_bytes())

    url = f"sqlite://{tmp_path}/mesh.db"
    async with (
        grpcmesh.Mesh(url, config=parse_config(tls_config("echo-service", certs))) as server_mesh,
        grpcmesh.Mesh(url, config=parse_config(tls_config("caller-service", certs))) as trusted,
        grpcmesh.Mesh(url, config=parse_config(tls_config("caller-service", certs, client_cert=False))) as stranger,
        grpcmesh.Mesh(url, config=parse_config(json.dumps({"logging": {"enabled": False}}))) as plaintext,
    ):
        server = await start_echo(server_mesh, "tls1")
        assert server.instance.metadata["tls"] == "true"
        request = echo_pb2.EchoRequest(message="secure")
        reply = await echo_pb2_grpc.EchoStub(trusted.channel("echo-service")).Unary(request, timeout=5)
        assert reply.message == "secure"
        for refused in (stranger, plaintext):
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await echo_pb2_grpc.EchoStub(refused.channel("echo-service")).Unary(request, timeout=3)
            assert err.value.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)
