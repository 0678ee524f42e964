"""``Mesh``: what a service holds — the registry connection, the configuration, the middleware.

A service makes one ``Mesh`` (``Mesh.from_config(path)`` or ``Mesh(registry=...)``) and
asks it for servers (``mesh.server()``) and, once the client lands, channels. The mesh owns
what is shared between them: the registry (closed with the mesh when the mesh opened it),
the config sections that security, tracing and metrics read, and the ordered interceptor
chains every server (and channel) it makes will use.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Any

import grpc

from grpcmesh.config import MeshConfig, load_config
from grpcmesh.errors import ConfigError
from grpcmesh.registry import Registry, open_registry
from grpcmesh.server import Dependency, MeshServer, ServerSettings, TlsFiles

if TYPE_CHECKING:  # grpc's classes are generic only in the type stubs
    ServerInterceptor = grpc.aio.ServerInterceptor[Any, Any]


class Mesh:
    """The shared mesh state of one process.

    ``registry`` is a :class:`Registry` (owned by the caller) or an ``open_registry`` URL
    (opened and later closed by the mesh); by default the config's ``registry`` section,
    which itself defaults to ``sqlite://``. ``server_interceptors`` run, in order, in every
    server after the recovery interceptor; ``client_interceptors`` are kept for channels.
    """

    def __init__(
        self,
        registry: Registry | str | None = None,
        *,
        config: MeshConfig | None = None,
        server_interceptors: Sequence[ServerInterceptor] = (),
        client_interceptors: Sequence[grpc.aio.ClientInterceptor] = (),
    ) -> None:
        self.config = config if config is not None else MeshConfig()
        if registry is None or isinstance(registry, str):
            url = registry if registry is not None else self.config.registry.resolved_url
            options = self.config.registry.options if registry is None else {}
            self.registry: Registry = open_registry(url, **options)
            self._owns_registry = True
        else:
            self.registry = registry
            self._owns_registry = False
        self.server_interceptors: tuple[ServerInterceptor, ...] = tuple(server_interceptors)
        self.client_interceptors: tuple[grpc.aio.ClientInterceptor, ...] = tuple(client_interceptors)
        self._servers: list[MeshServer] = []
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
        **settings: Any,
    ) -> MeshServer:
        """A server for ``name``; every argument left out comes from the config's ``service`` section.

        ``dependencies`` (names or :class:`Dependency`) default to the config's; extra
        ``settings`` are :class:`ServerSettings` fields (``shutdown_grace``,
        ``propagation_delay``, ``handle_signals``, ``readiness_timeout``, ``instance_id``...).
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
        if security.tls_enabled and security.cert_file and security.key_file and credentials is None:
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
        )
        self._servers.append(server)
        return server

    # mesh.channel(name) -> MeshChannel arrives with the client layer; it reads
    # self.registry, self.config (security/tracing) and self.client_interceptors.

    async def close(self) -> None:
        """Stop the servers this mesh made (gracefully), then close the registry if the mesh opened it."""
        if self._closed:
            return
        self._closed = True
        for server in self._servers:
            await server.stop()
        if self._owns_registry:
            await self.registry.close()

    async def __aenter__(self) -> Mesh:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()
