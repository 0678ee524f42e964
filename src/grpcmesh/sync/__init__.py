"""Synchronous grpcio in the mesh: a registered ``grpc.server`` and sync server interceptors.

``SyncMeshServer`` registers a thread-pool ``grpc.server`` with health, heartbeats and a
graceful stop; ``SyncAuthInterceptor``, ``SyncMetricsInterceptor`` and
``SyncLoggingInterceptor`` carry the mesh's auth, metrics and logging to it. Sync *clients*
use grpcio's own ``xds:///NAME`` resolver with a bootstrap from ``grpcmesh xds bootstrap``.
"""

from grpcmesh.sync.interceptors import SyncAuthInterceptor, SyncLoggingInterceptor, SyncMetricsInterceptor
from grpcmesh.sync.server import SyncMeshServer, thread_pool

__all__ = [
    "SyncAuthInterceptor",
    "SyncLoggingInterceptor",
    "SyncMeshServer",
    "SyncMetricsInterceptor",
    "thread_pool",
]
