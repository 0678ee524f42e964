r"""The ``grpc.aio.Server`` a ``MeshServer`` hands out: it records services and wraps each method once.

Users add servicers exactly as with plain grpc (``add_XServicer_to_server(servicer,
server.grpc)``); the generated code calls ``add_generic_rpc_handlers`` and
``add_registered_method_handlers``. :class:`MeshGrpcServer` implements the public
``grpc.aio.Server`` interface around a server made by ``grpc.aio.server(...)`` and, in those
two methods:

* records the service (``service_name()`` of generic handlers, the method names of registered
  ones) in a :class:`ServiceCatalog`, which is how the runtime knows which services to enable
  reflection and health for and which endpoints to register;
* wraps every handler with the mesh's :class:`~grpcmesh.middleware.server_side.ServerPipeline`,
  built once per method, so the mesh's server concerns cost no grpc.aio interceptor;
* serves every registered method from one generic handler, a dict by full method name that
  grpc asks first. grpc.aio (1.85) keeps one pending request per registered service plus one
  for generic handlers, and waits on all of them with ``asyncio.wait`` for every call: with health,
  reflection and a user service registered, that cost each call about 44k instructions
  (benchmarks/instructions_per_call.py), more than all four mesh concerns. A registered handler
  still wins over generic ones for its method, as grpc documents.

Only public grpcio API is used (no private server class, no ``_method_handlers``).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

import grpc

from grpcmesh.middleware.behavior import HandlerCache
from grpcmesh.middleware.server_side import ServerPipeline

if TYPE_CHECKING:  # grpc's classes are generic only in the type stubs
    GenericHandler = grpc.GenericRpcHandler[Any, Any]
    _GenericBase = grpc.GenericRpcHandler[Any, Any]
else:
    GenericHandler = grpc.GenericRpcHandler
    _GenericBase = grpc.GenericRpcHandler


class ServiceCatalog:
    """Service name -> its method names, in the order they were added."""

    def __init__(self) -> None:
        self._services: dict[str, list[str]] = {}

    def add(self, service: str, methods: Sequence[str]) -> None:
        known = self._services.setdefault(service, [])
        known.extend(method for method in methods if method not in known)

    @property
    def services(self) -> list[str]:
        return list(self._services)

    def methods(self, service: str) -> list[str]:
        return list(self._services.get(service, ()))

    def endpoints(self, services: Sequence[str] | None = None) -> list[str]:
        """Bare method names of ``services`` (default: all), each once: the registered instance's endpoints."""
        seen: list[str] = []
        for service in self._services if services is None else services:
            seen.extend(method for method in self.methods(service) if method not in seen)
        return seen


class _PipelinedGenericHandler(_GenericBase):
    """A generic handler whose handlers come out wrapped by the pipeline (built once per method)."""

    def __init__(self, inner: GenericHandler, pipeline: ServerPipeline) -> None:
        self._inner = inner
        self._pipeline = pipeline
        self._handlers = HandlerCache()

    def service(self, handler_call_details: grpc.HandlerCallDetails) -> Any:
        handler = self._inner.service(handler_call_details)
        if handler is None:
            return None
        method = handler_call_details.method
        return self._handlers.get(method, handler, lambda: self._pipeline.wrap(handler, method))

    def service_name(self) -> str | None:
        name = getattr(self._inner, "service_name", None)
        return str(name()) if callable(name) else None


class _MethodTable(_GenericBase):
    """Registered methods' (wrapped) handlers by full method name: the server's first generic handler,
    so a registered method is found with one dict lookup and other methods fall through."""

    def __init__(self) -> None:
        self.handlers: dict[str, Any] = {}

    def service(self, handler_call_details: grpc.HandlerCallDetails) -> Any:
        return self.handlers.get(handler_call_details.method)


class MeshGrpcServer(grpc.aio.Server):
    """A ``grpc.aio.Server`` (from ``grpc.aio.server(...)``) that fills a catalog and wraps handlers."""

    def __init__(self, server: grpc.aio.Server, pipeline: ServerPipeline) -> None:
        self.server = server
        """The plain grpc.aio server underneath."""
        self.pipeline = pipeline
        self.catalog = ServiceCatalog()
        self._table = _MethodTable()
        server.add_generic_rpc_handlers((self._table,))

    def add_generic_rpc_handlers(self, generic_rpc_handlers: Iterable[GenericHandler]) -> None:
        handlers = []
        for handler in generic_rpc_handlers:
            service_name = getattr(handler, "service_name", None)
            if callable(service_name):
                name = service_name()
                if name:
                    self.catalog.add(str(name), [])
            handlers.append(_PipelinedGenericHandler(handler, self.pipeline) if self.pipeline else handler)
        self.server.add_generic_rpc_handlers(handlers)

    def add_registered_method_handlers(self, service_name: str, method_handlers: dict[str, Any]) -> None:
        self.catalog.add(service_name, list(method_handlers))
        if self.pipeline:
            method_handlers = {
                name: self.pipeline.wrap(handler, f"/{service_name}/{name}")
                for name, handler in method_handlers.items()
            }
        for name, handler in method_handlers.items():  # the first servicer added for a method keeps it
            self._table.handlers.setdefault(f"/{service_name}/{name}", handler)

    def add_insecure_port(self, address: str) -> int:
        return self.server.add_insecure_port(address)

    def add_secure_port(self, address: str, server_credentials: grpc.ServerCredentials) -> int:
        return self.server.add_secure_port(address, server_credentials)

    async def start(self) -> None:
        await self.server.start()

    async def stop(self, grace: float | None = None) -> None:
        await self.server.stop(grace)

    async def wait_for_termination(self, timeout: float | None = None) -> bool:
        return await self.server.wait_for_termination(timeout)
