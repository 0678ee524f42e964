"""The ADS state machine, driven by crafted DiscoveryRequests (no network)."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from grpcmesh import ServiceInstance
from grpcmesh.xds import resources
from grpcmesh.xds.policy import ServicePolicy
from grpcmesh.xds.resources import CLUSTER_TYPE, ENDPOINT_TYPE, LISTENER_TYPE, ROUTE_TYPE
from grpcmesh.xds.session import AdsSession
from tests.xds import messages


class DictSource:
    """Endpoints held in a dict: what the session reads, without a registry."""

    def __init__(self) -> None:
        self.data: dict[str, list[ServiceInstance]] = {}

    def assignment(self, cluster_name: str) -> tuple[str, Any] | None:
        instances = self.data.get(cluster_name.split("@")[0])
        if instances is None:
            return None
        packed = resources.pack(resources.cluster_load_assignment(cluster_name, instances, ServicePolicy()))
        return resources.digest(packed), packed


def request(type_url: str, *names: str, nonce: str = "", version: str = "", error: str = "") -> Any:
    return messages.request(type_url, *names, nonce=nonce, version=version, error=error, node="test-node")


def instance(instance_id: str, port: int) -> ServiceInstance:
    return ServiceInstance(name="echo-service", id=instance_id, address="127.0.0.1", port=port)


@pytest.fixture
def source() -> DictSource:
    return DictSource()


@pytest.fixture
def session(source: DictSource) -> AdsSession:
    return AdsSession(source, peer="ipv4:127.0.0.1:1")


def test_first_request_is_answered_with_the_named_listener(session: AdsSession) -> None:
    (response,) = session.handle(request(LISTENER_TYPE, "echo-service"))
    assert response.type_url == LISTENER_TYPE
    assert response.nonce
    assert response.version_info
    assert response.control_plane.identifier.startswith("grpcmesh/")
    listener = messages.Listener()
    assert response.resources[0].Unpack(listener)
    assert listener.name == "echo-service"
    assert session.node_id == "test-node"


def test_ack_records_the_version_and_sends_nothing(session: AdsSession) -> None:
    (response,) = session.handle(request(LISTENER_TYPE, "echo-service"))
    ack = request(LISTENER_TYPE, "echo-service", nonce=response.nonce, version=response.version_info)
    assert session.handle(ack) == []
    assert session.states[LISTENER_TYPE].acked_version == response.version_info


def test_stale_nonce_is_ignored_even_with_new_names(session: AdsSession) -> None:
    session.handle(request(LISTENER_TYPE, "echo-service"))
    assert session.handle(request(LISTENER_TYPE, "echo-service", "other", nonce="not-ours")) == []
    assert session.states[LISTENER_TYPE].names == {"echo-service"}


def test_subscription_change_is_answered_with_every_subscribed_listener(session: AdsSession) -> None:
    (first,) = session.handle(request(LISTENER_TYPE, "echo-service"))
    (second,) = session.handle(request(LISTENER_TYPE, "echo-service", "user-service:50051", nonce=first.nonce))
    names = set()
    for packed in second.resources:
        listener = messages.Listener()
        packed.Unpack(listener)
        names.add(listener.name)
    assert names == {"echo-service", "user-service:50051"}
    assert second.nonce != first.nonce
    assert second.version_info != first.version_info


def test_invalid_listener_name_is_absent_from_the_response(session: AdsSession) -> None:
    (response,) = session.handle(request(LISTENER_TYPE, "Not A Service"))
    assert list(response.resources) == []


def test_nack_is_logged_with_the_client_error_and_not_resent(
    session: AdsSession, source: DictSource, caplog: pytest.LogCaptureFixture
) -> None:
    source.data["echo-service"] = [instance("a", 1001)]
    (sent,) = session.handle(request(ENDPOINT_TYPE, "echo-service"))
    nack = request(
        ENDPOINT_TYPE, "echo-service", nonce=sent.nonce, version="", error="endpoint weight sum exceeds uint32 max"
    )
    with caplog.at_level(logging.WARNING, logger="grpcmesh.xds"):
        assert session.handle(nack) == []
    assert "endpoint weight sum exceeds uint32 max" in caplog.text
    assert "test-node" in caplog.text
    assert "NACK" in caplog.text
    (recorded,) = session.nacks
    assert recorded.rejected_version == sent.version_info
    assert recorded.message.startswith("endpoint weight")
    assert session.states[ENDPOINT_TYPE].acked_version == ""
    assert session.refresh() == []  # same resources: not pushed again

    source.data["echo-service"] = [instance("a", 1001), instance("b", 1002)]
    (pushed,) = session.refresh()  # a later change is pushed
    assert pushed.version_info != sent.version_info


def test_endpoints_are_sent_once_known_and_on_every_change(session: AdsSession, source: DictSource) -> None:
    assert session.handle(request(ENDPOINT_TYPE, "echo-service")) == []
    assert session.services() == {"echo-service"}
    assert session.refresh() == []

    source.data["echo-service"] = [instance("a", 1001)]
    (first,) = session.refresh()
    cla = messages.ClusterLoadAssignment()
    first.resources[0].Unpack(cla)
    assert [ep.endpoint.address.socket_address.port_value for ep in cla.endpoints[0].lb_endpoints] == [1001]
    assert session.refresh() == []

    source.data["echo-service"] = []
    (emptied,) = session.refresh()
    emptied.resources[0].Unpack(cla)
    assert list(cla.endpoints) == []


def test_each_type_keeps_its_own_subscription(session: AdsSession, source: DictSource) -> None:
    source.data["echo-service"] = [instance("a", 1001)]
    responses = [
        session.handle(request(type_url, "echo-service"))[0]
        for type_url in (LISTENER_TYPE, ROUTE_TYPE, CLUSTER_TYPE, ENDPOINT_TYPE)
    ]
    assert [r.type_url for r in responses] == [LISTENER_TYPE, ROUTE_TYPE, CLUSTER_TYPE, ENDPOINT_TYPE]
    assert len({r.nonce for r in responses}) == 4
    session.handle(request(CLUSTER_TYPE, nonce=responses[2].nonce))  # unsubscribe clusters
    assert session.states[CLUSTER_TYPE].names == frozenset()
    assert session.states[LISTENER_TYPE].names == {"echo-service"}
    source.data["echo-service"] = [instance("a", 1001), instance("b", 1002)]
    assert [r.type_url for r in session.refresh()] == [ENDPOINT_TYPE]


def test_unknown_type_is_ignored(session: AdsSession, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="grpcmesh.xds"):
        assert session.handle(request("type.googleapis.com/envoy.config.core.v3.Secret", "x")) == []
    assert "unsupported type" in caplog.text
