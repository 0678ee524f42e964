"""grpcmesh: service discovery and inter-service communication for Python gRPC services."""

from grpcmesh.__about__ import __version__
from grpcmesh.errors import (
    ConfigError,
    InvalidInstanceError,
    InvalidRecordError,
    MeshError,
    NoEndpointsError,
    RegistryClosedError,
    RegistryError,
    RegistryUnavailableError,
    UnknownSchemeError,
)
from grpcmesh.model import HealthStatus, ServiceInstance, decode_instance, encode_instance
from grpcmesh.registry import Registry, open_registry

__all__ = [
    "ConfigError",
    "HealthStatus",
    "InvalidInstanceError",
    "InvalidRecordError",
    "MeshError",
    "NoEndpointsError",
    "Registry",
    "RegistryClosedError",
    "RegistryError",
    "RegistryUnavailableError",
    "ServiceInstance",
    "UnknownSchemeError",
    "__version__",
    "decode_instance",
    "encode_instance",
    "open_registry",
]
