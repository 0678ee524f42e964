"""Tracing decides first: an unsampled call makes no span at all, yet its trace context goes on."""

from __future__ import annotations

from contextlib import AsyncExitStack
from typing import Any

import grpc
import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from grpcmesh.middleware import setup_tracing, tracing_client_interceptors, tracing_server_interceptor
from grpcmesh.middleware.trace_context import current_trace_id, match_unsampled, parse_traceparent
from grpcmesh.protos import echo_pb2
from grpcmesh.testing import EchoServicer
from tests.middleware.echo_calls import echo_server, echo_stub


class CountingProvider:
    """A provider whose sampler counts how often the SDK was asked to make a span."""

    def __init__(self, name: str, rate: float) -> None:
        self.exporter = InMemorySpanExporter()
        self.provider: TracerProvider = setup_tracing(name, sample_rate=rate, exporter=self.exporter)
        self.asked = 0
        sampler: Any = self.provider.sampler
        original = sampler.should_sample

        def counted(*args: Any, **kwargs: Any) -> Any:
            self.asked += 1
            return original(*args, **kwargs)

        sampler.should_sample = counted


class Seeing(EchoServicer):
    """Records the traceparent it received and the trace id current in its handler; relays once."""

    def __init__(self, name: str, next_hop: Any = None) -> None:
        super().__init__(name)
        self.next_hop = next_hop
        self.received: list[str | None] = []
        self.current: list[str | None] = []

    async def Unary(self, request: echo_pb2.EchoRequest, context: Any) -> echo_pb2.EchoReply:
        self.received.append(dict(context.invocation_metadata()).get("traceparent"))
        self.current.append(current_trace_id())
        if self.next_hop is not None:
            await self.next_hop().Unary(request)
        return await super().Unary(request, context)


async def chain(rate: float) -> tuple[list[CountingProvider], Seeing, Seeing]:
    parties = [CountingProvider(name, rate) for name in ("client", "a", "b")]
    client, a, b = parties
    last = Seeing("b")
    async with AsyncExitStack() as stack:
        b_port = await stack.enter_async_context(echo_server([tracing_server_interceptor(b.provider)], servicer=last))
        b_stub = await stack.enter_async_context(echo_stub(b_port, tracing_client_interceptors(a.provider)))
        first = Seeing("a", lambda: b_stub)
        a_port = await stack.enter_async_context(echo_server([tracing_server_interceptor(a.provider)], servicer=first))
        a_stub = await stack.enter_async_context(echo_stub(a_port, tracing_client_interceptors(client.provider)))
        for _ in range(5):
            await a_stub.Unary(echo_pb2.EchoRequest(message="x"), timeout=5)
    for party in parties:
        party.provider.force_flush()
    return parties, first, last


async def test_unsampled_calls_make_no_spans_but_carry_the_trace_on() -> None:
    parties, a, b = await chain(rate=0.0)
    assert [p.asked for p in parties] == [0, 0, 0]  # the SDK was never asked for a span
    assert [len(p.exporter.get_finished_spans()) for p in parties] == [0, 0, 0]
    for sent_to_a, seen_in_a, sent_to_b, seen_in_b in zip(a.received, a.current, b.received, b.current, strict=True):
        first, second = parse_traceparent(sent_to_a), parse_traceparent(sent_to_b)
        assert first is not None
        assert second is not None
        assert first[2] is False  # "not sampled" travels with the trace
        assert second[2] is False
        assert first[0] == seen_in_a == second[0] == seen_in_b  # one trace id across all hops
    assert len({parse_traceparent(t)[0] for t in a.received if t}) == 5  # a new trace per call  # type: ignore[index]


async def test_sampled_calls_still_make_linked_spans() -> None:
    parties, _, _ = await chain(rate=1.0)
    spans = [p.exporter.get_finished_spans() for p in parties]
    assert [len(s) for s in spans] == [5, 10, 5]  # client; a's server + client; b's server
    trace_ids = {span.context.trace_id for party in spans for span in party}
    assert len(trace_ids) == 5


def test_traceparent_parsing_refuses_malformed_headers() -> None:
    good = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    assert parse_traceparent(good) == ("0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331", True)
    for flags, sampled in (("00", False), ("02", False), ("11", True), ("ff", True)):  # bit 0 is "sampled"
        assert parse_traceparent(good[:-2] + flags) == (good[3:35], good[36:52], sampled), flags
    assert parse_traceparent("01" + good[2:] + "-future") == (good[3:35], good[36:52], True)  # a later version
    for bad in (
        None,
        "",
        good[:-1],
        good.upper(),
        "ff" + good[2:],
        "00-00000000000000000000000000000000-b7ad6b7169203331-01",
        "00-0af7651916cd43dd8448eb211c80319c-0000000000000000-01",
        "00-0af7651916cd43dd8448eb211c8031zz-b7ad6b7169203331-01",
        good + "-extra",
    ):
        assert parse_traceparent(bad) is None, bad


def test_the_unsampled_shortcut_agrees_with_the_parser() -> None:
    """The server's shortcut for the usual header takes exactly the valid version-00, flags-00 ones."""
    good = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00"
    headers = [
        good,
        good[:-2] + "01",
        good[:-2] + "02",
        "01" + good[2:],
        good.upper(),
        good[:-1],
        good + "0",
        good + "-extra",
        "00-00000000000000000000000000000000-b7ad6b7169203331-00",
        "00-0af7651916cd43dd8448eb211c80319c-0000000000000000-00",
        "00-0af7651916cd43dd8448eb211c8031zz-b7ad6b7169203331-00",
        "00-0af7651916cd43dd8448eb211c80319c_b7ad6b7169203331-00",
        "00-0af7651916cd43dd8448eb211c80319\u00e9-b7ad6b7169203331-00",
        "00-0af7651916cd43dd8448eb211c80319c-b7ad6b716920333-100",
        " " + good[1:],
        "",
    ]
    for header in headers:
        parsed = parse_traceparent(header)
        expected = parsed is not None and parsed[2] is False and header[:3] == "00-" and header[53:] == "00"
        assert (match_unsampled(header) is not None) is expected, header
    assert match_unsampled(good) is not None


async def test_grpc_status_of_unsampled_failures_is_unchanged() -> None:
    provider = CountingProvider("solo", 0.0)
    async with (
        echo_server([tracing_server_interceptor(provider.provider)]) as port,
        echo_stub(port, tracing_client_interceptors(provider.provider)) as stub,
    ):
        with pytest.raises(grpc.aio.AioRpcError) as failure:
            await stub.Unary(echo_pb2.EchoRequest(fail_code=grpc.StatusCode.NOT_FOUND.value[0]), timeout=5)
        assert failure.value.code() is grpc.StatusCode.NOT_FOUND
    assert provider.asked == 0


async def test_tracestate_travels_with_a_sampled_trace() -> None:
    from opentelemetry import trace
    from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags, TraceState

    client, server = CountingProvider("client", 1.0), CountingProvider("server", 1.0)
    seeing = Seeing("s")
    caller = SpanContext(
        0x0AF7651916CD43DD8448EB211C80319C,
        0xB7AD6B7169203331,
        is_remote=True,
        trace_flags=TraceFlags(TraceFlags.SAMPLED),
        trace_state=TraceState([("vendor", "opaque-value")]),
    )
    async with (
        echo_server([tracing_server_interceptor(server.provider)], servicer=seeing) as port,
        echo_stub(port, tracing_client_interceptors(client.provider)) as stub,
    ):
        with trace.use_span(NonRecordingSpan(caller)):
            await stub.Unary(echo_pb2.EchoRequest(message="x"), timeout=5)
    server.provider.force_flush()
    [server_span] = server.exporter.get_finished_spans()
    assert server_span.context.trace_id == caller.trace_id
    assert server_span.context.trace_state.get("vendor") == "opaque-value"
    assert seeing.received[0] is not None
    assert seeing.received[0].startswith("00-0af7651916cd43dd8448eb211c80319c-")
