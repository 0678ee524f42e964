"""The ADS server: ``envoy.service.discovery.v3.AggregatedDiscoveryService`` on ``grpc.aio``.

Each stream gets an :class:`~grpcmesh.xds.session.AdsSession` (protocol state) and shares
one :class:`~grpcmesh.xds.watches.RegistryWatches` (registry state) with every other
stream. A stream's loop handles two kinds of events in order: a request from the client,
or "some endpoints this stream needs changed". Registry changes reach clients as soon as
the registry reports them (the SQLite backend polls every 50 ms). A client that goes away
only ends its own stream; its watches stop when no other stream needs them.
"""

from __future__ import annotations

import asyncio
import collections
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from types import TracebackType
from typing import Any

import grpc

from grpcmesh.config.models import SecurityConfig
from grpcmesh.errors import ConfigError
from grpcmesh.registry import Registry, open_registry
from grpcmesh.security.tls import server_credentials
from grpcmesh.xds.bootstrap import DEFAULT_NODE_ID, bootstrap_json
from grpcmesh.xds.policy import XdsPolicies
from grpcmesh.xds.protos import ADS_SERVICE, discovery_request
from grpcmesh.xds.session import AdsSession, TooManyNamesError, printable
from grpcmesh.xds.watches import RegistryWatches

log = logging.getLogger("grpcmesh.xds")

_CHANGED = object()
_ENDED = object()


def client_address(peer: str) -> str:
    """The client's host from a gRPC peer string (``ipv4:10.0.0.7:5123`` -> ``ipv4:10.0.0.7``)."""
    if peer.startswith(("ipv4:", "ipv6:")):
        return peer.rsplit(":", 1)[0]
    return peer


class AggregatedDiscoveryServicer:
    """State-of-the-world ADS over the registry; incremental (delta) ADS is not offered.

    Per stream, at most ``limits.max_queued_requests`` requests are read ahead (the client
    then waits: HTTP/2 flow control), and pending endpoint changes collapse into one set of
    service names, so a client that never reads cannot make the server buffer without end.
    """

    def __init__(self, watches: RegistryWatches, policies: XdsPolicies | None = None) -> None:
        self._watches = watches
        self._policies = policies or XdsPolicies()
        self.active_streams = 0
        self.total_streams = 0
        self.sessions: set[AdsSession] = set()
        self.streams_by_client: collections.Counter[str] = collections.Counter()

    def handler(self) -> grpc.GenericRpcHandler[Any, Any]:
        """The ``AggregatedDiscoveryService`` handler to add to a ``grpc.aio`` server."""
        method = grpc.stream_stream_rpc_method_handler(
            self.StreamAggregatedResources,
            request_deserializer=discovery_request().FromString,
            response_serializer=lambda response: response.SerializeToString(),
        )
        return grpc.method_handlers_generic_handler(ADS_SERVICE, {"StreamAggregatedResources": method})

    async def StreamAggregatedResources(
        self,
        request_iterator: AsyncIterator[Any],
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> AsyncIterator[Any]:
        limits = self._policies.limits
        client = client_address(context.peer())
        if self.streams_by_client[client] >= limits.max_streams_per_client:
            log.warning(
                "xDS: refused a stream from %s: it has %d open", printable(client), limits.max_streams_per_client
            )
            await context.abort(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"at most {limits.max_streams_per_client} concurrent ADS streams per client "
                "(limits.max_streams_per_client); close unused channels",
            )
        session = AdsSession(self._watches, peer=context.peer(), policies=self._policies)
        events: asyncio.Queue[object] = asyncio.Queue()
        slots = asyncio.Semaphore(limits.max_queued_requests)
        changed: set[str] = set()

        def on_change(service: str) -> None:
            if not changed:
                events.put_nowait(_CHANGED)
            changed.add(service)

        async def read_requests() -> None:
            try:
                async for request in request_iterator:
                    await slots.acquire()
                    events.put_nowait(request)
            finally:
                events.put_nowait(_ENDED)

        reader = asyncio.get_running_loop().create_task(read_requests())
        watched: set[str] = set()
        self.active_streams += 1
        self.total_streams += 1
        self.streams_by_client[client] += 1
        self.sessions.add(session)
        try:
            while True:
                event = await events.get()
                if event is _ENDED:
                    break
                if event is _CHANGED:
                    services = set(changed)
                    changed.clear()
                    responses = session.refresh(services)
                else:
                    slots.release()
                    subscription = session.subscription_changes
                    try:
                        responses = session.handle(event)
                    except TooManyNamesError as exc:
                        log.warning("xDS: ended the stream of %s: %s", session.client, exc)
                        await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, str(exc))
                    if session.subscription_changes != subscription:
                        watched = self._sync_watches(session, watched, on_change)
                for response in responses:
                    yield response
        finally:
            self.active_streams -= 1
            self.streams_by_client[client] -= 1
            if self.streams_by_client[client] <= 0:
                del self.streams_by_client[client]
            self.sessions.discard(session)
            for service in watched:
                self._watches.unsubscribe(service, on_change)
            reader.cancel()
            try:
                await reader
            except (asyncio.CancelledError, Exception) as exc:  # the stream is over either way
                log.debug("xDS: request reader of %s ended with %r", session.client, exc)
            log.info("xDS: stream from %s ended", session.client)

    def _sync_watches(self, session: AdsSession, watched: set[str], on_change: Callable[[str], None]) -> set[str]:
        wanted = session.services()
        for service in watched - wanted:
            self._watches.unsubscribe(service, on_change)
        for service in wanted - watched:
            self._watches.subscribe(service, on_change)
        return wanted


class XdsServer:
    """An xDS control plane serving a registry on ``host:port`` (port 0 picks a free one).

    Give it a registry URL (the server opens and closes the registry) or an open
    ``Registry`` (the caller keeps ownership). ``policies`` adds per-service policies and
    client limits; ``security`` with ``tls_enabled`` serves ADS over TLS (mTLS when
    ``client_auth`` is set: clients must present a certificate signed by ``ca_file``).
    """

    def __init__(
        self,
        registry: Registry | str,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        policies: XdsPolicies | None = None,
        security: SecurityConfig | None = None,
    ) -> None:
        self._registry_arg = registry
        self.policies = policies or XdsPolicies()
        self.security = security if security is not None and security.tls_enabled else None
        self.host = host
        self._requested_port = port
        self._registry: Registry | None = None
        self._server: grpc.aio.Server | None = None
        self._watches: RegistryWatches | None = None
        self.servicer: AggregatedDiscoveryServicer | None = None
        self.port = 0

    @property
    def watches(self) -> RegistryWatches | None:
        """The shared registry watches (None until started)."""
        return self._watches

    @property
    def address(self) -> str:
        """``host:port`` as a client's bootstrap names it."""
        return _host_port(self.host, self.port)

    def bootstrap_json(self, node_id: str = DEFAULT_NODE_ID) -> str:
        """The bootstrap a gRPC client needs to use this control plane."""
        return bootstrap_json(self.address, node_id=node_id, security=self.security)

    async def start(self) -> int:
        """Open the registry, bind and start serving; returns the bound port."""
        if self._server is not None:
            return self.port
        registry = self._registry_arg
        self._registry = open_registry(registry) if isinstance(registry, str) else registry
        self._watches = RegistryWatches(self._registry, self.policies)
        self.servicer = AggregatedDiscoveryServicer(self._watches, self.policies)
        server = grpc.aio.server()
        server.add_generic_rpc_handlers((self.servicer.handler(),))
        try:
            address = _host_port(self.host, self._requested_port)
            if self.security is None:
                self.port = server.add_insecure_port(address)
            else:
                self.port = server.add_secure_port(address, _credentials(self.security))
            await server.start()
        except BaseException:
            await self._close_registry()
            raise
        self._server = server
        log.info("xDS control plane serving on %s", self.address)
        return self.port

    async def stop(self, grace: float | None = 1.0) -> None:
        """End every stream, stop the watches, close the registry if we opened it."""
        server, self._server = self._server, None
        if server is not None:
            await server.stop(grace)
        if self._watches is not None:
            await self._watches.close()
            self._watches = None
        await self._close_registry()

    async def wait_for_termination(self) -> None:
        if self._server is not None:
            await self._server.wait_for_termination()

    async def _close_registry(self) -> None:
        registry, self._registry = self._registry, None
        if registry is not None and isinstance(self._registry_arg, str):
            await registry.close()

    async def __aenter__(self) -> XdsServer:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()


def _credentials(security: SecurityConfig) -> grpc.ServerCredentials:
    if security.cert_file is None or security.key_file is None:
        raise ConfigError("security.cert_file/key_file: serving xDS over TLS needs the server certificate and key")
    return server_credentials(security.cert_file, security.key_file, security.ca_file if security.client_auth else None)


def _host_port(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


async def serve_xds(
    registry_url: str,
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    on_ready: Callable[[XdsServer], Awaitable[None] | None] | None = None,
    policies: XdsPolicies | None = None,
    security: SecurityConfig | None = None,
) -> None:
    """Run an xDS control plane for ``registry_url`` until cancelled.

    ``on_ready`` is called once the server is bound (e.g. to print its address).
    """
    server = XdsServer(registry_url, host, port, policies=policies, security=security)
    await server.start()
    try:
        if on_ready is not None:
            result = on_ready(server)
            if result is not None:
                await result
        await server.wait_for_termination()
    finally:
        await server.stop()
