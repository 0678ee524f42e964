"""Server and client TLS credentials from PEM files, and the peer identity of an mTLS call.

The files are read when the credentials are built, once at startup, before serving.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import grpc

from grpcmesh.errors import ConfigError

if TYPE_CHECKING:
    from grpcmesh.config import SecurityConfig


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


def mesh_channel_credentials(security: SecurityConfig) -> grpc.ChannelCredentials | None:
    """Channel credentials a ``security:`` section asks for; ``None`` when TLS is off.

    A client presents its certificate whenever ``cert_file``/``key_file`` are set (whether the
    server asks for one is the server's business); without ``ca_file`` the system's trusted CAs
    verify the server, so a call-only client can turn TLS on with nothing but a CA, or nothing at all.
    """
    if not security.tls_enabled:
        return None
    if (security.cert_file is None) != (security.key_file is None):
        raise ConfigError("security.cert_file/key_file: give both the client certificate and its key, or neither")
    if security.ca_file is not None:
        return client_credentials(security.ca_file, security.cert_file, security.key_file)
    if security.cert_file is not None and security.key_file is not None:
        return grpc.ssl_channel_credentials(
            private_key=_read(security.key_file, "security.key_file"),
            certificate_chain=_read(security.cert_file, "security.cert_file"),
        )
    return grpc.ssl_channel_credentials()  # the system's trusted CAs


def handshake_hint(details: str, security: SecurityConfig) -> str | None:
    """The likely cause of a failed connection, from the status details gRPC gives and our TLS settings.

    gRPC reports a TLS handshake the server aborted as plain ``UNAVAILABLE ... Socket closed``;
    this turns the common cases (no client certificate for an mTLS server, plaintext against
    TLS and the reverse, an untrusted server certificate) into one sentence saying what to set.
    """
    if "CERTIFICATE_VERIFY_FAILED" in details or "certificate signature failure" in details:
        return (
            "the server's certificate is not signed by a CA this client trusts; "
            "set security.ca_file (or --ca) to the CA that signed it"
        )
    if "WRONG_VERSION_NUMBER" in details and security.tls_enabled:
        return "the server does not speak TLS; turn TLS off for it (tls_enabled: false, or --no-tls)"
    if "Tls handshake failed" in details and security.tls_enabled:
        return (
            "the TLS handshake failed; check that each side trusts the CA that signed the other's "
            "certificate (security.ca_file) and that the server's certificate names the address called"
        )
    if "Socket closed" not in details:
        return None
    if not security.tls_enabled:
        return "the server closed the connection; it likely expects TLS: set security.tls_enabled (or --tls --ca CA)"
    if security.cert_file is None:
        return (
            "the server closed the TLS handshake; it likely requires a client certificate (mTLS): "
            "set security.cert_file and security.key_file (or --cert/--key)"
        )
    return (
        "the server closed the TLS handshake; it likely does not accept this client certificate "
        "(signed by a CA it does not trust?)"
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
