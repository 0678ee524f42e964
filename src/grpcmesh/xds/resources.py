"""Build the four xDS resources a proxyless gRPC client needs, from registry instances.

What gRPC requires (gRFC A27, A39) shapes every builder here:

* ``Listener`` NAME: an *API listener* whose ``HttpConnectionManager`` points at a
  ``RouteConfiguration`` over ADS (RDS) and ends its filter chain with the router filter;
* ``RouteConfiguration``: one virtual host matching any authority, whose default route
  (empty prefix) sends every call to the cluster of the same service;
* ``Cluster``: type EDS, endpoints over ADS, ``ROUND_ROBIN``;
* ``ClusterLoadAssignment``: the live instances grouped by locality, each with an IP
  address (gRPC rejects hostnames), a health status and a weight.

The resource name *is* the service name for routes, clusters and endpoints. A listener may
carry a port (``xds:///user-service:50051`` asks for ``user-service:50051``); the port is
ignored because the registry knows each instance's port.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from typing import Any

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.core.v3 import address_pb2, base_pb2, config_source_pb2, health_check_pb2
from envoy.config.endpoint.v3 import endpoint_components_pb2, endpoint_pb2
from envoy.config.listener.v3 import api_listener_pb2, listener_pb2
from envoy.config.route.v3 import route_components_pb2, route_pb2
from envoy.extensions.filters.http.router.v3 import router_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm_pb2
from google.protobuf import any_pb2, struct_pb2, wrappers_pb2

from grpcmesh.errors import InvalidInstanceError
from grpcmesh.model import HealthStatus, ServiceInstance, check_service_name

_PREFIX = "type.googleapis.com/"
LISTENER_TYPE = _PREFIX + "envoy.config.listener.v3.Listener"
ROUTE_TYPE = _PREFIX + "envoy.config.route.v3.RouteConfiguration"
CLUSTER_TYPE = _PREFIX + "envoy.config.cluster.v3.Cluster"
ENDPOINT_TYPE = _PREFIX + "envoy.config.endpoint.v3.ClusterLoadAssignment"
RESOURCE_TYPES = (LISTENER_TYPE, ROUTE_TYPE, CLUSTER_TYPE, ENDPOINT_TYPE)
"""The types served, in the order a client asks for them (LDS, RDS, CDS, EDS)."""

ROUTER_FILTER = "envoy.filters.http.router"
LOCALITY_KEYS = ("region", "zone", "sub_zone")
"""Instance metadata keys that place an instance in an xDS locality."""
METADATA_NAMESPACE = "grpcmesh"
"""Endpoint metadata namespace carrying the instance id and version (for debugging tools)."""


def short_type(type_url: str) -> str:
    """``Listener``, ``Cluster``...: the readable tail of a type URL, for logs."""
    return type_url.rsplit(".", 1)[-1]


def service_of(resource_name: str) -> str | None:
    """The service a resource name refers to (a listener's ``:port`` dropped), or None if invalid."""
    host = resource_name.rsplit(":", 1)[0] if resource_name.count(":") == 1 else resource_name
    try:
        return check_service_name(host)
    except InvalidInstanceError:
        return None


def _ads_source() -> Any:
    return config_source_pb2.ConfigSource(
        ads=config_source_pb2.AggregatedConfigSource(),
        resource_api_version=config_source_pb2.ApiVersion.V3,
    )


def _pack(message: Any) -> Any:
    packed = any_pb2.Any()
    packed.Pack(message)
    return packed


def listener(name: str, service: str) -> Any:
    """An API listener named ``name`` whose routes come from RDS resource ``service``."""
    manager = hcm_pb2.HttpConnectionManager(
        rds=hcm_pb2.Rds(config_source=_ads_source(), route_config_name=service),
        http_filters=[hcm_pb2.HttpFilter(name=ROUTER_FILTER, typed_config=_pack(router_pb2.Router()))],
    )
    return listener_pb2.Listener(name=name, api_listener=api_listener_pb2.ApiListener(api_listener=_pack(manager)))


def route_configuration(service: str) -> Any:
    """Every call, whatever its authority or method, goes to the cluster ``service``."""
    return route_pb2.RouteConfiguration(
        name=service,
        virtual_hosts=[
            route_components_pb2.VirtualHost(
                name=service,
                domains=["*"],
                routes=[
                    route_components_pb2.Route(
                        match=route_components_pb2.RouteMatch(prefix=""),
                        route=route_components_pb2.RouteAction(cluster=service),
                    )
                ],
            )
        ],
    )


def cluster(service: str) -> Any:
    """An EDS cluster over ADS, balanced round-robin (the only policy A27 requires)."""
    return cluster_pb2.Cluster(
        name=service,
        type=cluster_pb2.Cluster.DiscoveryType.EDS,
        eds_cluster_config=cluster_pb2.Cluster.EdsClusterConfig(eds_config=_ads_source(), service_name=service),
        lb_policy=cluster_pb2.Cluster.LbPolicy.ROUND_ROBIN,
    )


def health_status(instance: ServiceInstance) -> int:
    """HEALTHY only for SERVING: gRPC sends calls to HEALTHY/UNKNOWN endpoints, never UNHEALTHY ones."""
    if instance.health is HealthStatus.SERVING:
        return int(health_check_pb2.HealthStatus.HEALTHY)
    return int(health_check_pb2.HealthStatus.UNHEALTHY)


def locality_of(instance: ServiceInstance) -> tuple[str, str, str]:
    """``(region, zone, sub_zone)`` from the instance's metadata; empty strings when absent."""
    region, zone, sub_zone = (instance.metadata.get(key, "") for key in LOCALITY_KEYS)
    return (region, zone, sub_zone)


def _instance_metadata(instance: ServiceInstance) -> Any:
    info = struct_pb2.Struct()
    info.update({"id": instance.id, "version": instance.version})
    return info


def _lb_endpoint(instance: ServiceInstance) -> Any:
    return endpoint_components_pb2.LbEndpoint(
        endpoint=endpoint_components_pb2.Endpoint(
            address=address_pb2.Address(
                socket_address=address_pb2.SocketAddress(address=instance.address, port_value=instance.port)
            )
        ),
        health_status=health_status(instance),
        metadata=base_pb2.Metadata(filter_metadata={METADATA_NAMESPACE: _instance_metadata(instance)}),
        load_balancing_weight=wrappers_pb2.UInt32Value(value=instance.weight),
    )


def cluster_load_assignment(service: str, instances: Sequence[ServiceInstance]) -> Any:
    """The instances of ``service`` grouped by locality.

    Addresses must already be IP addresses (see ``RegistryWatches``, which resolves
    hostnames). A locality's weight is the sum of its *serving* instances' weights, so
    traffic between localities follows capacity; a locality with nothing serving gets
    weight 1 (gRPC skips a locality with no weight, and sends it nothing anyway since all
    its endpoints are UNHEALTHY).
    """
    groups: dict[tuple[str, str, str], list[ServiceInstance]] = {}
    for instance in sorted(instances, key=lambda inst: inst.id):
        groups.setdefault(locality_of(instance), []).append(instance)
    localities = []
    for (region, zone, sub_zone), members in sorted(groups.items()):
        serving_weight = sum(inst.weight for inst in members if inst.health is HealthStatus.SERVING)
        localities.append(
            endpoint_components_pb2.LocalityLbEndpoints(
                locality=base_pb2.Locality(region=region, zone=zone, sub_zone=sub_zone),
                lb_endpoints=[_lb_endpoint(inst) for inst in members],
                load_balancing_weight=wrappers_pb2.UInt32Value(value=max(serving_weight, 1)),
                priority=0,
            )
        )
    return endpoint_pb2.ClusterLoadAssignment(cluster_name=service, endpoints=localities)


def pack_all(resources: Iterable[Any]) -> list[Any]:
    """Wrap resources in ``google.protobuf.Any`` as a ``DiscoveryResponse`` carries them."""
    return [_pack(resource) for resource in resources]


def version_of(packed: Sequence[Any]) -> str:
    """A content hash: equal resource sets get equal versions, on any stream and after restarts."""
    digest = hashlib.sha256()
    for resource in packed:
        digest.update(resource.SerializeToString(deterministic=True))
        digest.update(b"\x00")
    return digest.hexdigest()[:16]
