"""``ClientManager`` (the original Go design's client connection manager): one shared channel per service and filter.

Every caller asking for the same (service, version, metadata filter, policy) gets the same
:class:`MeshChannel`, so a process keeps one set of connections per backend however many
stubs it creates; ``close()`` closes them all.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Collection, Mapping, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Any

import grpc

from grpcmesh.client.calls import CallObserver
from grpcmesh.client.channel import (
    DEFAULT_DRAIN_GRACE,
    DEFAULT_ENDPOINT_WAIT,
    DEFAULT_HASH_KEY,
    ChannelOptions,
    ChannelStats,
    MeshChannel,
)
from grpcmesh.client.outlier import OutlierPolicy
from grpcmesh.client.settings import CallSettings
from grpcmesh.discovery.balancers import POLICIES
from grpcmesh.discovery.endpoints import EndpointFilter
from grpcmesh.errors import ClosedError, ConfigError
from grpcmesh.registry.base import Registry

if TYPE_CHECKING:
    from grpcmesh.config import SecurityConfig

ChannelKey = tuple[str, EndpointFilter, str]


class ClientManager:
    """Creates and caches :class:`MeshChannel` objects sharing one configuration."""

    def __init__(
        self,
        registry: Registry,
        *,
        interceptors: Sequence[Any] = (),
        credentials: grpc.ChannelCredentials | None = None,
        options: ChannelOptions = (),
        default_policy: str = "round_robin",
        endpoint_wait: float = DEFAULT_ENDPOINT_WAIT,
        retry_methods: Collection[str] = (),
        hash_key: str = DEFAULT_HASH_KEY,
        outlier: OutlierPolicy | None = None,
        drain_grace: float = DEFAULT_DRAIN_GRACE,
        observer: CallObserver | None = None,
        settings_for: Callable[[str], CallSettings] | None = None,
        security: SecurityConfig | None = None,
    ) -> None:
        if default_policy not in POLICIES:
            raise ConfigError(
                f"default_policy: unknown load-balancing policy {default_policy!r}; "
                f"choose one of {', '.join(sorted(POLICIES))}"
            )
        self.registry = registry
        self._channel_kwargs: dict[str, Any] = {
            "interceptors": tuple(interceptors),
            "credentials": credentials,
            "options": tuple(options),
            "endpoint_wait": endpoint_wait,
            "retry_methods": tuple(retry_methods),
            "hash_key": hash_key,
            "outlier": outlier,
            "drain_grace": drain_grace,
            "observer": observer,
            "security": security,
        }
        self.default_policy = default_policy
        self._settings_for = settings_for
        """Per-service call semantics (``Mesh`` reads them from the ``client:``/``dependencies:`` config)."""
        self._explicit_hash_key = hash_key != DEFAULT_HASH_KEY
        self._channels: dict[ChannelKey, MeshChannel] = {}
        self._closed = False

    def channel(
        self,
        name: str,
        version: str | None = None,
        metadata_match: Mapping[str, str] | None = None,
        policy: str | None = None,
    ) -> MeshChannel:
        """The shared channel to ``name`` (instances matching the filter), created on first use."""
        if self._closed:
            raise ClosedError("ClientManager is closed; create a new one")
        kwargs = dict(self._channel_kwargs)
        settings = self._settings_for(name) if self._settings_for is not None else None
        if settings is not None:
            kwargs["settings"] = settings
            if settings.hash_header and not self._explicit_hash_key:
                kwargs["hash_key"] = settings.hash_header
        chosen = policy or (settings.balancing if settings is not None else None) or self.default_policy
        key = (name, EndpointFilter.of(version, metadata_match), chosen)
        found = self._channels.get(key)
        if found is None:
            found = MeshChannel(
                self.registry,
                name,
                version=version,
                metadata_match=metadata_match,
                policy=chosen,
                **kwargs,
            )
            self._channels[key] = found
        return found

    @property
    def channels(self) -> list[MeshChannel]:
        return list(self._channels.values())

    def stats(self) -> list[ChannelStats]:
        return [c.stats() for c in self._channels.values()]

    async def close(self, grace: float | None = None) -> None:
        """Close every channel this manager made."""
        self._closed = True
        channels, self._channels = list(self._channels.values()), {}
        await asyncio.gather(*(c.close(grace) for c in channels))

    async def __aenter__(self) -> ClientManager:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()
