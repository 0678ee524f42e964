"""The signed ``x-mesh-auth`` header: one header stands for the shared key and the caller's identity.

Mesh channels with a caller name send it instead of ``x-service-key`` + ``x-mesh-caller`` +
``x-mesh-caller-token``; every server (aio and sync) accepts it, and still accepts the key alone
(plain grpc clients, other languages) and the older three-header form.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from concurrent import futures
from typing import Any

import grpc
import pytest

from grpcmesh.middleware import auth_client_interceptors, auth_server_interceptor
from grpcmesh.middleware.auth import (
    AUTH_HEADER,
    CALLER_HEADER,
    CALLER_TOKEN_HEADER,
    SERVICE_KEY_HEADER,
    AuthRefused,
    ServerAuth,
    sign_caller,
    signed_caller_header,
)
from grpcmesh.protos import echo_pb2, echo_pb2_grpc
from grpcmesh.sync import SyncAuthInterceptor
from grpcmesh.testing import EchoServicer
from tests.middleware.echo_calls import echo_server, echo_stub

KEY = "signed-caller-test-key-0123456789abcdef"
UNARY = "/grpcmesh.echo.v1.Echo/Unary"


def check(auth: ServerAuth, metadata: dict[str, str]) -> str | None:
    return auth.check(UNARY, metadata.get, None)


def test_a_valid_signed_header_authenticates_and_names_the_caller() -> None:
    auth = ServerAuth(KEY, policy={"order.service-v2": [UNARY]})
    assert check(auth, {AUTH_HEADER: signed_caller_header("order.service-v2", KEY)}) == "order.service-v2"
    assert check(ServerAuth(KEY), {AUTH_HEADER: signed_caller_header("orders", KEY)}) == "orders"


@pytest.mark.parametrize(
    "value",
    [
        signed_caller_header("orders", "another-key"),  # forged
        signed_caller_header("orders", KEY, timestamp=time.time() - 120),  # expired
        sign_caller("orders", KEY),  # no caller
        f"{sign_caller('orders', KEY)}.users",  # signed for another caller
        "garbage",
        "",
        "...",
        "12.ab.",
        "\u00b2\u00b3.ab.orders",  # digits to str.isdigit(), not to int()
        "9" * 5000 + ".ab.orders",
    ],
)
def test_a_bad_signed_header_is_refused_and_never_falls_back_to_the_key(value: str) -> None:
    auth = ServerAuth(KEY)
    with pytest.raises(AuthRefused) as refused:
        check(auth, {AUTH_HEADER: value, SERVICE_KEY_HEADER: KEY})  # a valid key beside it changes nothing
    assert refused.value.code is grpc.StatusCode.UNAUTHENTICATED
    assert KEY not in refused.value.details


def test_a_signed_header_needs_a_key_to_verify_it() -> None:
    with pytest.raises(AuthRefused, match="cannot be verified"):
        check(ServerAuth(None, policy={"orders": ["*"]}), {AUTH_HEADER: signed_caller_header("orders", KEY)})


def test_the_policy_applies_to_the_signed_caller() -> None:
    auth = ServerAuth(KEY, policy={"orders": ["/other.Service/*"]})
    with pytest.raises(AuthRefused) as refused:
        check(auth, {AUTH_HEADER: signed_caller_header("orders", KEY)})
    assert refused.value.code is grpc.StatusCode.PERMISSION_DENIED


def test_the_key_alone_and_the_older_three_headers_are_still_accepted() -> None:
    auth = ServerAuth(KEY)
    assert check(auth, {SERVICE_KEY_HEADER: KEY}) is None
    older = {SERVICE_KEY_HEADER: KEY, CALLER_HEADER: "orders", CALLER_TOKEN_HEADER: sign_caller("orders", KEY)}
    assert check(auth, older) == "orders"


async def test_a_mesh_client_reaches_an_aio_server_with_the_signed_header_only() -> None:
    seen: list[tuple[str, ...]] = []

    class KeysEcho(EchoServicer):
        async def Unary(self, request: echo_pb2.EchoRequest, context: Any) -> echo_pb2.EchoReply:
            seen.append(tuple(key for key, _ in context.invocation_metadata()))
            return await super().Unary(request, context)

    policy = {"orders": [UNARY]}
    async with (
        echo_server([auth_server_interceptor(KEY, policy=policy)], servicer=KeysEcho("s")) as port,
        echo_stub(port, auth_client_interceptors(KEY, caller="orders")) as stub,
    ):
        await stub.Unary(echo_pb2.EchoRequest(message="hi"))
    (keys,) = seen
    assert AUTH_HEADER in keys
    assert SERVICE_KEY_HEADER not in keys  # the key itself never travels
    assert CALLER_HEADER not in keys
    assert CALLER_TOKEN_HEADER not in keys


@pytest.fixture
def sync_server() -> Iterator[int]:
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=2),
        interceptors=[SyncAuthInterceptor(KEY, policy={"orders": [UNARY]})],
    )

    class Echo(echo_pb2_grpc.EchoServicer):
        def Unary(self, request: echo_pb2.EchoRequest, context: grpc.ServicerContext) -> echo_pb2.EchoReply:
            return echo_pb2.EchoReply(message=request.message)

    echo_pb2_grpc.add_EchoServicer_to_server(Echo(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield port
    server.stop(None)


async def test_a_sync_server_accepts_the_signed_header_and_refuses_a_forged_one(sync_server: int) -> None:
    async with echo_stub(sync_server, auth_client_interceptors(KEY, caller="orders")) as stub:
        reply = await stub.Unary(echo_pb2.EchoRequest(message="hi"))
        assert reply.message == "hi"
    async with echo_stub(sync_server) as plain:
        forged = ((AUTH_HEADER, signed_caller_header("orders", "another-key")),)
        with pytest.raises(grpc.aio.AioRpcError) as failure:
            await plain.Unary(echo_pb2.EchoRequest(message="hi"), metadata=forged)
    assert failure.value.code() is grpc.StatusCode.UNAUTHENTICATED
    async with echo_stub(sync_server, auth_client_interceptors(KEY, caller="users")) as stub:
        with pytest.raises(grpc.aio.AioRpcError) as denied:
            await stub.Unary(echo_pb2.EchoRequest(message="hi"))
    assert denied.value.code() is grpc.StatusCode.PERMISSION_DENIED


def _sent_headers(legacy: bool) -> dict[str, str]:
    from grpcmesh._rpc import RpcType
    from grpcmesh.client.calls import CallOptions, MethodSpec
    from grpcmesh.config import parse_config
    from grpcmesh.mesh_middleware import MeshMiddleware

    flag = str(legacy).lower()
    text = f"service: {{name: orders}}\nsecurity: {{service_auth_key: {KEY}, legacy_auth_headers: {flag}}}\n"
    observation = MeshMiddleware(parse_config(text)).client_observation
    assert observation is not None
    options = CallOptions(None, None, None, None, None, None)
    observation.begin("users", MethodSpec(RpcType.UNARY, UNARY, None, None, True), options)
    return dict(options.metadata or ())


def test_legacy_auth_headers_send_the_older_three_headers_for_servers_that_predate_the_signed_one() -> None:
    signed, legacy = _sent_headers(False), _sent_headers(True)
    assert set(signed) == {AUTH_HEADER}
    assert set(legacy) == {SERVICE_KEY_HEADER, CALLER_HEADER, CALLER_TOKEN_HEADER}
    assert legacy[SERVICE_KEY_HEADER] == KEY
    assert legacy[CALLER_HEADER] == "orders"
    # What an older server checks: the key, then the caller's token.
    assert ServerAuth(KEY, policy={"orders": [UNARY]}).check(UNARY, legacy.get, None) == "orders"
