"""``Mesh``: what a service holds — the registry connection, the configuration, the middleware.

A service makes one ``Mesh`` (``Mesh.from_config(path)`` or ``Mesh(registry=...)``) and
asks it for servers (``mesh.server()``) and channels (``mesh.channel()``). The mesh owns
what is shared between them: the registry (closed with the mesh when the mesh opened it),
the config sections that security, tracing and metrics read, the mesh's own concerns
(run inside its servers' per-method wrapper and its channels' call engine), and the user's
interceptor chains every server (and channel) it makes will use.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Any

import grpc
from prometheus_client import CollectorRegistry

from grpcmesh.client import ClientManager, MeshChannel
from grpcmesh.client.settings import CallSettings
from grpcmesh.config import MeshConfig, load_config
from grpcmesh.config.models import SheddingConfig
from grpcmesh.context import Propagation
from grpcmesh.errors import ClosedError, ConfigError
from grpcmesh.lifecycle_log import install_lifecycle_logging
from grpcmesh.mesh_middleware import MeshMiddleware
from grpcmesh.registry import Registry, open_registry
from grpcmesh.security.tls import mesh_channel_credentials
from grpcmesh.server import Dependency, MeshServer, ServerSettings, TlsFiles
from grpcmesh.server.admission import ShedCallsCollector
from grpcmesh.server.shedding import SheddingPolicy

if TYPE_CHECKING:  # grpc's classes are generic only in the type stubs
    ServerInterceptor = grpc.aio.ServerInterceptor[Any, Any]


class Mesh:
    """The shared mesh state of one process.

    ``registry`` is a :class:`Registry` (owned by the caller) or an ``open_registry`` URL
    (opened and later closed by the mesh); by default the config's ``registry`` section,
    which itself defaults to ``sqlite://``. ``server_interceptors`` run, in order, in every
    server, outside the mesh's own concerns; ``client_interceptors`` in every channel, on each
    attempt, inside the mesh's observation of the call.
    ``client_options`` are extra :class:`ClientManager` arguments (``default_policy``,
    ``retry_methods``, ``endpoint_wait``...).
    """

    def __init__(
        self,
        registry: Registry | str | None = None,
        *,
        config: MeshConfig | None = None,
        server_interceptors: Sequence[ServerInterceptor] = (),
        client_interceptors: Sequence[grpc.aio.ClientInterceptor] = (),
        client_options: Mapping[str, Any] | None = None,
        metrics_registry: CollectorRegistry | None = None,
    ) -> None:
        self.config = config if config is not None else MeshConfig()
        install_lifecycle_logging(self.config.logging)
        self.middleware = MeshMiddleware(self.config, metrics_registry)
        """What the config switched on: server concerns, client observation, metrics, tracer provider."""
        if registry is None or isinstance(registry, str):
            url = registry if registry is not None else self.config.registry.resolved_url
            options = self.config.registry.backend_options() if registry is None else {}
            self.registry: Registry = open_registry(url, **options)
            self._owns_registry = True
        else:
            self.registry = registry
            self._owns_registry = False
        self.server_interceptors: tuple[ServerInterceptor, ...] = tuple(server_interceptors)
        self.client_interceptors: tuple[grpc.aio.ClientInterceptor, ...] = tuple(client_interceptors)
        self._servers: list[MeshServer] = []
        self._clients: ClientManager | None = None
        self._client_options: dict[str, Any] = dict(client_options or {})
        self._closed = False

    @classmethod
    def from_config(
        cls,
        path: str | os.PathLike[str],
        *,
        env: Mapping[str, str] | None = None,
        server_interceptors: Sequence[ServerInterceptor] = (),
        client_interceptors: Sequence[grpc.aio.ClientInterceptor] = (),
    ) -> Mesh:
        """A mesh configured by a YAML file (see :func:`grpcmesh.load_config`)."""
        return cls(
            config=load_config(path, env=env),
            server_interceptors=server_interceptors,
            client_interceptors=client_interceptors,
        )

    def server(
        self,
        name: str | None = None,
        version: str | None = None,
        port: int | None = None,
        host: str | None = None,
        *,
        dependencies: Sequence[Dependency | str] | None = None,
        metadata: Mapping[str, str] | None = None,
        interceptors: Sequence[ServerInterceptor] = (),
        credentials: grpc.ServerCredentials | None = None,
        recovery: bool = True,
        options: Sequence[tuple[str, Any]] = (),
        maximum_concurrent_rpcs: int | None = None,
        shedding: SheddingPolicy | None = None,
        **settings: Any,
    ) -> MeshServer:
        """A server for ``name``; every argument left out comes from the config's ``service`` section.

        ``dependencies`` (names or :class:`Dependency`) default to the config's; extra
        ``settings`` are :class:`ServerSettings` fields (``shutdown_grace``,
        ``propagation_delay``, ``handle_signals``, ``readiness_timeout``, ``instance_id``...).
        ``shedding`` (a :class:`~grpcmesh.server.shedding.SheddingPolicy`) overrides the
        config's ``service.load_shedding``.
        """
        service = self.config.service
        name = name or (service.name if service else None)
        if not name:
            raise ConfigError("mesh.server() needs a service name: pass name=... or set service.name in the config")
        defaults: dict[str, Any] = {"ttl": self.config.registry.deregister_after}
        if service is not None:
            defaults.update(
                version=service.version,
                port=service.port,
                host=service.host,
                advertise_address=service.advertise_address,
                metadata=dict(service.metadata),
                weight=service.weight,
                reflection=service.reflection,
                shutdown_grace=service.shutdown_grace,
                propagation_delay=service.propagation_delay,
            )
        security = self.config.security
        if security.tls_enabled and credentials is None:
            if security.cert_file is None or security.key_file is None:
                raise ConfigError(
                    "security.cert_file and security.key_file are required to serve with tls_enabled: true "
                    "(a call-only client needs at most ca_file)"
                )
            defaults["tls"] = TlsFiles(security.cert_file, security.key_file, security.ca_file, security.client_auth)
        if dependencies is None:
            deps = tuple(Dependency(d.name, d.version, d.required) for d in self.config.dependencies)
        else:
            deps = tuple(d if isinstance(d, Dependency) else Dependency(d) for d in dependencies)
        given = {"version": version, "port": port, "host": host, "metadata": metadata}
        defaults.update({key: value for key, value in given.items() if value is not None})
        defaults.update(settings)
        server = MeshServer(
            self.registry,
            ServerSettings(name=name, dependencies=deps, **defaults),
            interceptors=[*self.server_interceptors, *interceptors],
            recovery=recovery,
            credentials=credentials,
            options=options,
            maximum_concurrent_rpcs=maximum_concurrent_rpcs,
            metadata_hooks=[self.middleware.metrics_metadata],
            concerns=self.middleware.server_concerns,
            propagation=Propagation(self.config.client.context_propagation, margin=self.config.client.deadline_margin),
            shedding=shedding or (_shedding_policy(service.load_shedding) if service is not None else None),
        )
        if server.shedder.policy.enabled and self.middleware.metrics_registry is not None:
            self.middleware.metrics_registry.register(ShedCallsCollector(name, server.shedder))
        self._servers.append(server)
        return server

    def channel(
        self,
        name: str,
        version: str | None = None,
        metadata_match: Mapping[str, str] | None = None,
        policy: str | None = None,
    ) -> MeshChannel:
        """The shared :class:`MeshChannel` to service ``name``; generated stubs use it unchanged.

        One channel per (name, filter, policy) for the whole process (the original Go design's
        ``ClientManager``), carrying this mesh's client interceptors and TLS settings, and the
        call semantics the config gives ``name`` (:meth:`call_settings`: the ``client:``
        section with the keys of its ``dependencies:`` entry — balancing when ``policy`` is
        not given, timeouts, retries, wait-for-ready, outlier detection, throttling...).
        """
        return self.clients.channel(name, version=version, metadata_match=metadata_match, policy=policy)

    def call_settings(self, name: str) -> CallSettings:
        """How this mesh calls service ``name``: the ``client:`` section with its ``dependencies:`` entry's keys."""
        return CallSettings.from_config(self.config.client_for(name))

    @property
    def clients(self) -> ClientManager:
        """The :class:`ClientManager` behind :meth:`channel`, created on first use."""
        if self._clients is None:
            if self._closed:
                raise ClosedError("this Mesh is closed; create a new one")
            options: dict[str, Any] = {"settings_for": self.call_settings, **self._client_options}
            self._clients = ClientManager(
                self.registry,
                interceptors=self.client_interceptors,
                credentials=mesh_channel_credentials(self.config.security),
                security=self.config.security if self.config.security.tls_enabled else None,
                observer=self.middleware.client_observation,
                **options,
            )
            self.middleware.watch_clients(self._clients.stats)
        return self._clients

    async def close(self) -> None:
        """Stop the servers this mesh made (gracefully), then close the registry if the mesh opened it."""
        if self._closed:
            return
        self._closed = True
        for server in self._servers:
            await server.stop()
        if self._clients is not None:
            await self._clients.close()
        if self._owns_registry:
            await self.registry.close()
        await self.middleware.close()

    async def __aenter__(self) -> Mesh:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()


def _shedding_policy(config: SheddingConfig) -> SheddingPolicy:
    return SheddingPolicy(
        enabled=config.enabled,
        queue_delay_factor=config.queue_delay_factor,
        min_queue_delay=config.min_queue_delay,
        max_queue_delay=config.max_queue_delay,
        interval=config.interval,
        interval_factor=config.interval_factor,
        min_interval=config.min_interval,
        max_lag=config.max_lag,
        arrival_factor=config.arrival_factor,
        sustained_interval=config.sustained_interval,
        cooldown=config.cooldown,
        minimum_in_flight=config.minimum_in_flight,
        window=config.window,
    )
