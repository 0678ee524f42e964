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
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from types import TracebackType
from typing import Any

import grpc
from envoy.service.discovery.v3 import ads_pb2_grpc

from grpcmesh.registry import Registry, open_registry
from grpcmesh.xds.bootstrap import DEFAULT_NODE_ID, bootstrap_json
from grpcmesh.xds.session import AdsSession
from grpcmesh.xds.watches import RegistryWatches

log = logging.getLogger("grpcmesh.xds")

_CHANGED = object()
_ENDED = object()


class AggregatedDiscoveryServicer(ads_pb2_grpc.AggregatedDiscoveryServiceServicer):  # type: ignore[misc]
    """State-of-the-world ADS over the registry; incremental (delta) ADS is not offered."""

    def __init__(self, watches: RegistryWatches) -> None:
        self._watches = watches
        self.active_streams = 0
        self.total_streams = 0
        self.sessions: set[AdsSession] = set()

    async def StreamAggregatedResources(
        self,
        request_iterator: AsyncIterator[Any],
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> AsyncIterator[Any]:
        session = AdsSession(self._watches, peer=context.peer())
        events: asyncio.Queue[object] = asyncio.Queue()
        pending = False

        def on_change(_service: str) -> None:
            nonlocal pending
            if not pending:
                pending = True
                events.put_nowait(_CHANGED)

        async def read_requests() -> None:
            try:
                async for request in request_iterator:
                    events.put_nowait(request)
            finally:
                events.put_nowait(_ENDED)

        reader = asyncio.get_running_loop().create_task(read_requests())
        watched: set[str] = set()
        self.active_streams += 1
        self.total_streams += 1
        self.sessions.add(session)
        try:
            while True:
                event = await events.get()
                if event is _ENDED:
                    break
                if event is _CHANGED:
                    pending = False
                    responses = session.refresh()
                else:
                    responses = session.handle(event)
                    watched = self._sync_watches(session, watched, on_change)
                for response in responses:
                    yield response
        finally:
            self.active_streams -= 1
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
    ``Registry`` (the caller keeps ownership).
    """

    def __init__(self, registry: Registry | str, host: str = "127.0.0.1", port: int = 0) -> None:
        self._registry_arg = registry
        self.host = host
        self._requested_port = port
        self._registry: Registry | None = None
        self._server: grpc.aio.Server | None = None
        self._watches: RegistryWatches | None = None
        self.servicer: AggregatedDiscoveryServicer | None = None
        self.port = 0

    @property
    def address(self) -> str:
        """``host:port`` as a client's bootstrap names it."""
        return _host_port(self.host, self.port)

    def bootstrap_json(self, node_id: str = DEFAULT_NODE_ID) -> str:
        """The bootstrap a gRPC client needs to use this control plane."""
        return bootstrap_json(self.address, node_id=node_id)

    async def start(self) -> int:
        """Open the registry, bind and start serving; returns the bound port."""
        if self._server is not None:
            return self.port
        registry = self._registry_arg
        self._registry = open_registry(registry) if isinstance(registry, str) else registry
        self._watches = RegistryWatches(self._registry)
        self.servicer = AggregatedDiscoveryServicer(self._watches)
        server = grpc.aio.server()
        ads_pb2_grpc.add_AggregatedDiscoveryServiceServicer_to_server(self.servicer, server)
        try:
            self.port = server.add_insecure_port(_host_port(self.host, self._requested_port))
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


def _host_port(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


async def serve_xds(
    registry_url: str,
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    on_ready: Callable[[XdsServer], Awaitable[None] | None] | None = None,
) -> None:
    """Run an xDS control plane for ``registry_url`` until cancelled.

    ``on_ready`` is called once the server is bound (e.g. to print its address).
    """
    server = XdsServer(registry_url, host, port)
    await server.start()
    try:
        if on_ready is not None:
            result = on_ready(server)
            if result is not None:
                await result
        await server.wait_for_termination()
    finally:
        await server.stop()
