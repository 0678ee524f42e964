"""What a :class:`~grpcmesh.server.MeshServer` needs to know, validated once at construction."""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field

from grpcmesh.errors import InvalidInstanceError
from grpcmesh.model import DEFAULT_WEIGHT, MAX_WEIGHT, check_address, check_service_name
from grpcmesh.registry import DEFAULT_TTL
from grpcmesh.server.readiness import Dependency
from grpcmesh.server.tls import TlsFiles

WILDCARD_HOSTS = frozenset({"0.0.0.0", "::", ""})


@dataclass(frozen=True)
class ServerSettings:
    """Identity, listening address, registration and shutdown behaviour of one server."""

    name: str
    version: str = ""
    host: str = "127.0.0.1"
    port: int = 0
    """0 picks a free port; the port actually bound is registered."""
    advertise_address: str | None = None
    """Address clients dial; defaults to ``host`` (the hostname when ``host`` is a wildcard)."""
    metadata: Mapping[str, str] = field(default_factory=dict)
    weight: int = DEFAULT_WEIGHT
    dependencies: tuple[Dependency, ...] = ()
    ttl: float = DEFAULT_TTL
    """How long the registration outlives the last heartbeat if this process dies."""
    shutdown_grace: float = 10.0
    """Seconds in-flight calls may still run once the listener stops taking new ones."""
    propagation_delay: float = 1.0
    """Seconds between deregistering and stopping the listener, so clients stop picking us first."""
    reflection: bool = True
    handle_signals: bool = True
    """``serve()`` stops gracefully on SIGTERM/SIGINT (a second signal stops at once)."""
    readiness_timeout: float = 5.0
    """How long ``start()`` waits for the registry's first answer about each dependency."""
    tls: TlsFiles | None = None
    instance_id: str | None = None

    def __post_init__(self) -> None:
        check_service_name(self.name, "name")
        if self.host not in WILDCARD_HOSTS:
            check_address(self.host, "host")
        if self.advertise_address is not None:
            check_address(self.advertise_address, "advertise_address")
        if isinstance(self.port, bool) or not isinstance(self.port, int) or not 0 <= self.port <= 65535:
            raise InvalidInstanceError("port", f"{self.port!r} is not a TCP port; use 1-65535, or 0 for a free port")
        if not 1 <= self.weight <= MAX_WEIGHT:
            raise InvalidInstanceError("weight", f"{self.weight!r} must be from 1 to {MAX_WEIGHT}")
        for key in ("shutdown_grace", "propagation_delay", "readiness_timeout"):
            if not getattr(self, key) >= 0:
                raise InvalidInstanceError(key, "must be a non-negative number of seconds")
        names = [dep.name for dep in self.dependencies]
        if len(set(names)) != len(names):
            raise InvalidInstanceError("dependencies", "a service is listed twice; list each dependency once")

    @property
    def bind_target(self) -> str:
        """``host:port`` as grpc binds it (IPv6 in brackets)."""
        host = self.host or "[::]"
        if ":" in host and not host.startswith("["):
            host = f"[{host}]"
        return f"{host}:{self.port}"

    def registered_address(self) -> str:
        """The address put in the registry."""
        if self.advertise_address:
            return self.advertise_address
        if self.host in WILDCARD_HOSTS:
            return socket.gethostname()
        try:
            return str(ipaddress.ip_address(self.host))
        except ValueError:
            return self.host
