"""Service registries: the :class:`Registry` contract and ``open_registry(url)``.

Backends are imported lazily by URL scheme, so nothing that merely uses a registry
(discovery, the client, the server) imports a backend module or its dependencies.
"""

from __future__ import annotations

import importlib
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from grpcmesh.errors import UnknownSchemeError
from grpcmesh.registry.base import DEFAULT_TTL, BaseRegistry, Registry, Snapshot, SnapshotFeed

__all__ = [
    "BACKENDS",
    "DEFAULT_TTL",
    "BaseRegistry",
    "Registry",
    "Snapshot",
    "SnapshotFeed",
    "open_registry",
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


def open_registry(url: str, **options: Any) -> Registry:
    """Open the registry a URL names.

    ``memory://[NAME]``, ``sqlite:///abs/path.db`` (``sqlite://`` for the user's data dir,
    ``sqlite:relative/path.db`` for a relative file), ``etcd://host:port[,host:port]/prefix``,
    ``consul://host:port``. Query parameters and ``options`` are passed to the backend.
    """
    if not isinstance(url, str) or ("://" not in url and not url.startswith("sqlite:")):
        raise UnknownSchemeError(
            f"registry URL {url!r} has no scheme; use one of {', '.join(f'{s}://' for s in BACKENDS)}"
        )
    parts = urlsplit(url)
    target = BACKENDS.get(parts.scheme)
    if target is None:
        raise UnknownSchemeError(
            f"unknown registry scheme {parts.scheme!r} in {url!r}; known schemes: "
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
