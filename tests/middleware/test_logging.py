"""Access logs: one JSON line per call on each side, with the trace id; secrets redacted."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator

import grpc
import pytest
import structlog
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from grpcmesh.errors import ConfigError
from grpcmesh.middleware import (
    configure_logging,
    logging_client_interceptors,
    logging_server_interceptor,
    setup_tracing,
    tracing_client_interceptors,
    tracing_server_interceptor,
)
from tests.middleware.echo_calls import KINDS, METHOD_OF_KIND, call_kind, echo_server, echo_stub
from tests.middleware.test_metrics import eventually


@pytest.fixture
def log_stream() -> Iterator[io.StringIO]:
    stream = io.StringIO()
    configure_logging(json=True, level="INFO", stream=stream)
    yield stream
    structlog.reset_defaults()


def lines(stream: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in stream.getvalue().splitlines() if line.strip()]


@pytest.mark.parametrize("kind", KINDS)
async def test_one_line_per_call_per_side_with_trace_id(kind: str, log_stream: io.StringIO) -> None:
    exporter = InMemorySpanExporter()
    provider = setup_tracing("echo-service", exporter=exporter)
    server_chain = [tracing_server_interceptor(provider), logging_server_interceptor("echo-service")]
    async with echo_server(server_chain) as port:
        client_chain = [
            *tracing_client_interceptors(provider),
            *logging_client_interceptors("echo-service", target=f"127.0.0.1:{port}"),
        ]
        async with echo_stub(port, client_chain) as stub:
            assert (
                await call_kind(stub, kind, fail_code=grpc.StatusCode.NOT_FOUND.value[0]) == grpc.StatusCode.NOT_FOUND
            )

            def both_logged() -> None:
                assert len(lines(log_stream)) == 2

            await eventually(both_logged)

    records = {record["side"]: record for record in lines(log_stream)}

    provider.force_flush()
    trace_ids = {format(span.context.trace_id, "032x") for span in exporter.get_finished_spans()}
    assert len(trace_ids) == 1
    for side in ("server", "client"):
        record = records[side]
        assert record["event"] == "rpc"
        assert record["service"] == "echo-service"
        assert record["method"] == f"/grpcmesh.echo.v1.Echo/{METHOD_OF_KIND[kind]}"
        assert record["grpc_type"] == kind
        assert record["code"] == "NOT_FOUND"
        assert record["level"] == "warning"
        assert isinstance(record["duration_ms"], float)
        assert record["trace_id"] in trace_ids
    assert records["client"]["peer"] == f"127.0.0.1:{port}"
    assert "127.0.0.1" in str(records["server"]["peer"])


async def test_trace_id_comes_from_metadata_without_a_tracing_interceptor(log_stream: io.StringIO) -> None:
    provider = setup_tracing("caller", exporter=InMemorySpanExporter())
    async with (
        echo_server([logging_server_interceptor()]) as port,
        echo_stub(port, tracing_client_interceptors(provider)) as stub,
    ):
        await call_kind(stub, "unary")
    (record,) = lines(log_stream)
    assert record["code"] == "OK"
    assert record["level"] == "info"
    assert isinstance(record["trace_id"], str)
    assert len(record["trace_id"]) == 32


def test_secret_looking_fields_are_redacted(log_stream: io.StringIO) -> None:
    log = structlog.get_logger("test")
    log.info(
        "login",
        user="ann",
        password="hunter2",
        authorization="Bearer abc",
        service_auth_key="k1",
        nested={"x-service-key": "k2", "api_token": "t", "keep": "v"},
    )
    (record,) = lines(log_stream)
    text = log_stream.getvalue()
    for secret in ("hunter2", "Bearer abc", "k1", "k2", '"t"'):
        assert secret not in text
    assert record["user"] == "ann"
    assert record["password"] == "[REDACTED]"
    assert record["nested"] == {"x-service-key": "[REDACTED]", "api_token": "[REDACTED]", "keep": "v"}


def test_console_format_is_human_readable() -> None:
    stream = io.StringIO()
    configure_logging(json=False, level="debug", stream=stream)
    try:
        structlog.get_logger("test").info("rpc", method="/a.B/C", code="OK", token="secret-value")
    finally:
        structlog.reset_defaults()
    text = stream.getvalue()
    assert "rpc" in text
    assert "method=/a.B/C" in text
    assert "secret-value" not in text
    with pytest.raises(json.JSONDecodeError):
        json.loads(text)


def test_level_filters_and_bad_level_names_the_field() -> None:
    stream = io.StringIO()
    configure_logging(level="WARNING", stream=stream)
    try:
        structlog.get_logger("test").info("hidden")
        structlog.get_logger("test").warning("shown")
    finally:
        structlog.reset_defaults()
    assert [json.loads(line)["event"] for line in stream.getvalue().splitlines()] == ["shown"]
    with pytest.raises(ConfigError, match=r"logging\.level"):
        configure_logging(level="LOUD")
