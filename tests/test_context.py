"""Deadline and request-context propagation through contextvars (grpcmesh.context)."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from grpcmesh import context
from grpcmesh.context import REQUEST_ID_HEADER, Propagation
from grpcmesh.errors import ConfigError


def test_outside_a_handler_nothing_is_added() -> None:
    out = Propagation().outgoing(2.0, None)
    assert (out.timeout, out.inherited, out.metadata) == (2.0, False, ())
    assert Propagation().outgoing(None, None).timeout is None


def test_incoming_deadline_is_inherited_less_the_margin() -> None:
    propagation = Propagation(margin=0.1)
    call = propagation.incoming([("x-request-id", "abc")], time_remaining=1.5)
    with propagation.serving(call):
        out = propagation.outgoing(None, None)
        assert out.inherited
        assert out.timeout is not None
        assert 1.3 < out.timeout <= 1.4
        assert out.metadata == (("x-request-id", "abc"),)
        # A shorter timeout of the caller's own wins; a longer one is cut to the budget.
        assert propagation.outgoing(0.5, None).timeout == 0.5
        longer = propagation.outgoing(10.0, None)
        assert longer.inherited
        assert longer.timeout is not None
        assert longer.timeout <= 1.4
    assert context.current() is None


def test_a_spent_budget_gives_a_non_positive_timeout() -> None:
    propagation = Propagation(margin=0.05)
    with propagation.serving(propagation.incoming([], time_remaining=0.01)):
        out = propagation.outgoing(None, None)
        assert out.timeout is not None
        assert out.timeout <= 0


def test_only_allowlisted_keys_cross_and_secrets_never_do(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level("WARNING", logger="grpcmesh.context"):
        propagation = Propagation(
            ["x-request-id", "baggage", "x-tenant", "authorization", "x-service-key", "x-auth-token"]
        )
    assert len(caplog.records) == 3  # one warning per credential key listed
    assert propagation.keys == {"x-request-id", "baggage", "x-tenant"}
    metadata = [
        ("x-request-id", "r1"),
        ("x-request-id", "r2"),  # a second id is dropped, not forwarded twice
        ("baggage", "k=v"),
        ("x-tenant", "t1"),
        ("authorization", "Bearer secret"),
        ("x-service-key", "k"),
        ("x-mesh-caller-token", "tok"),
        ("x-other", "o"),
        ("x-tenant", "x" * 10_000),  # too long to forward
    ]
    call = propagation.incoming(metadata, None)
    assert call.metadata == (("x-request-id", "r1"), ("baggage", "k=v"), ("x-tenant", "t1"))
    assert call.request_id == "r1"
    assert "secret" not in repr(call)


def test_the_caller_s_own_metadata_wins_over_propagated_keys() -> None:
    propagation = Propagation()
    with propagation.serving(propagation.incoming([("x-request-id", "in"), ("baggage", "b")], None)):
        out = propagation.outgoing(None, [("x-request-id", "mine")])
        assert out.metadata == (("baggage", "b"),)
        assert context.merged_metadata([("x-request-id", "mine")], out.metadata) == (
            ("x-request-id", "mine"),
            ("baggage", "b"),
        )


def test_an_edge_service_generates_a_request_id() -> None:
    first = Propagation().incoming([], None).request_id
    second = Propagation().incoming(None, None).request_id
    assert first
    assert second
    assert first != second
    assert Propagation(generate_request_id=False).incoming([], None).request_id is None


async def test_detached_tasks_inherit_nothing() -> None:
    propagation = Propagation()
    seen: dict[str, object] = {}

    async def background(name: str) -> None:
        seen[name] = context.current()

    with propagation.serving(propagation.incoming([("x-request-id", "r")], 1.0)):
        await asyncio.create_task(background("attached"))
        await context.spawn_detached(background("spawned"))
        with context.detached():
            task = asyncio.create_task(background("detached"))
        await task
        assert context.current() is not None
    attached = seen["attached"]
    assert isinstance(attached, context.IncomingCall)
    assert attached.request_id == "r"
    assert seen["spawned"] is None
    assert seen["detached"] is None


def test_bad_settings_are_config_errors() -> None:
    with pytest.raises(ConfigError):
        Propagation(margin=-1)
    with pytest.raises(ConfigError):
        Propagation(["  "])
    assert REQUEST_ID_HEADER == "x-request-id"


def test_request_id_is_generated_on_first_use_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """Binding a call without an x-request-id must not pay for a new id unless the id is used."""
    made: list[int] = []
    real = context.new_request_id

    def counting() -> str:
        made.append(1)
        return real()

    monkeypatch.setattr(context, "new_request_id", counting)
    call = Propagation().incoming([("baggage", "b")], None)
    assert made == []
    request_id = call.request_id
    assert request_id is not None
    assert call.metadata == (("baggage", "b"), (REQUEST_ID_HEADER, request_id))
    assert call.request_id == request_id  # generated once, then the same
    assert made == [1]


def test_generated_request_ids_are_random_version_4_uuids() -> None:
    ids = {context.new_request_id() for _ in range(1000)}
    assert len(ids) == 1000
    for text in ids:
        assert len(text) == 32
        parsed = uuid.UUID(hex=text)
        assert parsed.version == 4
        assert parsed.variant == uuid.RFC_4122
        assert parsed.hex == text
