"""gRPC-shaped errors raised by the mesh channel, and how failed attempts are classified.

Callers of a generated stub catch ``grpc.aio.AioRpcError`` / ``grpc.RpcError``; the mesh's
own failures (no endpoint) must look the same to them, while still being ``MeshError``s.
"""

from __future__ import annotations

import grpc

from grpcmesh.errors import MeshRpcError, NoEndpointsRpcError

__all__ = ["MeshRpcError", "NoEndpointsRpcError", "is_not_sent", "is_transport_failure"]

_NOT_SENT_MARKERS = (
    "failed to connect to all addresses",
    "failed to connect to remote host",
    "connection refused",
    "connect failed",
    "connection attempt timed out",
    "no route to host",
    "dns resolution failed",
)
"""Phrases gRPC core uses when a call failed because no connection could be made, i.e. the
request never left this process. "Socket closed" / "Connection reset" are *not* here: they
mean a connection broke while the call may already have been running on the server."""


def is_not_sent(error: grpc.aio.AioRpcError) -> bool:
    """True when ``error`` proves the request never reached a server (safe to send elsewhere)."""
    if error.code() is not grpc.StatusCode.UNAVAILABLE:
        return False
    details = (error.details() or "").lower()
    return any(marker in details for marker in _NOT_SENT_MARKERS)


def is_transport_failure(error: grpc.aio.AioRpcError) -> bool:
    """True for failures that say something about the endpoint rather than the request."""
    return error.code() is grpc.StatusCode.UNAVAILABLE
