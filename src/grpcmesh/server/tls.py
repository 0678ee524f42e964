"""Server TLS from PEM files: plain TLS, or mutual TLS when client certificates are required.

Files are read in a worker thread when the server starts, so a slow disk never blocks the
event loop and a missing file is reported then, naming the file.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path

import grpc

from grpcmesh.errors import ServerError


@dataclass(frozen=True)
class TlsFiles:
    """PEM files of a server's identity; ``ca_file`` verifies client certificates (mTLS)."""

    cert_file: Path
    key_file: Path
    ca_file: Path | None = None
    client_auth: bool = False

    def __post_init__(self) -> None:
        if self.client_auth and self.ca_file is None:
            raise ServerError("TLS: client_auth needs ca_file, the CA bundle that signs client certificates")


def _read(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ServerError(f"TLS: cannot read {what} {path}: {exc.strerror or exc}") from None


def _credentials(files: TlsFiles) -> grpc.ServerCredentials:
    cert = _read(files.cert_file, "cert_file")
    key = _read(files.key_file, "key_file")
    ca = _read(files.ca_file, "ca_file") if files.ca_file is not None else None
    return grpc.ssl_server_credentials([(key, cert)], root_certificates=ca, require_client_auth=files.client_auth)


async def load_server_credentials(files: TlsFiles) -> grpc.ServerCredentials:
    """``grpc.ServerCredentials`` for ``files``; raises :class:`ServerError` naming an unreadable file."""
    return await asyncio.to_thread(_credentials, files)
