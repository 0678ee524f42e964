"""grpcmesh: service discovery and inter-service communication for Python gRPC services.

The errors load with the package (they are what ``except`` clauses name); everything else
loads on first use (``grpcmesh.Mesh``, ``from grpcmesh import open_registry``...), so a
program that imports grpcmesh pays only for the parts it touches.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from grpcmesh.__about__ import __version__
from grpcmesh.errors import (
    ChannelClosedError,
    ClosedError,
    ConfigError,
    InvalidInstanceError,
    InvalidRecordError,
    MeshError,
    MeshRpcError,
    MissingExtraError,
    NoEndpointsError,
    NoEndpointsRpcError,
    RegistryClosedError,
    RegistryError,
    RegistryUnavailableError,
    ServerError,
    UnknownSchemeError,
)

if TYPE_CHECKING:
    from grpcmesh.client import ClientManager, MeshChannel
    from grpcmesh.config import MeshConfig, load_config
    from grpcmesh.mesh import Mesh
    from grpcmesh.model import HealthStatus, ServiceInstance, decode_instance, encode_instance
    from grpcmesh.registry import Registry, open_registry
    from grpcmesh.server import (
        Dependency,
        HealthReport,
        MeshServer,
        ServerSettings,
        TlsFiles,
        check_service_health,
    )

_LAZY: dict[str, str] = {
    "ClientManager": "grpcmesh.client",
    "MeshChannel": "grpcmesh.client",
    "MeshConfig": "grpcmesh.config",
    "load_config": "grpcmesh.config",
    "Mesh": "grpcmesh.mesh",
    "HealthStatus": "grpcmesh.model",
    "ServiceInstance": "grpcmesh.model",
    "decode_instance": "grpcmesh.model",
    "encode_instance": "grpcmesh.model",
    "Registry": "grpcmesh.registry",
    "open_registry": "grpcmesh.registry",
    "Dependency": "grpcmesh.server",
    "HealthReport": "grpcmesh.server",
    "MeshServer": "grpcmesh.server",
    "ServerSettings": "grpcmesh.server",
    "TlsFiles": "grpcmesh.server",
    "check_service_health": "grpcmesh.server",
}
"""Public name -> the module it is imported from on first use."""


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later lookups are plain attribute reads
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


__all__ = [
    "ChannelClosedError",
    "ClientManager",
    "ClosedError",
    "ConfigError",
    "Dependency",
    "HealthReport",
    "HealthStatus",
    "InvalidInstanceError",
    "InvalidRecordError",
    "Mesh",
    "MeshChannel",
    "MeshConfig",
    "MeshError",
    "MeshRpcError",
    "MeshServer",
    "MissingExtraError",
    "NoEndpointsError",
    "NoEndpointsRpcError",
    "Registry",
    "RegistryClosedError",
    "RegistryError",
    "RegistryUnavailableError",
    "ServerError",
    "ServerSettings",
    "ServiceInstance",
    "TlsFiles",
    "UnknownSchemeError",
    "__version__",
    "check_service_health",
    "decode_instance",
    "encode_instance",
    "load_config",
    "open_registry",
]
