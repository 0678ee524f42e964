"""The mesh client: ``MeshChannel`` (a balanced, registry-following ``grpc.aio.Channel``) and
``ClientManager`` (one shared channel per service and filter)."""

from grpcmesh.client.channel import ChannelStats, MeshChannel
from grpcmesh.client.errors import MeshRpcError, NoEndpointsRpcError
from grpcmesh.client.manager import ClientManager
from grpcmesh.client.outlier import OutlierPolicy
from grpcmesh.client.subchannel import EndpointStats

__all__ = [
    "ChannelStats",
    "ClientManager",
    "EndpointStats",
    "MeshChannel",
    "MeshRpcError",
    "NoEndpointsRpcError",
    "OutlierPolicy",
]
