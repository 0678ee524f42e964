"""The resources carry exactly what gRPC's xDS client requires (gRFC A27, A39)."""

from __future__ import annotations

import pytest

from grpcmesh import HealthStatus, ServiceInstance
from grpcmesh.xds import resources
from grpcmesh.xds.policy import ServicePolicy
from tests.xds import messages

DEFAULT = ServicePolicy()


def inst(instance_id: str, **fields: object) -> ServiceInstance:
    defaults: dict[str, object] = {"name": "echo-service", "id": instance_id, "address": "10.0.0.1", "port": 7000}
    defaults.update(fields)
    return ServiceInstance(**defaults)


def test_listener_is_an_api_listener_using_rds_over_ads_with_the_router_last() -> None:
    listener = resources.listener("echo-service:50051", "echo-service", DEFAULT)
    assert listener.name == "echo-service:50051"
    manager = messages.HttpConnectionManager()
    assert listener.api_listener.api_listener.Unpack(manager)
    assert manager.rds.route_config_name == "echo-service"
    assert manager.rds.config_source.HasField("ads")
    router = manager.http_filters[-1]
    assert router.name == "envoy.filters.http.router"
    assert router.typed_config.Is(messages.Router.DESCRIPTOR)


def test_route_configuration_sends_every_call_to_the_service_cluster() -> None:
    route_config = resources.route_configuration("echo-service", DEFAULT)
    (host,) = route_config.virtual_hosts
    assert list(host.domains) == ["*"]
    default = host.routes[-1]
    assert default.match.prefix == ""
    assert default.route.cluster == "echo-service"


def test_cluster_is_eds_over_ads_round_robin() -> None:
    cluster = resources.cluster("echo-service", DEFAULT)
    assert cluster.type == messages.EDS
    assert cluster.lb_policy == messages.ROUND_ROBIN
    assert cluster.eds_cluster_config.eds_config.HasField("ads")
    assert cluster.eds_cluster_config.service_name == "echo-service"


def test_load_assignment_maps_health_weight_and_locality() -> None:
    cla = resources.cluster_load_assignment(
        "echo-service",
        [
            inst("b", port=7002, weight=300, metadata={"zone": "z1"}),
            inst("a", port=7001, weight=100, metadata={"zone": "z1"}),
            inst("c", port=7003, weight=50, metadata={"zone": "z1"}, health=HealthStatus.NOT_SERVING),
            inst("d", port=7004, weight=20, metadata={"zone": "z2"}, health=HealthStatus.UNKNOWN),
        ],
        DEFAULT,
    )
    assert cla.cluster_name == "echo-service"
    z1, z2 = cla.endpoints
    assert (z1.locality.zone, z2.locality.zone) == ("z1", "z2")
    assert z1.load_balancing_weight.value == 400  # serving weights only
    assert z2.load_balancing_weight.value == 1  # nothing serving, but never unset
    assert z1.priority == 0
    ports = [ep.endpoint.address.socket_address.port_value for ep in z1.lb_endpoints]
    assert ports == [7001, 7002, 7003]  # ordered by instance id
    assert [ep.load_balancing_weight.value for ep in z1.lb_endpoints] == [100, 300, 50]
    healthy, unhealthy = messages.HEALTHY, messages.UNHEALTHY
    assert [ep.health_status for ep in z1.lb_endpoints] == [healthy, healthy, unhealthy]
    assert z2.lb_endpoints[0].health_status == unhealthy
    assert z1.lb_endpoints[0].metadata.filter_metadata["grpcmesh"]["id"] == "a"


def test_service_of_accepts_a_port_suffix_and_rejects_non_names() -> None:
    assert resources.service_of("echo-service") == "echo-service"
    assert resources.service_of("echo-service:50051") == "echo-service"
    assert resources.service_of("Echo Service") is None
    assert resources.service_of("") is None


def test_digest_is_a_content_hash() -> None:
    def packed(**fields: object) -> str:
        return resources.digest(resources.pack(resources.cluster_load_assignment("s", [inst("a", **fields)], DEFAULT)))

    assert packed() == packed()
    assert packed() != packed(weight=5)


def test_policy_file_accepts_the_documented_keys_and_refuses_aliases() -> None:
    from grpcmesh.errors import ConfigError
    from grpcmesh.xds.policy import XdsPolicies

    policies = XdsPolicies.from_text(
        "xds:\n"
        "  services:\n"
        "    echo-service:\n"
        "      split: {v1: 90, v2: 10}\n"
        "      balancing: consistent_hash\n"
        "      hash_header: x-user-id\n"
        "      retry_methods: [grpcmesh.echo.v1.Echo/Unary]\n"
        "      outlier: {failure_percentage: 50, interval: 1}\n"
        "      locality_priority: [eu-west/eu-west-1a, eu-west]\n"
        "      fault: {abort_percent: 20, abort_code: 14}\n"
        "  limits: {max_names_per_stream: 500}\n"
    )
    policy = policies.for_service("echo-service")
    assert policy.split == {"v1": 90, "v2": 10}
    assert policies.limits.max_names_per_stream == 500
    assert resources.cluster_names("echo-service", policy) == ["echo-service@v1", "echo-service@v2"]
    with pytest.raises(ConfigError, match="aliases"):
        XdsPolicies.from_text("a: &x {split: {v1: 1}}\nservices: {s: *x}\n")


def test_split_clusters_select_their_version_and_priorities_are_dense() -> None:
    policy = ServicePolicy(split={"v1": 1, "v2": 1}, locality_priority=["r9", "r1"])
    fleet = [
        inst("a", version="v1", metadata={"region": "r1"}),
        inst("b", version="v2", metadata={"region": "r1"}),
        inst("c", version="v1", metadata={"region": "r5"}),
    ]
    cla = resources.cluster_load_assignment("echo-service@v1", fleet, policy)
    ids = {ep.metadata.filter_metadata["grpcmesh"]["id"] for loc in cla.endpoints for ep in loc.lb_endpoints}
    assert ids == {"a", "c"}
    assert sorted(loc.priority for loc in cla.endpoints) == [0, 1]  # r1 (listed 2nd) then unlisted r5
