"""The xDS message classes tests build and parse, from grpcmesh's private descriptor pool."""

from __future__ import annotations

from typing import Any

from grpcmesh.xds.protos import enum_value, message

Listener: Any = message("envoy.config.listener.v3.Listener")
HttpConnectionManager: Any = message(
    "envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"
)
Router: Any = message("envoy.extensions.filters.http.router.v3.Router")
HTTPFault: Any = message("envoy.extensions.filters.http.fault.v3.HTTPFault")
Node: Any = message("envoy.config.core.v3.Node")
DiscoveryRequest: Any = message("envoy.service.discovery.v3.DiscoveryRequest")
ClusterLoadAssignment: Any = message("envoy.config.endpoint.v3.ClusterLoadAssignment")
RouteConfiguration: Any = message("envoy.config.route.v3.RouteConfiguration")
Cluster: Any = message("envoy.config.cluster.v3.Cluster")

HEALTHY = enum_value("envoy.config.core.v3.HealthStatus", "HEALTHY")
UNHEALTHY = enum_value("envoy.config.core.v3.HealthStatus", "UNHEALTHY")
EDS = enum_value("envoy.config.cluster.v3.Cluster.DiscoveryType", "EDS")
ROUND_ROBIN = enum_value("envoy.config.cluster.v3.Cluster.LbPolicy", "ROUND_ROBIN")
RING_HASH = enum_value("envoy.config.cluster.v3.Cluster.LbPolicy", "RING_HASH")


def request(type_url: str, *names: str, nonce: str = "", version: str = "", error: str = "", node: str = "") -> Any:
    """A DiscoveryRequest as a gRPC client sends it (an ``error`` makes it a NACK)."""
    req = DiscoveryRequest(
        type_url=type_url, resource_names=list(names), response_nonce=nonce, version_info=version, node=Node(id=node)
    )
    if error:
        req.error_detail.code = 3
        req.error_detail.message = error
    return req
