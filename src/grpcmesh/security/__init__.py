"""Transport security: TLS/mTLS credentials from files, peer identities, and a dev certificate authority."""

from grpcmesh.security.certs import DevCerts, ServiceCert, generate_dev_certs
from grpcmesh.security.tls import client_credentials, peer_identities, server_credentials

__all__ = [
    "DevCerts",
    "ServiceCert",
    "client_credentials",
    "generate_dev_certs",
    "peer_identities",
    "server_credentials",
]
