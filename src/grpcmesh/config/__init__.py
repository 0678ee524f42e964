"""Service configuration: the original Go design's YAML as validated, typed settings.

``load_config(path)`` reads a file; ``${VAR}``/``${VAR:-default}`` are resolved from the
environment, ``GRPCMESH_*`` variables override keys (see :mod:`grpcmesh.config.env`), and
any problem is one :class:`~grpcmesh.errors.ConfigError` naming the file and key path.
"""

from grpcmesh.config.durations import Duration, parse_duration
from grpcmesh.config.env import ENV_PREFIX, REGISTRY_URL_VAR
from grpcmesh.config.loader import load_config, parse_config
from grpcmesh.config.models import (
    REGISTRY_TYPES,
    DependencyConfig,
    MeshConfig,
    MetricsConfig,
    RegistryConfig,
    SecurityConfig,
    ServiceConfig,
    TracingConfig,
)

__all__ = [
    "ENV_PREFIX",
    "REGISTRY_TYPES",
    "REGISTRY_URL_VAR",
    "DependencyConfig",
    "Duration",
    "MeshConfig",
    "MetricsConfig",
    "RegistryConfig",
    "SecurityConfig",
    "ServiceConfig",
    "TracingConfig",
    "load_config",
    "parse_config",
    "parse_duration",
]
