"""Which calls get an access-log line: all, sampled (failed and slow always), errors, off."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from typing import Any

import grpc
import pytest
import structlog

from grpcmesh.config import parse_config
from grpcmesh.errors import ConfigError
from grpcmesh.middleware import configure_logging, logging_client_interceptors, logging_server_interceptor
from grpcmesh.middleware.logging import AccessLog
from grpcmesh.protos import echo_pb2
from tests.middleware.echo_calls import echo_server, echo_stub
from tests.middleware.test_metrics import eventually

NOT_FOUND = grpc.StatusCode.NOT_FOUND.value[0]


@pytest.fixture
def log_stream() -> Iterator[io.StringIO]:
    stream = io.StringIO()
    configure_logging(json=True, level="INFO", stream=stream)
    yield stream
    structlog.reset_defaults()


def rpc_lines(stream: io.StringIO) -> list[dict[str, Any]]:
    found = [json.loads(line) for line in stream.getvalue().splitlines() if line.strip()]
    return [line for line in found if line.get("event") == "rpc"]


async def run_calls(policy: dict[str, Any], ok: int = 20, failed: int = 2, slow: int = 0) -> None:
    async with (
        echo_server([logging_server_interceptor("echo", **policy)]) as port,
        echo_stub(port, logging_client_interceptors("echo", **policy)) as stub,
    ):
        for _ in range(ok):
            await stub.Unary(echo_pb2.EchoRequest(message="ok"), timeout=5)
        for _ in range(slow):
            await stub.Unary(echo_pb2.EchoRequest(message="slow", delay_ms=60), timeout=5)
        for _ in range(failed):
            with pytest.raises(grpc.aio.AioRpcError):
                await stub.Unary(echo_pb2.EchoRequest(fail_code=NOT_FOUND), timeout=5)


def count(stream: io.StringIO, code: str) -> dict[str, int]:
    sides = {"server": 0, "client": 0}
    for line in rpc_lines(stream):
        if line["code"] == code:
            sides[line["side"]] += 1
    return sides


async def test_sampled_at_zero_keeps_every_failure_and_no_ok_call(log_stream: io.StringIO) -> None:
    await run_calls({"access_log": "sampled", "sample_rate": 0.0})

    def logged() -> None:
        assert count(log_stream, "NOT_FOUND") == {"server": 2, "client": 2}

    await eventually(logged)
    assert count(log_stream, "OK") == {"server": 0, "client": 0}


async def test_slow_calls_are_always_logged(log_stream: io.StringIO) -> None:
    # 50 ms is a floor, not a timing bound: the slow calls sleep 60 ms in the handler.
    await run_calls({"access_log": "errors", "slow_call_threshold": 0.05}, ok=5, failed=0, slow=3)
    slow = [line for line in rpc_lines(log_stream) if line["duration_ms"] >= 50]
    assert len(slow) == 6  # both sides of the 3 slow calls
    assert len(rpc_lines(log_stream)) <= 6 + 10  # OK calls appear only if the machine made them slow too


async def test_sampled_at_one_and_all_log_every_call(log_stream: io.StringIO) -> None:
    await run_calls({"access_log": "sampled", "sample_rate": 1.0}, ok=5, failed=1)
    await run_calls({"access_log": "all"}, ok=5, failed=1)
    assert count(log_stream, "OK") == {"server": 10, "client": 10}


async def test_off_logs_nothing(log_stream: io.StringIO) -> None:
    await run_calls({"access_log": "off"}, ok=3, failed=1)
    assert rpc_lines(log_stream) == []


def test_bad_policies_name_the_config_key() -> None:
    with pytest.raises(ConfigError, match=r"logging\.access_log"):
        AccessLog(mode="sometimes")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=r"access_log_sample_rate"):
        AccessLog(mode="sampled", sample_rate=1.5)
    with pytest.raises(ConfigError, match=r"logging"):
        parse_config('{"logging": {"access_log": "verbose"}}')
    with pytest.raises(ConfigError, match=r"logging"):
        parse_config('{"logging": {"access_log_sample_rate": 2}}')


def test_config_defaults_keep_a_sampled_record() -> None:
    logging = parse_config("{}").logging
    assert (logging.access_log, logging.access_log_sample_rate, logging.slow_call_threshold) == ("sampled", 0.01, 1.0)
    assert parse_config('{"logging": {"slow_call_threshold": "250ms"}}').logging.slow_call_threshold == 0.25
