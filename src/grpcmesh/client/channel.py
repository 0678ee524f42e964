"""``MeshChannel``: a ``grpc.aio.Channel`` for a *service name*, which generated stubs use unchanged.

Python's grpcio cannot plug in a custom resolver or load-balancing policy, so the channel
does that work itself on top of plain ``grpc.aio`` channels: it follows the registry through
an :class:`~grpcmesh.discovery.EndpointWatcher`, keeps one sub-channel per endpoint (opened
and drained as endpoints come and go), and asks a :class:`~grpcmesh.discovery.Balancer` for
an endpoint on every call. What is retried where is described in :mod:`grpcmesh.client.calls`.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING, Any

import grpc

from grpcmesh._rpc import RpcType
from grpcmesh.client._host import CallHost
from grpcmesh.client.calls import (
    CallObserver,
    MeshStreamStreamCall,
    MeshStreamUnaryCall,
    MeshUnaryStreamCall,
    MethodSpec,
    _MeshCall,
)
from grpcmesh.client.outlier import OutlierPolicy
from grpcmesh.client.settings import CallSettings, normalize_methods
from grpcmesh.client.subchannel import EndpointStats, SubChannel
from grpcmesh.client.unary_call import MeshUnaryUnaryCall
from grpcmesh.discovery.balancers import make_balancer
from grpcmesh.discovery.endpoints import Endpoint, EndpointFilter, EndpointWatcher
from grpcmesh.errors import ChannelClosedError, ConfigError
from grpcmesh.registry.base import Registry

if TYPE_CHECKING:
    from grpcmesh.config import SecurityConfig

log = logging.getLogger("grpcmesh.client")

DEFAULT_HASH_KEY = "x-mesh-hash-key"
DEFAULT_ENDPOINT_WAIT = 5.0
DEFAULT_DRAIN_GRACE = 30.0
DEFAULT_CONNECT_TIMEOUT = 2.0

ChannelOptions = Sequence[tuple[str, Any]]


@dataclass(frozen=True)
class ChannelStats:
    """A snapshot of a channel's state, for metrics and dashboards."""

    service: str
    filter: str
    policy: str
    endpoints: int
    ejected: int
    ejections_total: int
    retries_total: int
    no_endpoint_errors: int
    draining: int
    per_endpoint: tuple[EndpointStats, ...]
    watch_errors: int = 0
    throttled: int = 0
    """Calls rejected locally by adaptive throttling."""
    retries_denied: int = 0
    """Retries of ``retry_methods`` the retry budget refused."""


class MeshChannel(grpc.aio.Channel):
    """A channel to every matching instance of ``service``, balanced per call.

    Its public surface is ``grpc.aio.Channel`` plus :meth:`stats` and :attr:`endpoints`; the
    endpoint set and what calls ask of it live in a private :class:`~grpcmesh.client._host.CallHost`.
    ``observer`` runs the mesh's own client concerns once per call, outside ``interceptors``
    (the user's grpc.aio client interceptors, which run on every attempt's sub-channel).
    ``settings`` are the dependency's call semantics (default timeouts, wait-for-ready,
    outlier detection, throttling, retry budget, keepalive, context propagation);
    ``retry_methods`` and ``outlier``, when given, replace the corresponding settings.
    ``security`` is the ``security:`` section ``credentials`` were built from: with it, a call
    whose TLS handshake was refused says the likely cause in its error details instead of
    gRPC's bare "Socket closed" (``Mesh`` passes it when TLS is on).
    """

    def __init__(
        self,
        registry: Registry,
        service: str,
        *,
        version: str | None = None,
        metadata_match: Mapping[str, str] | None = None,
        policy: str = "round_robin",
        policy_options: Mapping[str, Any] | None = None,
        interceptors: Sequence[Any] = (),
        credentials: grpc.ChannelCredentials | None = None,
        options: ChannelOptions = (),
        endpoint_wait: float = DEFAULT_ENDPOINT_WAIT,
        retry_methods: Collection[str] = (),
        hash_key: str = DEFAULT_HASH_KEY,
        outlier: OutlierPolicy | None = None,
        drain_grace: float = DEFAULT_DRAIN_GRACE,
        connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
        observer: CallObserver | None = None,
        settings: CallSettings | None = None,
        security: SecurityConfig | None = None,
    ) -> None:
        if endpoint_wait < 0:
            raise ConfigError(f"endpoint_wait: {endpoint_wait!r} must be >= 0 seconds")
        if drain_grace < 0:
            raise ConfigError(f"drain_grace: {drain_grace!r} must be >= 0 seconds")
        self.filter = EndpointFilter.of(version, metadata_match)
        self.watcher = EndpointWatcher(registry, service, self.filter)
        self.service = self.watcher.service
        self.policy = policy
        self._interceptors = tuple(interceptors)
        self._credentials = credentials
        settings = settings or CallSettings()
        try:
            settings = dataclasses.replace(
                settings,
                retry_methods=normalize_methods(retry_methods) if retry_methods else settings.retry_methods,
                outlier=outlier or settings.outlier,
            )
        except ConfigError as exc:
            raise ConfigError(f"retry_methods: {exc}") from None
        keepalive = settings.keepalive.channel_options() if settings.keepalive is not None else ()
        self._options = (*keepalive, *tuple(options))  # the caller's options come last and win
        self._host = CallHost(
            self.watcher,
            self.filter,
            make_balancer(policy, **dict(policy_options or {})),
            self._open,
            endpoint_wait=endpoint_wait,
            settings=settings,
            hash_key=hash_key.lower(),
            drain_grace=drain_grace,
            connect_timeout=connect_timeout,
            observer=observer,
            security=security,
            reuse_metadata=not self._interceptors,
        )
        self.watcher.add_listener(self._host.on_endpoints)
        with contextlib.suppress(RuntimeError):  # no running loop yet: start on first use
            asyncio.get_running_loop()
            self.watcher.start()

    def _open(self, endpoint: Endpoint) -> SubChannel:
        """A real grpc.aio channel to one endpoint, carrying the user's client interceptors."""
        interceptors = list(self._interceptors) or None
        if self._credentials is None:
            channel = grpc.aio.insecure_channel(endpoint.target, options=self._options, interceptors=interceptors)
        else:
            channel = grpc.aio.secure_channel(
                endpoint.target, self._credentials, options=self._options, interceptors=interceptors
            )
        return SubChannel(endpoint, channel)

    # -- multicallables -------------------------------------------------------------------

    def unary_unary(
        self,
        method: str,
        request_serializer: Any = None,
        response_deserializer: Any = None,
        _registered_method: bool = False,
    ) -> grpc.aio.UnaryUnaryMultiCallable:  # type: ignore[type-arg]
        return _UnaryUnary(
            self._host, MethodSpec(RpcType.UNARY, method, request_serializer, response_deserializer, _registered_method)
        )

    def unary_stream(
        self,
        method: str,
        request_serializer: Any = None,
        response_deserializer: Any = None,
        _registered_method: bool = False,
    ) -> grpc.aio.UnaryStreamMultiCallable:  # type: ignore[type-arg]
        return _UnaryStream(
            self._host,
            MethodSpec(RpcType.SERVER_STREAM, method, request_serializer, response_deserializer, _registered_method),
        )

    def stream_unary(
        self,
        method: str,
        request_serializer: Any = None,
        response_deserializer: Any = None,
        _registered_method: bool = False,
    ) -> grpc.aio.StreamUnaryMultiCallable:  # type: ignore[type-arg]
        return _StreamUnary(
            self._host,
            MethodSpec(RpcType.CLIENT_STREAM, method, request_serializer, response_deserializer, _registered_method),
        )

    def stream_stream(
        self,
        method: str,
        request_serializer: Any = None,
        response_deserializer: Any = None,
        _registered_method: bool = False,
    ) -> grpc.aio.StreamStreamMultiCallable:  # type: ignore[type-arg]
        return _StreamStream(
            self._host,
            MethodSpec(RpcType.BIDI_STREAM, method, request_serializer, response_deserializer, _registered_method),
        )

    # -- channel surface ------------------------------------------------------------------

    def get_state(self, try_to_connect: bool = False) -> grpc.ChannelConnectivity:
        """The best state among sub-channels (READY if any is), SHUTDOWN once closed."""
        if self._host.closed:
            return grpc.ChannelConnectivity.SHUTDOWN
        states = {s.channel.get_state(try_to_connect) for s in self._host.subs.values()}
        for state in (
            grpc.ChannelConnectivity.READY,
            grpc.ChannelConnectivity.CONNECTING,
            grpc.ChannelConnectivity.IDLE,
            grpc.ChannelConnectivity.TRANSIENT_FAILURE,
        ):
            if state in states:
                return state
        return grpc.ChannelConnectivity.CONNECTING if not self.watcher.synced else grpc.ChannelConnectivity.IDLE

    async def wait_for_state_change(self, last_observed_state: grpc.ChannelConnectivity) -> None:
        self.watcher.start()
        while self.get_state() == last_observed_state and not self._host.closed:
            waiters = [asyncio.ensure_future(self.watcher.wait_changed(self.watcher.version))]
            waiters += [
                asyncio.ensure_future(s.channel.wait_for_state_change(s.channel.get_state()))
                for s in self._host.subs.values()
            ]
            try:
                await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for waiter in waiters:
                    waiter.cancel()

    async def channel_ready(self) -> None:
        """Wait until some endpoint is known and its sub-channel connected."""
        self.watcher.start()
        while True:
            if self._host.closed:
                raise ChannelClosedError("MeshChannel is closed")
            changed = asyncio.ensure_future(self.watcher.wait_changed(self.watcher.version))
            readies = [asyncio.ensure_future(s.channel.channel_ready()) for s in self._host.subs.values()]
            try:
                done, _ = await asyncio.wait([changed, *readies], return_when=asyncio.FIRST_COMPLETED)
            finally:
                for waiter in (changed, *readies):
                    waiter.cancel()
            if any(r in done and not r.cancelled() and r.exception() is None for r in readies):
                return

    async def close(self, grace: float | None = None) -> None:
        """Close every sub-channel (waiting up to ``grace`` for running calls) and stop watching."""
        if self._host.closed:
            return
        self._host.closed = True
        await self.watcher.close()
        subs = self._host.take_all()
        await asyncio.gather(*(s.close(grace) for s in subs), return_exceptions=True)

    async def __aenter__(self) -> MeshChannel:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc_val: BaseException | None, exc_tb: TracebackType | None
    ) -> None:
        await self.close()

    # -- introspection --------------------------------------------------------------------

    @property
    def endpoints(self) -> tuple[Endpoint, ...]:
        return tuple(s.endpoint for s in self._host.subs.values())

    def stats(self) -> ChannelStats:
        now = time.monotonic()
        host = self._host
        subs = list(host.subs.values())
        return ChannelStats(
            service=self.service,
            filter=self.filter.describe(),
            policy=self.policy,
            endpoints=len(subs),
            ejected=sum(1 for s in subs if s.is_ejected(now)),
            ejections_total=host.ejections_total(),
            retries_total=host.retries,
            no_endpoint_errors=host.no_endpoint_errors,
            draining=len(host.draining),
            per_endpoint=tuple(s.stats(now) for s in subs),
            watch_errors=self.watcher.watch_errors,
            throttled=host.throttle.rejected,
            retries_denied=host.budget.denied,
        )

    def __repr__(self) -> str:
        return (
            f"<MeshChannel {self.service} ({self.filter.describe()}) policy={self.policy} "
            f"endpoints={len(self._host.subs)}>"
        )


_CALL_CLASSES: dict[RpcType, type[_MeshCall]] = {
    RpcType.UNARY: MeshUnaryUnaryCall,
    RpcType.SERVER_STREAM: MeshUnaryStreamCall,
    RpcType.CLIENT_STREAM: MeshStreamUnaryCall,
    RpcType.BIDI_STREAM: MeshStreamStreamCall,
}


class _MultiCallable:
    """Makes the call object of its method's kind; the call engine does the rest."""

    def __init__(self, host: CallHost, spec: MethodSpec) -> None:
        self._host = host
        self._spec = spec
        self._call_class = _CALL_CLASSES[spec.kind]
        self._default_timeout = host.settings.default_timeout(spec.method)  # settings are fixed per channel

    def __call__(
        self,
        request: Any = None,
        timeout: float | None = None,
        metadata: Any = None,
        credentials: grpc.CallCredentials | None = None,
        wait_for_ready: bool | None = None,
        compression: grpc.Compression | None = None,
    ) -> Any:
        options = self._host.call_options(
            self._spec, timeout, metadata, credentials, wait_for_ready, compression, self._default_timeout
        )
        return self._call_class(self._host, self._spec, options, request)


class _UnaryUnary(_MultiCallable, grpc.aio.UnaryUnaryMultiCallable):  # type: ignore[type-arg]
    pass


class _UnaryStream(_MultiCallable, grpc.aio.UnaryStreamMultiCallable):  # type: ignore[type-arg]
    pass


class _StreamUnary(_MultiCallable, grpc.aio.StreamUnaryMultiCallable):  # type: ignore[type-arg]
    pass


class _StreamStream(_MultiCallable, grpc.aio.StreamStreamMultiCallable):  # type: ignore[type-arg]
    pass
