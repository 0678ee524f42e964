"""Load-balancing policies behind one :class:`Balancer` protocol, and a registry of them by name.

``make_balancer("p2c")`` builds a fresh policy instance (each channel owns its own);
``register_policy`` adds a custom one.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from grpcmesh.discovery.balancers.base import Balancer
from grpcmesh.discovery.balancers.consistent_hash import ConsistentHash
from grpcmesh.discovery.balancers.p2c import PowerOfTwoChoices
from grpcmesh.discovery.balancers.round_robin import RoundRobin
from grpcmesh.discovery.balancers.weighted_round_robin import WeightedRoundRobin
from grpcmesh.errors import ConfigError

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

BalancerFactory = Callable[..., Balancer]

POLICIES: dict[str, BalancerFactory] = {
    RoundRobin.name: RoundRobin,
    WeightedRoundRobin.name: WeightedRoundRobin,
    PowerOfTwoChoices.name: PowerOfTwoChoices,
    ConsistentHash.name: ConsistentHash,
}


def register_policy(name: str, factory: BalancerFactory) -> None:
    """Make ``factory`` available as ``policy=name``."""
    if not name or not name.replace("_", "").isalnum():
        raise ConfigError(f"policy: {name!r} must be a non-empty name of letters, digits and '_'")
    POLICIES[name] = factory


def make_balancer(name: str, **options: Any) -> Balancer:
    """A new balancer of the policy called ``name``."""
    factory = POLICIES.get(name)
    if factory is None:
        raise ConfigError(
            f"policy: unknown load-balancing policy {name!r}; choose one of {', '.join(sorted(POLICIES))}"
        )
    return factory(**options)
