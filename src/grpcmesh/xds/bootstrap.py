"""The bootstrap file a gRPC client reads (``GRPC_XDS_BOOTSTRAP``) to find the control plane.

Format: gRFC A27 "Bootstrap file". ``server_features: ["xds_v3"]`` tells the client to speak
xDS v3, the only version grpcmesh serves; ``insecure`` channel credentials match the
plain-text ADS port (put the control plane on a trusted network or loopback).
"""

from __future__ import annotations

import json
import socket

from grpcmesh.errors import ConfigError

DEFAULT_CLUSTER = "grpcmesh"


def _default_node_id() -> str:
    return f"grpcmesh-client-{socket.gethostname()}"


DEFAULT_NODE_ID = _default_node_id()
"""Names the client in the control plane's logs; give each client its own id to tell them apart."""


def _check_server_uri(server_uri: str) -> str:
    host, sep, port = server_uri.rpartition(":")
    if not sep or not host or not port.isdigit() or not 1 <= int(port) <= 65535:
        raise ConfigError(
            f"server_uri: {server_uri!r} is not HOST:PORT; give the control plane's address, e.g. '127.0.0.1:18000'"
        )
    return server_uri


def bootstrap(server_uri: str, node_id: str = DEFAULT_NODE_ID, cluster: str = DEFAULT_CLUSTER) -> dict[str, object]:
    """The bootstrap as a dict (see :func:`bootstrap_json`)."""
    if not node_id:
        raise ConfigError("node_id: must be a non-empty string naming the client, e.g. 'order-service-1'")
    return {
        "xds_servers": [
            {
                "server_uri": _check_server_uri(server_uri),
                "channel_creds": [{"type": "insecure"}],
                "server_features": ["xds_v3"],
            }
        ],
        "node": {"id": node_id, "cluster": cluster},
    }


def bootstrap_json(server_uri: str, node_id: str = DEFAULT_NODE_ID, cluster: str = DEFAULT_CLUSTER) -> str:
    """The JSON for ``GRPC_XDS_BOOTSTRAP`` (a file) or ``GRPC_XDS_BOOTSTRAP_CONFIG`` (the text itself)."""
    return json.dumps(bootstrap(server_uri, node_id, cluster), indent=2) + "\n"
