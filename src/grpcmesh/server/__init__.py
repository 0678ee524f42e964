"""The service side: :class:`MeshServer` lifecycle, dependency readiness and aggregate health."""

from grpcmesh.server.aggregate import HealthReport, InstanceHealth, check_instance_health, check_service_health
from grpcmesh.server.lifecycle import MeshServer
from grpcmesh.server.readiness import Dependency, version_matches
from grpcmesh.server.settings import ServerSettings
from grpcmesh.server.tls import TlsFiles

__all__ = [
    "Dependency",
    "HealthReport",
    "InstanceHealth",
    "MeshServer",
    "ServerSettings",
    "TlsFiles",
    "check_instance_health",
    "check_service_health",
    "version_matches",
]
