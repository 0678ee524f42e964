"""Service registries: the :class:`Registry` contract and ``open_registry(url)``.

Backends are imported lazily by URL scheme, so nothing that merely uses a registry
(discovery, the client, the server) imports a backend module or its dependencies.
"""

from __future__ import annotations

import importlib
import re
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from grpcmesh.errors import ConfigError, UnknownSchemeError
from grpcmesh.registry.base import DEFAULT_TTL, BaseRegistry, Registry, Snapshot, SnapshotFeed

__all__ = [
    "BACKENDS",
    "DEFAULT_TTL",
    "BaseRegistry",
    "Registry",
    "Snapshot",
    "SnapshotFeed",
    "open_registry",
    "redact_url",
]

BACKENDS: dict[str, str] = {
    "memory": "grpcmesh.registry.memory:from_url",
    "sqlite": "grpcmesh.registry.sqlite:from_url",
    "consul": "grpcmesh.registry.consul:from_url",
    "etcd": "grpcmesh.registry.etcd:from_url",
}
"""URL scheme -> ``module:factory``; a factory takes ``(SplitResult, options)``."""

BACKEND_EXTRAS: dict[str, tuple[str, str, str]] = {
    "etcd": ("aetcd", "etcd", "the etcd registry (etcd://)"),
    "consul": ("aiohttp", "consul", "the Consul registry (consul://)"),
}
"""URL scheme -> (package it needs, extra that installs it, feature) for backends outside the core."""


_USERINFO_RE = re.compile(r"(?<=://)([^/@?#]*)@")
_SECRET_PARAM_RE = re.compile(r"(?i)([?&;](?:password|passwd|pass|token|secret|[a-z_]*_key|auth)=)[^&;#]*")


def redact_url(url: str) -> str:
    """``url`` safe to show: user info and secret-looking query values replaced by ``***``."""
    return _SECRET_PARAM_RE.sub(r"\1***", _USERINFO_RE.sub("***@", url))


def open_registry(url: str, **options: Any) -> Registry:
    """Open the registry a URL names.

    ``memory://[NAME]``, ``sqlite:///abs/path.db`` (``sqlite://`` for the user's data dir,
    ``sqlite:relative/path.db`` for a relative file), ``etcd://host:port[,host:port]/prefix``,
    ``consul://host:port``. Query parameters and ``options`` are passed to the backend.
    """
    if not isinstance(url, str) or ("://" not in url and not url.startswith("sqlite:")):
        shown = redact_url(url) if isinstance(url, str) else f"of type {type(url).__name__}"
        raise UnknownSchemeError(
            f"registry URL {shown!r} has no scheme; use one of {', '.join(f'{s}://' for s in BACKENDS)}"
        )
    try:
        parts = urlsplit(url)
    except ValueError as exc:  # e.g. "etcd://[::1": an unclosed IPv6 bracket
        raise ConfigError(f"registry URL {redact_url(url)!r} is malformed: {exc}") from None
    target = BACKENDS.get(parts.scheme)
    if target is None:
        raise UnknownSchemeError(
            f"unknown registry scheme {parts.scheme!r} in {redact_url(url)!r}; known schemes: "
            + ", ".join(f"{s}://" for s in BACKENDS)
        )
    if parts.scheme in BACKEND_EXTRAS:
        from grpcmesh._extras import require

        require(*BACKEND_EXTRAS[parts.scheme])
    module_name, _, factory_name = target.partition(":")
    factory = getattr(importlib.import_module(module_name), factory_name)
    merged: dict[str, Any] = dict(parse_qsl(parts.query))
    merged.update(options)
    registry: Registry = factory(parts, merged)
    return registry
