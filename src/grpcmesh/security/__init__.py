"""Transport security: TLS/mTLS credentials from files, peer identities, and a dev certificate authority.

The dev certificate authority needs ``cryptography`` (the ``[cli]`` extra), so it is imported
only when one of its names is used.
"""

from typing import Any

from grpcmesh.security.tls import (
    client_credentials,
    handshake_hint,
    mesh_channel_credentials,
    peer_identities,
    server_credentials,
)

__all__ = [
    "DevCerts",
    "ServiceCert",
    "client_credentials",
    "generate_dev_certs",
    "handshake_hint",
    "mesh_channel_credentials",
    "peer_identities",
    "server_credentials",
]

_CERT_NAMES = frozenset({"DevCerts", "ServiceCert", "generate_dev_certs"})


def __getattr__(name: str) -> Any:
    if name in _CERT_NAMES:
        from grpcmesh._extras import require

        require("cryptography", "cli", "dev certificates")
        from grpcmesh.security import certs

        return getattr(certs, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
