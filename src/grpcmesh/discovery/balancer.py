"""Short import path for the balancer protocol and policies (see :mod:`grpcmesh.discovery.balancers`)."""

from grpcmesh.discovery.balancers import (
    POLICIES,
    Balancer,
    ConsistentHash,
    PowerOfTwoChoices,
    RoundRobin,
    WeightedRoundRobin,
    make_balancer,
    register_policy,
)

__all__ = [
    "POLICIES",
    "Balancer",
    "ConsistentHash",
    "PowerOfTwoChoices",
    "RoundRobin",
    "WeightedRoundRobin",
    "make_balancer",
    "register_policy",
]
