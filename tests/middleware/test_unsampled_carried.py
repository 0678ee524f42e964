"""An unsampled trace served by a mesh server is carried on the call context it binds (no context
variable of tracing's own), reaches the handler's calls and its detached work, and ends with the call."""

from __future__ import annotations

import asyncio
from typing import Any

import grpc

from grpcmesh.context import Propagation, carried_traceparent, current, detached
from grpcmesh.middleware import setup_tracing
from grpcmesh.middleware.server_side import ServerPipeline
from grpcmesh.middleware.trace_context import carried, current_trace_id
from grpcmesh.middleware.tracing import Tracing
from grpcmesh.server.call_context import call_context_concerns

TRACE = "0af7651916cd43dd8448eb211c80319c"
UNSAMPLED = f"00-{TRACE}-b7ad6b7169203331-00"


class Context:
    """The part of a grpc.aio servicer context the pipeline reads."""

    def invocation_metadata(self) -> tuple[tuple[str, str], ...]:
        return (("traceparent", UNSAMPLED),)

    def time_remaining(self) -> float | None:
        return None

    def code(self) -> None:
        return None

    def peer(self) -> str:
        return "ipv4:127.0.0.1:1"


async def test_the_unsampled_trace_reaches_the_handler_and_its_detached_work_then_ends() -> None:
    provider = setup_tracing("svc", sample_rate=1.0)  # the caller said "not sampled": no span all the same
    pipeline = ServerPipeline([*call_context_concerns(Propagation()), Tracing(provider).server_concern()])
    seen: dict[str, Any] = {}

    async def handler(request: Any, context: Any) -> Any:
        seen["handler"] = carried_traceparent()
        seen["trace id"] = current_trace_id()
        seen["own variable"] = carried.get()  # tracing set nothing of its own
        with detached():
            seen["detached call"] = current()
            seen["detached"] = carried_traceparent()
            task = asyncio.get_running_loop().create_task(asyncio.sleep(0, carried_traceparent()))
        seen["task"] = await task
        return request

    wrapped = pipeline.wrap(grpc.unary_unary_rpc_method_handler(handler), "/pkg.Svc/Method")
    assert wrapped is not None
    assert await wrapped.unary_unary(b"req", Context()) == b"req"
    assert seen == {
        "handler": UNSAMPLED,
        "trace id": TRACE,
        "own variable": None,
        "detached call": None,  # no deadline or metadata handed on...
        "detached": UNSAMPLED,  # ...but the trace goes on
        "task": UNSAMPLED,
    }
    assert carried_traceparent() is None  # nothing left behind once the call ended
    assert current() is None
    provider.shutdown()


async def test_without_a_call_context_the_trace_travels_in_tracings_own_variable() -> None:
    provider = setup_tracing("svc", sample_rate=1.0)
    pipeline = ServerPipeline([Tracing(provider).server_concern()])  # a plain server's interceptor
    seen: list[str | None] = []

    async def handler(request: Any, context: Any) -> Any:
        seen.append(carried.get())
        seen.append(carried_traceparent())
        return request

    wrapped = pipeline.wrap(grpc.unary_unary_rpc_method_handler(handler), "/pkg.Svc/Method")
    assert wrapped is not None
    await wrapped.unary_unary(b"req", Context())
    assert seen == [UNSAMPLED, UNSAMPLED]
    assert carried.get() is None
    provider.shutdown()


def test_a_new_unsampled_traceparent_is_valid_w3c_with_fresh_ids() -> None:
    from unittest import mock

    from grpcmesh.middleware.trace_context import parse_traceparent, unsampled_traceparent

    made = {unsampled_traceparent() for _ in range(200)}
    assert len(made) == 200  # new ids every time
    for header in made:
        parsed = parse_traceparent(header)
        assert parsed is not None
        assert parsed[2] is False  # "not sampled"
    assert unsampled_traceparent(TRACE, "b7ad6b7169203331") == UNSAMPLED  # given ids are kept
    zero = mock.patch("grpcmesh.middleware.trace_context.random.randbytes", return_value=bytes(24))
    with zero, mock.patch("grpcmesh.middleware.trace_context.random.getrandbits", side_effect=[0, 5]):
        header = unsampled_traceparent()  # an all-zero draw (invalid in W3C) is drawn again
    assert parse_traceparent(header) is not None
    assert header.startswith("00-" + "0" * 31 + "1-")
