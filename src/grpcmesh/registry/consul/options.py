"""``consul://host:port?...``: the options the Consul backend takes, parsed and checked up front.

Every problem is a :class:`~grpcmesh.errors.ConfigError` naming the option; secrets given in
the URL (``token=``, ``user:pass@``) never appear in an error.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal
from urllib.parse import SplitResult

from grpcmesh.config.durations import parse_duration as config_duration
from grpcmesh.errors import ConfigError

__all__ = ["DEFAULT_ADDRESS", "CheckMode", "ConsulOptions", "go_duration", "parse_duration", "parse_url"]

CheckMode = Literal["grpc", "ttl"]
DEFAULT_ADDRESS = "127.0.0.1:8500"
DEFAULT_PORT = 8500


@dataclass(frozen=True)
class ConsulOptions:
    """Everything ``consul://`` accepts, with the defaults of the original Go design."""

    address: str = DEFAULT_ADDRESS
    scheme: Literal["http", "https"] = "http"
    token: str | None = field(default=None, repr=False)
    datacenter: str | None = None
    namespace: str | None = None
    check: CheckMode = "grpc"
    check_interval: float = 10.0
    check_timeout: float = 5.0
    deregister_after: float = 30.0
    wait: float = 60.0
    """Longest a blocking query waits for a change before Consul answers anyway."""
    watch_rate: float = 10.0
    """Blocking queries per second a churning watch degrades to (token bucket, burst 3)."""
    ca: str | None = None
    cert: str | None = None
    key: str | None = None

    @property
    def base_url(self) -> str:
        return f"{self.scheme}://{self.address}"


def go_duration(seconds: float) -> str:
    """Seconds as a Go duration string, the form Consul parses: ``10s``, ``500ms``."""
    millis = round(seconds * 1000)
    return f"{millis // 1000}s" if millis % 1000 == 0 else f"{millis}ms"


def parse_duration(key: str, value: Any) -> float:
    """A duration option as configuration writes it (``10s``, ``500ms``, ``1m30s``, seconds); errors name it."""
    try:
        seconds = config_duration(value)
    except ValueError as exc:
        raise ConfigError(f"registry: consul option {key}: {exc}") from None
    if not seconds > 0:
        raise ConfigError(f"registry: consul option {key} must be longer than zero")
    return seconds


_KNOWN_OPTIONS = {
    "token",
    "scheme",
    "ca",
    "cert",
    "key",
    "dc",
    "ns",
    "check",
    "check_interval",
    "check_timeout",
    "deregister_after",
    "wait",
    "watch_rate",
}


def _address(url: SplitResult) -> str:
    """``host:port`` from the URL, the port checked (no credentials: they would end up in logs)."""
    netloc = url.netloc
    if "@" in netloc:
        raise ConfigError(
            "registry: put the Consul ACL token in the token option (or CONSUL_HTTP_TOKEN), "
            "not as user:password@ in the URL (URLs end up in logs)"
        )
    if not netloc:
        return DEFAULT_ADDRESS
    try:
        host, port = url.hostname, url.port
    except ValueError as exc:  # port out of range or not a number
        raise ConfigError(f"registry: consul address {netloc!r} has an invalid port ({exc}); use 1-65535") from None
    if not host:
        raise ConfigError(f"registry: consul address {netloc!r} has no host; write consul://host:port")
    if port == 0:
        raise ConfigError(f"registry: consul address {netloc!r} has port 0; use 1-65535")
    shown = f"[{host}]" if ":" in host else host
    return f"{shown}:{port or DEFAULT_PORT}"


def _tls_file(options: dict[str, Any], name: str) -> str | None:
    value = options.get(name)
    if not value:
        return None
    path = Path(str(value)).expanduser()
    if not path.is_file():
        raise ConfigError(f"registry: consul option {name}={str(path)!r} is not a file; give the path of a PEM file")
    return str(path)


def parse_url(url: SplitResult, options: dict[str, Any]) -> ConsulOptions:
    """The :class:`ConsulOptions` a ``consul://`` URL and its options describe."""
    unknown = sorted(set(options) - _KNOWN_OPTIONS)
    if unknown:
        raise ConfigError(f"registry: consul:// does not take option(s) {unknown}; it takes {sorted(_KNOWN_OPTIONS)}")
    address = _address(url)
    if url.path not in ("", "/"):
        raise ConfigError(f"registry: consul URL has path {url.path!r}; write consul://host:port")
    scheme = str(options.get("scheme", "http"))
    if scheme not in ("http", "https"):
        raise ConfigError(f"registry: consul option scheme={scheme!r}; use http or https")
    check = str(options.get("check", "grpc"))
    if check not in ("grpc", "ttl"):
        raise ConfigError(f"registry: consul option check={check!r}; use grpc (the agent probes grpc.health.v1) or ttl")
    if ("cert" in options) != ("key" in options):
        raise ConfigError("registry: give both cert and key (client certificate and its private key) or neither")
    for tls_option in ("ca", "cert", "key"):
        if tls_option in options and scheme != "https":
            raise ConfigError(f"registry: consul option {tls_option} only applies with scheme=https")
    try:
        watch_rate = float(options.get("watch_rate", 10.0))
    except (TypeError, ValueError):
        raise ConfigError(f"registry: watch_rate={options['watch_rate']!r} is not a number per second") from None
    if not 0 < watch_rate <= 1000:
        raise ConfigError("registry: watch_rate must be above zero and at most 1000 per second")
    wait = parse_duration("wait", options.get("wait", 60.0))
    if wait > 600:
        raise ConfigError("registry: wait is at most 10m (Consul's limit for blocking queries)")
    token = options.get("token") or os.environ.get("CONSUL_HTTP_TOKEN") or None
    return ConsulOptions(
        address=address,
        scheme="https" if scheme == "https" else "http",
        token=str(token) if token else None,
        datacenter=options.get("dc") or None,
        namespace=options.get("ns") or None,
        check="ttl" if check == "ttl" else "grpc",
        check_interval=parse_duration("check_interval", options.get("check_interval", 10.0)),
        check_timeout=parse_duration("check_timeout", options.get("check_timeout", 5.0)),
        deregister_after=parse_duration("deregister_after", options.get("deregister_after", 30.0)),
        wait=wait,
        watch_rate=watch_rate,
        ca=_tls_file(options, "ca"),
        cert=_tls_file(options, "cert"),
        key=_tls_file(options, "key"),
    )
