"""Shared-key authentication, signed caller identity and per-caller policy on a real Echo server."""

from __future__ import annotations

import io
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import grpc
import pytest
import structlog
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from grpcmesh.errors import ConfigError
from grpcmesh.middleware import (
    CALLER_HEADER,
    CALLER_TOKEN_HEADER,
    SEED_SERVICE_KEY_HEADER,
    SERVICE_KEY_HEADER,
    auth_client_interceptors,
    auth_server_interceptor,
    configure_logging,
    current_caller,
    logging_client_interceptors,
    logging_server_interceptor,
    sign_caller,
    verify_caller,
)
from grpcmesh.protos import echo_pb2, echo_pb2_grpc
from grpcmesh.testing import EchoServicer
from tests.middleware.echo_calls import KINDS, call_kind, echo_server, echo_stub

KEY = "s3cret-shared-key-4f9a0c77e2b1"
UNARY = "/grpcmesh.echo.v1.Echo/Unary"


class CallerRecordingEcho(EchoServicer):
    """Remembers which caller the auth interceptor identified."""

    def __init__(self) -> None:
        super().__init__("echo-1")
        self.callers: list[str | None] = []

    async def Unary(self, request: echo_pb2.EchoRequest, context: Any) -> echo_pb2.EchoReply:
        self.callers.append(current_caller())
        return await super().Unary(request, context)


@pytest.mark.parametrize("kind", KINDS)
async def test_right_key_passes_wrong_or_missing_key_is_unauthenticated(kind: str) -> None:
    async with echo_server([auth_server_interceptor(KEY)]) as port:
        async with echo_stub(port, auth_client_interceptors(KEY)) as stub:
            assert await call_kind(stub, kind) == grpc.StatusCode.OK
        async with echo_stub(port, auth_client_interceptors("wrong-key")) as stub:
            assert await call_kind(stub, kind) == grpc.StatusCode.UNAUTHENTICATED
        async with echo_stub(port) as stub:
            assert await call_kind(stub, kind) == grpc.StatusCode.UNAUTHENTICATED


async def test_seed_header_name_is_accepted() -> None:
    async with echo_server([auth_server_interceptor(KEY)]) as port, echo_stub(port) as stub:
        reply = await stub.Unary(echo_pb2.EchoRequest(message="hi"), metadata=((SEED_SERVICE_KEY_HEADER, KEY),))
        assert reply.message == "hi"
        with pytest.raises(grpc.aio.AioRpcError) as failure:
            await stub.Unary(echo_pb2.EchoRequest(), metadata=((SERVICE_KEY_HEADER, KEY + "x"),))
        assert failure.value.code() == grpc.StatusCode.UNAUTHENTICATED


@asynccontextmanager
async def server_with_health(interceptor: Any) -> AsyncIterator[int]:
    server = grpc.aio.server(interceptors=[interceptor])
    echo_pb2_grpc.add_EchoServicer_to_server(EchoServicer("echo-1"), server)
    health_pb2_grpc.add_HealthServicer_to_server(health.aio.HealthServicer(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        yield port
    finally:
        await server.stop(None)


async def test_health_is_exempt_by_default_and_exemptions_are_configurable() -> None:
    async with (
        server_with_health(auth_server_interceptor(KEY)) as port,
        grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel,
    ):
        reply = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest())
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
    async with (
        server_with_health(auth_server_interceptor(KEY, exempt=[UNARY])) as port,
        grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel,
    ):
        with pytest.raises(grpc.aio.AioRpcError) as failure:
            await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest())
        assert failure.value.code() == grpc.StatusCode.UNAUTHENTICATED
        assert (await echo_pb2_grpc.EchoStub(channel).Unary(echo_pb2.EchoRequest(message="x"))).message == "x"


async def test_policy_allows_listed_methods_and_denies_others() -> None:
    servicer = CallerRecordingEcho()
    policy = {"order-service": [UNARY], "*": ["/grpcmesh.echo.v1.Echo/Bidi*"]}
    async with echo_server([auth_server_interceptor(KEY, policy=policy)], servicer=servicer) as port:
        async with echo_stub(port, auth_client_interceptors(KEY, caller="order-service")) as stub:
            assert await call_kind(stub, "unary") == grpc.StatusCode.OK
            assert await call_kind(stub, "bidi_stream") == grpc.StatusCode.OK
            assert await call_kind(stub, "server_stream") == grpc.StatusCode.PERMISSION_DENIED
        async with echo_stub(port, auth_client_interceptors(KEY, caller="user-service")) as stub:
            assert await call_kind(stub, "unary") == grpc.StatusCode.PERMISSION_DENIED
            assert await call_kind(stub, "bidi_stream") == grpc.StatusCode.OK
        async with echo_stub(port, auth_client_interceptors(KEY)) as stub:  # key but no identity
            assert await call_kind(stub, "unary") == grpc.StatusCode.UNAUTHENTICATED
    assert servicer.callers == ["order-service"]


async def test_forged_and_expired_caller_tokens_are_unauthenticated() -> None:
    policy = {"order-service": ["*"]}
    cases = {
        "forged": sign_caller("order-service", "another-key"),
        "expired": sign_caller("order-service", KEY, timestamp=time.time() - 120),
        "garbage": "not-a-token",
    }
    async with (
        echo_server([auth_server_interceptor(KEY, policy=policy, max_clock_skew=30)]) as port,
        echo_stub(port) as stub,
    ):
        for name, token in cases.items():
            metadata = ((SERVICE_KEY_HEADER, KEY), (CALLER_HEADER, "order-service"), (CALLER_TOKEN_HEADER, token))
            with pytest.raises(grpc.aio.AioRpcError) as failure:
                await stub.Unary(echo_pb2.EchoRequest(), metadata=metadata)
            assert failure.value.code() == grpc.StatusCode.UNAUTHENTICATED, name


def test_tokens_verify_only_within_clock_skew_and_for_the_signed_caller() -> None:
    now = 1_700_000_000.0
    token = sign_caller("order-service", KEY, timestamp=now)
    assert verify_caller("order-service", token, KEY, max_clock_skew=30, now=now + 29)
    assert not verify_caller("order-service", token, KEY, max_clock_skew=30, now=now + 31)
    assert not verify_caller("user-service", token, KEY, now=now)
    assert not verify_caller("order-service", token, "other", now=now)


def test_empty_key_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="service_auth_key"):
        auth_server_interceptor("")
    with pytest.raises(ConfigError, match="service_auth_key"):
        auth_client_interceptors("")


async def test_keys_and_tokens_never_reach_the_logs(caplog: pytest.LogCaptureFixture) -> None:
    stream = io.StringIO()
    configure_logging(json=True, level="DEBUG", stream=stream)
    caplog.set_level(logging.DEBUG)
    try:
        server_chain = [logging_server_interceptor(), auth_server_interceptor(KEY, policy={"order-service": [UNARY]})]
        async with echo_server(server_chain) as port:
            for key, caller in ((KEY, "order-service"), (KEY, "user-service"), ("wrong-" + KEY, "order-service")):
                client_chain = [*logging_client_interceptors(), *auth_client_interceptors(key, caller=caller)]
                async with echo_stub(port, client_chain) as stub:
                    for kind in KINDS:
                        await call_kind(stub, kind)
            structlog.get_logger("app").info("startup", service_auth_key=KEY, token=sign_caller("x", KEY))
    finally:
        structlog.reset_defaults()
    captured = stream.getvalue() + caplog.text
    assert "rpc refused" in captured  # the refusals were logged...
    assert '"code": "PERMISSION_DENIED"' in captured
    assert KEY not in captured  # ...without the key
    assert sign_caller("order-service", KEY).split(".")[1][:16] not in captured
