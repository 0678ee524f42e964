"""Client-side discovery: live endpoint sets from the registry, and load-balancing policies."""

from grpcmesh.discovery.balancers import POLICIES, Balancer, make_balancer, register_policy
from grpcmesh.discovery.endpoints import Backoff, Endpoint, EndpointFilter, EndpointWatcher

__all__ = [
    "POLICIES",
    "Backoff",
    "Balancer",
    "Endpoint",
    "EndpointFilter",
    "EndpointWatcher",
    "make_balancer",
    "register_policy",
]
