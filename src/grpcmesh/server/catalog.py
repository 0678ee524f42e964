"""A ``grpc.aio.Server`` that remembers which services and methods were added to it.

Users add servicers exactly as with plain grpc (``add_XServicer_to_server(servicer,
server.grpc)``); the generated code calls ``add_generic_rpc_handlers`` and
``add_registered_method_handlers``, which this subclass records. That is how the runtime
knows, without asking the user, which services to enable reflection and health for and
which endpoints to register.

grpc.aio does not expose its handlers, so this subclasses the concrete server class
(constructed exactly as ``grpc.aio.server()`` does).
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import Executor
from typing import Any

import grpc
from grpc.aio import _server as _aio_server


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
        """Bare method names of ``services`` (default: all), each once: the seed's ``Endpoints``."""
        seen: list[str] = []
        for service in self._services if services is None else services:
            seen.extend(method for method in self.methods(service) if method not in seen)
        return seen


class RecordingServer(_aio_server.Server):
    """``grpc.aio.Server`` that fills a :class:`ServiceCatalog` as handlers are added."""

    def __init__(
        self,
        *,
        interceptors: Sequence[grpc.aio.ServerInterceptor[Any, Any]] = (),
        options: Sequence[tuple[str, Any]] = (),
        maximum_concurrent_rpcs: int | None = None,
        migration_thread_pool: Executor | None = None,
    ) -> None:
        # grpc enables SO_REUSEPORT by default, letting a second server silently share a busy
        # port; a registered service must own its port, so it is off unless asked for.
        merged = (("grpc.so_reuseport", 0), *options)
        super().__init__(migration_thread_pool, (), tuple(interceptors), merged, maximum_concurrent_rpcs, None)
        self.catalog = ServiceCatalog()

    def add_generic_rpc_handlers(self, generic_rpc_handlers: Sequence[grpc.GenericRpcHandler[Any, Any]]) -> None:
        for handler in generic_rpc_handlers:
            service_name = getattr(handler, "service_name", None)
            if callable(service_name):
                name = str(service_name())
                paths = getattr(handler, "_method_handlers", {})
                self.catalog.add(name, [str(path).rsplit("/", 1)[-1] for path in paths])
        super().add_generic_rpc_handlers(generic_rpc_handlers)

    def add_registered_method_handlers(self, service_name: str, method_handlers: dict[str, Any]) -> None:
        self.catalog.add(service_name, list(method_handlers))
        super().add_registered_method_handlers(service_name, method_handlers)
