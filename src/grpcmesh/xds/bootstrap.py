"""The bootstrap file a gRPC client reads (``GRPC_XDS_BOOTSTRAP``) to find the control plane.

Format: gRFC A27 "Bootstrap file". ``server_features: ["xds_v3"]`` tells the client to speak
xDS v3, the only version grpcmesh serves. Channel credentials match the ADS port: ``insecure``
for plain text (put the control plane on a trusted network or loopback), ``tls`` with the CA
(and, for mTLS, the client's certificate and key) when the mesh's security settings enable TLS.
"""

from __future__ import annotations

import json
import socket
from typing import TYPE_CHECKING

from grpcmesh.errors import ConfigError

if TYPE_CHECKING:
    from grpcmesh.config.models import SecurityConfig

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


def channel_creds(security: SecurityConfig | None) -> list[dict[str, object]]:
    """The bootstrap's ``channel_creds``: ``tls`` (gRFC A65 file-based) when TLS is enabled."""
    if security is None or not security.tls_enabled:
        return [{"type": "insecure"}]
    if security.ca_file is None:
        raise ConfigError("security.ca_file: a TLS xDS client needs the CA that signs the control plane's certificate")
    config: dict[str, str] = {"ca_certificate_file": str(security.ca_file.resolve())}
    if security.cert_file is not None and security.key_file is not None:
        config["certificate_file"] = str(security.cert_file.resolve())
        config["private_key_file"] = str(security.key_file.resolve())
    return [{"type": "tls", "config": config}]


def bootstrap(
    server_uri: str,
    node_id: str = DEFAULT_NODE_ID,
    cluster: str = DEFAULT_CLUSTER,
    *,
    security: SecurityConfig | None = None,
) -> dict[str, object]:
    """The bootstrap as a dict (see :func:`bootstrap_json`)."""
    if not node_id:
        raise ConfigError("node_id: must be a non-empty string naming the client, e.g. 'order-service-1'")
    return {
        "xds_servers": [
            {
                "server_uri": _check_server_uri(server_uri),
                "channel_creds": channel_creds(security),
                "server_features": ["xds_v3"],
            }
        ],
        "node": {"id": node_id, "cluster": cluster},
    }


def bootstrap_json(
    server_uri: str,
    node_id: str = DEFAULT_NODE_ID,
    cluster: str = DEFAULT_CLUSTER,
    *,
    security: SecurityConfig | None = None,
) -> str:
    """The JSON for ``GRPC_XDS_BOOTSTRAP`` (a file) or ``GRPC_XDS_BOOTSTRAP_CONFIG`` (the text itself)."""
    return json.dumps(bootstrap(server_uri, node_id, cluster, security=security), indent=2) + "\n"
