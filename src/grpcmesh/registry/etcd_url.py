"""``etcd://host:port[,host:port...]/prefix?...``: the etcd backend's URL and options, checked up front."""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import SplitResult

from grpcmesh.errors import ConfigError
from grpcmesh.registry.etcd_client import Endpoint, TlsFiles

__all__ = ["DEFAULT_PREFIX", "DEFAULT_TIMEOUT", "check_prefix", "parse_url"]

DEFAULT_PREFIX = "/services"
DEFAULT_TIMEOUT = 5.0


def check_prefix(prefix: str) -> str:
    cleaned = "/" + prefix.strip("/")
    if cleaned == "/" or any(not part for part in cleaned[1:].split("/")) or " " in cleaned:
        raise ConfigError(f"registry: etcd key prefix {prefix!r} is invalid; use a path such as /services")
    return cleaned


_OPTIONS = {"ca", "cert", "key", "tls", "username", "password", "timeout"}


def parse_url(url: SplitResult, options: dict[str, Any]) -> dict[str, Any]:
    """``etcd://host:port[,host:port...]/prefix`` (default ``127.0.0.1:2379`` and ``/services``).

    Returns the keyword arguments of :class:`~grpcmesh.registry.etcd.EtcdRegistry`.
    Options: ``ca``, ``cert``, ``key`` (PEM files; any of them turns TLS on), ``tls=true``
    (TLS with the system's CAs), ``username`` and ``password``, ``timeout`` (seconds per
    call, across members; default 5).
    """
    unknown = sorted(set(options) - _OPTIONS)
    if unknown:
        raise ConfigError(f"registry: etcd:// does not take option(s) {unknown}; it takes {sorted(_OPTIONS)}")
    if "@" in url.netloc:
        raise ConfigError(
            "registry: put etcd credentials in the username and password options, not in the URL (URLs end up in logs)"
        )
    hosts = [h for h in url.netloc.split(",") if h.strip()] or ["127.0.0.1:2379"]
    endpoints = [Endpoint.parse(h) for h in hosts]
    prefix = url.path if url.path.strip("/") else DEFAULT_PREFIX
    files = {name: Path(str(options[name])).expanduser() for name in ("ca", "cert", "key") if options.get(name)}
    if ("cert" in files) != ("key" in files):
        raise ConfigError("registry: etcd options cert and key go together (client certificate and its key)")
    for name, path in files.items():
        if not path.is_file():
            raise ConfigError(f"registry: etcd option {name}={str(path)!r} is not a file; give the path of a PEM file")
    tls_flag = str(options.get("tls", "")).lower()
    if tls_flag not in {"", "0", "1", "true", "false", "yes", "no"}:
        raise ConfigError(f"registry: etcd option tls={options['tls']!r} must be true or false")
    use_tls = bool(files) or tls_flag in {"1", "true", "yes"}
    tls = TlsFiles(files.get("ca"), files.get("cert"), files.get("key")) if use_tls else None
    try:
        timeout = float(options.get("timeout", DEFAULT_TIMEOUT))
    except (TypeError, ValueError):
        raise ConfigError(f"registry: etcd option timeout={options['timeout']!r} is not a number of seconds") from None
    if not 0.1 <= timeout <= 300:
        raise ConfigError("registry: etcd option timeout must be between 0.1 and 300 seconds")
    username, password = options.get("username"), options.get("password")
    return {
        "endpoints": endpoints,
        "prefix": prefix,
        "tls": tls,
        "username": None if username is None else str(username),
        "password": None if password is None else str(password),
        "timeout": timeout,
    }
