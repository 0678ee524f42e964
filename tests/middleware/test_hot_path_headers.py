"""Headers the client concerns add travel without a ``grpc.aio.Metadata`` copy, with ``set_all`` semantics."""

from __future__ import annotations

import grpc

from grpcmesh._rpc import RpcType
from grpcmesh.client.calls import CallOptions, MethodSpec
from grpcmesh.middleware.auth import AUTH_HEADER, SERVICE_KEY_HEADER, ClientAuth, ServerAuth
from grpcmesh.middleware.client_side import ClientCall, ClientObservation

KEY = "hot-path-test-key-0123456789abcdef"
SPEC = MethodSpec(RpcType.UNARY, "/echo.Echo/Unary", None, None, True)


def sent(metadata: object, observation: ClientObservation) -> tuple[tuple[str, str], ...]:
    options = CallOptions(None, metadata, None, None, None, None)
    observation.begin("echo", SPEC, options)
    return tuple((key, value) for key, value in options.metadata or ())


def test_auth_headers_are_appended_to_the_callers_tuple_without_a_metadata_copy() -> None:
    observation = ClientObservation([ClientAuth(KEY, "orders").observe_client], caller="orders")
    given = (("x-request-id", "r1"),)
    options = CallOptions(None, given, None, None, None, None)
    observation.begin("echo", SPEC, options)
    assert isinstance(options.metadata, tuple)  # no grpc.aio.Metadata built on the common path
    assert options.metadata[0] == ("x-request-id", "r1")
    keys = [key for key, _ in options.metadata]
    assert keys == ["x-request-id", AUTH_HEADER]  # one signed header: neither the key nor three headers
    assert given == (("x-request-id", "r1"),)  # the caller's object is untouched
    signed = dict(options.metadata)[AUTH_HEADER]
    assert KEY not in signed
    assert ServerAuth(KEY).check("/echo.Echo/Unary", dict(options.metadata).get, None) == "orders"


def test_a_callers_own_value_of_an_added_key_is_replaced_once() -> None:
    observation = ClientObservation([ClientAuth(KEY).observe_client])
    headers = sent([(SERVICE_KEY_HEADER, "stale"), ("keep", "v")], observation)
    assert [value for key, value in headers if key == SERVICE_KEY_HEADER] == [KEY]
    assert ("keep", "v") in headers


def test_putting_a_key_twice_keeps_the_last_value_and_the_metadata_view_sees_added_headers() -> None:
    call = ClientCall("/echo.Echo/Unary", RpcType.UNARY, None)
    call.put_headers((("a", "1"),))
    call.put_headers((("a", "2"), ("b", "3")))
    assert call.metadata.get_all("a") == ["2"]
    assert call.metadata.get_all("b") == ["3"]
    assert isinstance(call.copied_metadata, grpc.aio.Metadata)


def test_nothing_added_sends_the_callers_metadata_unchanged() -> None:
    call = ClientCall("/echo.Echo/Unary", RpcType.UNARY, (("k", "v"),))
    assert call.copied_metadata is None
