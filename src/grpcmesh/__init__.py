"""grpcmesh: service discovery and inter-service communication for Python gRPC services."""

from grpcmesh.__about__ import __version__
from grpcmesh.client import ClientManager, MeshChannel
from grpcmesh.config import MeshConfig, load_config
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
from grpcmesh.mesh import Mesh
from grpcmesh.model import HealthStatus, ServiceInstance, decode_instance, encode_instance
from grpcmesh.registry import Registry, open_registry
from grpcmesh.server import Dependency, HealthReport, MeshServer, ServerSettings, TlsFiles, check_service_health

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
