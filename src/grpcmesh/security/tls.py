"""Server and client TLS credentials from PEM files, and the peer identity of an mTLS call.

The files are read when the credentials are built, once at startup, before serving.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import grpc

from grpcmesh.errors import ConfigError


def _read(path: str | Path, field: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except FileNotFoundError:
        raise ConfigError(
            f"{field}: file {str(path)!r} not found; check the path (or run generate_dev_certs)"
        ) from None
    except OSError as error:
        raise ConfigError(f"{field}: cannot read {str(path)!r}: {error.strerror}") from None


def server_credentials(
    cert_file: str | Path,
    key_file: str | Path,
    ca_file: str | Path | None = None,
    require_client_cert: bool | None = None,
) -> grpc.ServerCredentials:
    """TLS credentials for a server; with ``ca_file`` it is mTLS and, by default, requires a
    client certificate signed by that CA (``require_client_cert=False`` makes it optional)."""
    require = ca_file is not None if require_client_cert is None else require_client_cert
    if require and ca_file is None:
        raise ConfigError("security.ca_file: requiring client certificates needs the CA that signs them")
    pair = (_read(key_file, "security.key_file"), _read(cert_file, "security.cert_file"))
    roots = _read(ca_file, "security.ca_file") if ca_file is not None else None
    return grpc.ssl_server_credentials([pair], root_certificates=roots, require_client_auth=require)


def client_credentials(
    ca_file: str | Path, cert_file: str | Path | None = None, key_file: str | Path | None = None
) -> grpc.ChannelCredentials:
    """TLS credentials for a channel trusting ``ca_file``; with a cert and key it presents them (mTLS)."""
    if (cert_file is None) != (key_file is None):
        raise ConfigError("security.cert_file/key_file: give both the client certificate and its key, or neither")
    return grpc.ssl_channel_credentials(
        root_certificates=_read(ca_file, "security.ca_file"),
        private_key=_read(key_file, "security.key_file") if key_file is not None else None,
        certificate_chain=_read(cert_file, "security.cert_file") if cert_file is not None else None,
    )


def peer_identities(context: Any) -> tuple[str, ...]:
    """The verified identities of an mTLS peer: certificate CN, then SANs; empty without a client cert."""
    try:
        auth = context.auth_context()
    except Exception:
        return ()
    names: list[str] = []
    for key in ("x509_common_name", "x509_subject_alternative_name"):
        for value in auth.get(key, ()):
            text = value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
            if text not in names:
                names.append(text)
    return tuple(names)
