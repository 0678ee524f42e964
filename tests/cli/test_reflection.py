"""The reflection client against a real server offering reflection (the Echo test service)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
import pytest
from grpc_reflection.v1alpha import reflection

from grpcmesh.cli.reflection import ReflectionClient, ReflectionError, invoke, split_method
from grpcmesh.protos import echo_pb2, echo_pb2_grpc
from grpcmesh.testing import EchoServicer


@pytest.fixture
async def channel() -> AsyncIterator[grpc.aio.Channel]:
    server = grpc.aio.server()
    echo_pb2_grpc.add_EchoServicer_to_server(EchoServicer("refl-1"), server)
    names = (echo_pb2.DESCRIPTOR.services_by_name["Echo"].full_name, reflection.SERVICE_NAME)
    reflection.enable_server_reflection(names, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as chan:
        yield chan
    await server.stop(None)


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("Unary", (None, "Unary")),
        ("Echo/Unary", ("Echo", "Unary")),
        ("grpcmesh.echo.v1.Echo/Unary", ("grpcmesh.echo.v1.Echo", "Unary")),
        ("grpcmesh.echo.v1.Echo.Unary", ("grpcmesh.echo.v1.Echo", "Unary")),
    ],
)
def test_split_method(spec: str, expected: tuple[str | None, str]) -> None:
    assert split_method(spec) == expected


async def test_unary_call_from_json(channel: grpc.aio.Channel) -> None:
    method = await ReflectionClient(channel).resolve("Unary")
    assert method.path.endswith("/Unary")
    request = method.request_from_json('{"message": "hi"}')
    replies = [reply async for reply in invoke(channel, method, request, timeout=5)]
    assert len(replies) == 1
    assert replies[0].instance_id == "refl-1"
    assert "hi" in replies[0].message


async def test_server_streaming_call_yields_every_reply(channel: grpc.aio.Channel) -> None:
    method = await ReflectionClient(channel).resolve("ServerStream")
    request = method.request_from_json('{"message": "x", "count": 3}')
    replies = [reply async for reply in invoke(channel, method, request, timeout=5)]
    assert len(replies) == 3


async def test_unknown_method_lists_what_exists(channel: grpc.aio.Channel) -> None:
    with pytest.raises(ReflectionError, match=r"available: .*Unary"):
        await ReflectionClient(channel).resolve("Nope")


async def test_bad_json_names_the_message(channel: grpc.aio.Channel) -> None:
    method = await ReflectionClient(channel).resolve("Unary")
    with pytest.raises(ReflectionError, match="EchoRequest"):
        method.request_from_json('{"no_such_field": 1}')


async def test_client_streaming_is_refused(channel: grpc.aio.Channel) -> None:
    method = await ReflectionClient(channel).resolve("ClientStream")
    request = method.request_from_json("{}")
    with pytest.raises(ReflectionError, match="stream of requests"):
        [reply async for reply in invoke(channel, method, request, timeout=5)]
