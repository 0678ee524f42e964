"""Build the four xDS resources a proxyless gRPC client needs, from registry instances and policy.

What gRPC requires (gRFC A27, A39) shapes every builder here:

* ``Listener`` NAME: an *API listener* whose ``HttpConnectionManager`` points at a
  ``RouteConfiguration`` over ADS (RDS) and ends its filter chain with the router filter
  (a fault-injection filter before it when the service's policy injects faults, gRFC A33);
* ``RouteConfiguration``: one virtual host matching any authority; a route per retried
  method (gRFC A44) and a default route, each to the service's cluster or, for a version
  split (gRFC A28), to weighted clusters ``SERVICE@VERSION``; a hash policy on the header
  the policy names when balancing is ``consistent_hash`` (gRFC A42);
* ``Cluster``: type EDS over ADS, ``ROUND_ROBIN`` or ``RING_HASH``, outlier detection when
  configured (gRFC A50);
* ``ClusterLoadAssignment``: the live instances (of one version, for a split cluster)
  grouped by locality, each with an IP address (gRPC rejects hostnames), a health status
  and a weight; localities get priorities from ``locality_priority`` (gRFC A27).

The resource name *is* the service name for routes, and the cluster name for clusters and
endpoints. A listener may carry a port (``xds:///user-service:50051`` asks for
``user-service:50051``); the port is ignored because the registry knows each instance's port.

Messages come from the private descriptor pool of :mod:`grpcmesh.xds.protos`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

from grpcmesh.errors import InvalidInstanceError
from grpcmesh.model import HealthStatus, ServiceInstance, check_service_name
from grpcmesh.xds.policy import ServicePolicy
from grpcmesh.xds.protos import enum_value, message

_PREFIX = "type.googleapis.com/"
LISTENER_TYPE = _PREFIX + "envoy.config.listener.v3.Listener"
ROUTE_TYPE = _PREFIX + "envoy.config.route.v3.RouteConfiguration"
CLUSTER_TYPE = _PREFIX + "envoy.config.cluster.v3.Cluster"
ENDPOINT_TYPE = _PREFIX + "envoy.config.endpoint.v3.ClusterLoadAssignment"
RESOURCE_TYPES = (LISTENER_TYPE, ROUTE_TYPE, CLUSTER_TYPE, ENDPOINT_TYPE)
"""The types served, in the order a client asks for them (LDS, RDS, CDS, EDS)."""

ROUTER_FILTER = "envoy.filters.http.router"
FAULT_FILTER = "envoy.filters.http.fault"
LOCALITY_KEYS = ("region", "zone", "sub_zone")
"""Instance metadata keys that place an instance in an xDS locality."""
METADATA_NAMESPACE = "grpcmesh"
"""Endpoint metadata namespace carrying the instance id and version (for debugging tools)."""
VERSION_SEPARATOR = "@"
"""``SERVICE@VERSION`` names the cluster of one version of a split service (no service name has ``@``)."""
_CORE = "envoy.config.core.v3."
_ROUTE = "envoy.config.route.v3."


def short_type(type_url: str) -> str:
    """``Listener``, ``Cluster``...: the readable tail of a type URL, for logs."""
    return type_url.rsplit(".", 1)[-1]


def service_of(resource_name: str) -> str | None:
    """The service a resource name refers to (a listener's ``:port`` or a cluster's ``@version`` dropped)."""
    host = resource_name.rsplit(":", 1)[0] if resource_name.count(":") == 1 else resource_name
    host = host.split(VERSION_SEPARATOR, 1)[0]
    try:
        return check_service_name(host)
    except InvalidInstanceError:
        return None


def split_cluster(service: str, version: str) -> str:
    return f"{service}{VERSION_SEPARATOR}{version}"


def version_of_cluster(cluster_name: str) -> str | None:
    """The version a split cluster selects, or None for a whole-service cluster."""
    _, sep, version = cluster_name.partition(VERSION_SEPARATOR)
    return version if sep else None


def _duration(seconds: float) -> Any:
    value = message("google.protobuf.Duration")()
    value.FromNanoseconds(round(seconds * 1e9))
    return value


def _u32(value: int) -> Any:
    return message("google.protobuf.UInt32Value")(value=value)


def _pack(resource: Any) -> Any:
    packed = message("google.protobuf.Any")()
    packed.Pack(resource)
    return packed


def _ads_source() -> Any:
    return message(_CORE + "ConfigSource")(
        ads=message(_CORE + "AggregatedConfigSource")(), resource_api_version=enum_value(_CORE + "ApiVersion", "V3")
    )


def _percent(value: float) -> Any:
    """A FractionalPercent per million, so 0.5 % is exact."""
    fraction = message("envoy.type.v3.FractionalPercent")
    million = enum_value("envoy.type.v3.FractionalPercent.DenominatorType", "MILLION")
    return fraction(
        numerator=round(value * 10_000),
        denominator=million,
    )


def _fault_filter(policy: ServicePolicy) -> Any:
    fault = policy.fault
    assert fault is not None
    common = "envoy.extensions.filters.common.fault.v3."
    config = message("envoy.extensions.filters.http.fault.v3.HTTPFault")()
    if fault.delay_percent > 0:
        config.delay.CopyFrom(
            message(common + "FaultDelay")(fixed_delay=_duration(fault.delay), percentage=_percent(fault.delay_percent))
        )
    if fault.abort_percent > 0:
        config.abort.CopyFrom(
            message("envoy.extensions.filters.http.fault.v3.FaultAbort")(
                grpc_status=fault.abort_code, percentage=_percent(fault.abort_percent)
            )
        )
    return config


def listener(name: str, service: str, policy: ServicePolicy) -> Any:
    """An API listener named ``name`` whose routes come from RDS resource ``service``."""
    hcm = "envoy.extensions.filters.network.http_connection_manager.v3."
    http_filter = message(hcm + "HttpFilter")
    filters = []
    if policy.fault is not None:
        filters.append(http_filter(name=FAULT_FILTER, typed_config=_pack(_fault_filter(policy))))
    filters.append(
        http_filter(name=ROUTER_FILTER, typed_config=_pack(message("envoy.extensions.filters.http.router.v3.Router")()))
    )
    manager = message(hcm + "HttpConnectionManager")(
        rds=message(hcm + "Rds")(config_source=_ads_source(), route_config_name=service), http_filters=filters
    )
    return message("envoy.config.listener.v3.Listener")(
        name=name, api_listener=message("envoy.config.listener.v3.ApiListener")(api_listener=_pack(manager))
    )


def _route_action(service: str, policy: ServicePolicy, *, retry: bool) -> Any:
    action = message(_ROUTE + "RouteAction")()
    weights = {version: weight for version, weight in sorted(policy.split.items()) if weight > 0}
    if weights:
        weighted = message(_ROUTE + "WeightedCluster")
        entry = message(_ROUTE + "WeightedCluster.ClusterWeight")
        action.weighted_clusters.CopyFrom(
            weighted(clusters=[entry(name=split_cluster(service, v), weight=_u32(w)) for v, w in weights.items()])
        )
    else:
        action.cluster = service
    if policy.balancing == "consistent_hash" and policy.hash_header:
        hash_policy = message(_ROUTE + "RouteAction.HashPolicy")
        header = message(_ROUTE + "RouteAction.HashPolicy.Header")
        action.hash_policy.append(hash_policy(header=header(header_name=policy.hash_header)))
    if retry:
        settings = policy.retry
        action.retry_policy.CopyFrom(
            message(_ROUTE + "RetryPolicy")(
                retry_on=",".join(settings.retry_on),
                num_retries=_u32(settings.num_retries),
                retry_back_off=message(_ROUTE + "RetryPolicy.RetryBackOff")(
                    base_interval=_duration(settings.base_interval), max_interval=_duration(settings.max_interval)
                ),
            )
        )
    return action


def route_configuration(service: str, policy: ServicePolicy) -> Any:
    """Every call goes to ``service`` (or its version split); retried methods get their own route."""
    route, match = message(_ROUTE + "Route"), message(_ROUTE + "RouteMatch")
    routes = [
        route(match=match(path=f"/{method}"), route=_route_action(service, policy, retry=True))
        for method in policy.retry_methods
        if method != "*"
    ]
    routes.append(
        route(match=match(prefix=""), route=_route_action(service, policy, retry="*" in policy.retry_methods))
    )
    return message(_ROUTE + "RouteConfiguration")(
        name=service, virtual_hosts=[message(_ROUTE + "VirtualHost")(name=service, domains=["*"], routes=routes)]
    )


def cluster(name: str, policy: ServicePolicy) -> Any:
    """An EDS cluster over ADS (round robin or ring hash), with outlier detection if configured."""
    cluster_type = message("envoy.config.cluster.v3.Cluster")
    lb = "RING_HASH" if policy.balancing == "consistent_hash" else "ROUND_ROBIN"
    built = cluster_type(
        name=name,
        type=enum_value("envoy.config.cluster.v3.Cluster.DiscoveryType", "EDS"),
        eds_cluster_config=message("envoy.config.cluster.v3.Cluster.EdsClusterConfig")(
            eds_config=_ads_source(), service_name=name
        ),
        lb_policy=enum_value("envoy.config.cluster.v3.Cluster.LbPolicy", lb),
    )
    if lb == "RING_HASH":
        built.ring_hash_lb_config.minimum_ring_size.value = 1024
    outlier = policy.outlier
    if outlier is not None:
        built.outlier_detection.CopyFrom(
            message("envoy.config.cluster.v3.OutlierDetection")(
                interval=_duration(outlier.interval),
                base_ejection_time=_duration(outlier.base_ejection_time),
                max_ejection_time=_duration(outlier.max_ejection_time),
                max_ejection_percent=_u32(outlier.max_ejection_percent),
                enforcing_success_rate=_u32(0),
                failure_percentage_threshold=_u32(outlier.failure_percentage),
                enforcing_failure_percentage=_u32(100),
                failure_percentage_minimum_hosts=_u32(outlier.minimum_hosts),
                failure_percentage_request_volume=_u32(outlier.request_volume),
            )
        )
    return built


def health_status(instance: ServiceInstance) -> int:
    """HEALTHY only for SERVING: gRPC sends calls to HEALTHY/UNKNOWN endpoints, never UNHEALTHY ones."""
    return enum_value(_CORE + "HealthStatus", "HEALTHY" if instance.health is HealthStatus.SERVING else "UNHEALTHY")


def locality_of(instance: ServiceInstance) -> tuple[str, str, str]:
    """``(region, zone, sub_zone)`` from the instance's metadata; empty strings when absent."""
    region, zone, sub_zone = (instance.metadata.get(key, "") for key in LOCALITY_KEYS)
    return (region, zone, sub_zone)


def priority_of(locality: tuple[str, str, str], order: Sequence[str]) -> int:
    """The index of the first ``region[/zone[/sub_zone]]`` entry matching ``locality``; unlisted ones last."""
    for index, entry in enumerate(order):
        parts = tuple(entry.split("/"))
        if locality[: len(parts)] == parts:
            return index
    return len(order)


def _lb_endpoint(instance: ServiceInstance) -> Any:
    info = message("google.protobuf.Struct")()
    info.update({"id": instance.id, "version": instance.version})
    return message("envoy.config.endpoint.v3.LbEndpoint")(
        endpoint=message("envoy.config.endpoint.v3.Endpoint")(
            address=message(_CORE + "Address")(
                socket_address=message(_CORE + "SocketAddress")(address=instance.address, port_value=instance.port)
            )
        ),
        health_status=health_status(instance),
        metadata=message(_CORE + "Metadata")(filter_metadata={METADATA_NAMESPACE: info}),
        load_balancing_weight=_u32(instance.weight),
    )


def cluster_load_assignment(name: str, instances: Sequence[ServiceInstance], policy: ServicePolicy) -> Any:
    """The instances of cluster ``name`` (one version's, for a split cluster) grouped by locality.

    Addresses must already be IP addresses (see ``RegistryWatches``, which resolves
    hostnames). A locality's weight is the sum of its *serving* instances' weights, so
    traffic between localities follows capacity; a locality with nothing serving gets
    weight 1 (gRPC skips a locality with no weight, and sends it nothing anyway since all
    its endpoints are UNHEALTHY). Priorities are renumbered densely from 0, as gRPC requires.
    """
    version = version_of_cluster(name)
    members = [inst for inst in instances if version is None or inst.version == version]
    groups: dict[tuple[str, str, str], list[ServiceInstance]] = {}
    for instance in sorted(members, key=lambda inst: inst.id):
        groups.setdefault(locality_of(instance), []).append(instance)
    raw = {locality: priority_of(locality, policy.locality_priority) for locality in groups}
    dense = {value: index for index, value in enumerate(sorted(set(raw.values())))}
    localities = []
    for locality, group in sorted(groups.items()):
        serving_weight = sum(inst.weight for inst in group if inst.health is HealthStatus.SERVING)
        region, zone, sub_zone = locality
        localities.append(
            message("envoy.config.endpoint.v3.LocalityLbEndpoints")(
                locality=message(_CORE + "Locality")(region=region, zone=zone, sub_zone=sub_zone),
                lb_endpoints=[_lb_endpoint(inst) for inst in group],
                load_balancing_weight=_u32(max(serving_weight, 1)),
                priority=dense[raw[locality]],
            )
        )
    return message("envoy.config.endpoint.v3.ClusterLoadAssignment")(cluster_name=name, endpoints=localities)


def cluster_names(service: str, policy: ServicePolicy) -> list[str]:
    """The clusters a service's routes send calls to."""
    weights = [version for version, weight in sorted(policy.split.items()) if weight > 0]
    return [split_cluster(service, version) for version in weights] or [service]


def pack(resource: Any) -> Any:
    """Wrap a resource in ``google.protobuf.Any`` as a ``DiscoveryResponse`` carries it."""
    return _pack(resource)


def digest(packed: Any) -> str:
    """A content hash of one packed resource (equal content, equal digest, on any stream)."""
    return hashlib.sha256(packed.SerializeToString(deterministic=True)).hexdigest()[:16]
