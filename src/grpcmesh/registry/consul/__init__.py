"""The Consul registry backend (``consul://host:port``), split by job as Kratos splits its own:

* :mod:`.options` — the URL and its options (durations as the configuration writes them);
* :mod:`.transport` — HTTP to the agent (token, TLS, errors);
* :mod:`.registry` — registration, TTL heartbeat and owner upkeep, reads, watches;
* :mod:`.watcher` — the blocking-query loop with its token bucket;
* :mod:`.entries` and :mod:`.meta` — how an instance is stored in, and read back from, Consul.

Tested against a stand-in of Consul's documented HTTP API (``tests/registry/consul_standin.py``).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import SplitResult

from grpcmesh.registry.consul.entries import consul_service_id, health_from_checks, ttl_check_id
from grpcmesh.registry.consul.options import (
    DEFAULT_ADDRESS,
    CheckMode,
    ConsulOptions,
    go_duration,
    parse_duration,
    parse_url,
)
from grpcmesh.registry.consul.registry import CONSUL_SERVICE, ConsulRegistry
from grpcmesh.registry.consul.watcher import TokenBucket, next_index

__all__ = [
    "CONSUL_SERVICE",
    "DEFAULT_ADDRESS",
    "CheckMode",
    "ConsulOptions",
    "ConsulRegistry",
    "TokenBucket",
    "consul_service_id",
    "from_url",
    "go_duration",
    "health_from_checks",
    "next_index",
    "parse_duration",
    "ttl_check_id",
]


def from_url(url: SplitResult, options: dict[str, Any]) -> ConsulRegistry:
    """``consul://host:port`` (default ``127.0.0.1:8500``) with options.

    ``token`` (else ``CONSUL_HTTP_TOKEN``), ``scheme=https`` with ``ca``/``cert``/``key`` files,
    ``dc``, ``ns``, ``check=grpc|ttl``, ``check_interval``, ``check_timeout``,
    ``deregister_after``, ``wait`` (durations like ``10s`` or ``1m30s``) and ``watch_rate`` (per second).
    """
    return ConsulRegistry(parse_url(url, options))
