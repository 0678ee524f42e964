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
import logging
import time
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import grpc

from grpcmesh.client.calls import (
    STREAM_STREAM,
    STREAM_UNARY,
    UNARY_STREAM,
    UNARY_UNARY,
    CallOptions,
    MeshStreamStreamCall,
    MeshStreamUnaryCall,
    MeshUnaryStreamCall,
    MeshUnaryUnaryCall,
    MethodSpec,
)
from grpcmesh.client.errors import NoEndpointsRpcError, is_not_sent, is_transport_failure
from grpcmesh.client.subchannel import EndpointStats, OutlierPolicy, SubChannel
from grpcmesh.discovery.balancers import Balancer, make_balancer
from grpcmesh.discovery.endpoints import Endpoint, EndpointFilter, EndpointWatcher
from grpcmesh.errors import ChannelClosedError, ConfigError
from grpcmesh.registry.base import Registry

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


def _normalize_method(method: str) -> str:
    if not isinstance(method, str) or "/" not in method.strip("/"):
        raise ConfigError(f"retry_methods: {method!r} must be a full method name such as '/pkg.Service/Method'")
    return "/" + method.strip("/")


class MeshChannel(grpc.aio.Channel):
    """A channel to every matching instance of ``service``, balanced per call."""

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
    ) -> None:
        if endpoint_wait < 0:
            raise ConfigError(f"endpoint_wait: {endpoint_wait!r} must be >= 0 seconds")
        if drain_grace < 0:
            raise ConfigError(f"drain_grace: {drain_grace!r} must be >= 0 seconds")
        self.filter = EndpointFilter.of(version, metadata_match)
        self.watcher = EndpointWatcher(registry, service, self.filter)
        self.service = self.watcher.service
        self.policy = policy
        self._balancer: Balancer = make_balancer(policy, **dict(policy_options or {}))
        self._interceptors = tuple(interceptors)
        self._credentials = credentials
        self._options = tuple(options)
        self._endpoint_wait = endpoint_wait
        self._retry_methods = frozenset(_normalize_method(m) for m in retry_methods)
        self._hash_key = hash_key.lower()
        self._outlier = outlier or OutlierPolicy()
        self._drain_grace = drain_grace
        self._connect_timeout = connect_timeout
        self._subs: dict[str, SubChannel] = {}
        self._draining: set[SubChannel] = set()
        self._next_unejection = float("inf")
        self._closed = False
        self._retries = 0
        self._no_endpoint_errors = 0
        self.watcher.add_listener(self._on_endpoints)
        with contextlib.suppress(RuntimeError):  # no running loop yet: start on first use
            asyncio.get_running_loop()
            self.watcher.start()

    # -- endpoint set -----------------------------------------------------------------

    def _open(self, endpoint: Endpoint) -> SubChannel:
        interceptors = list(self._interceptors) or None
        if self._credentials is None:
            channel = grpc.aio.insecure_channel(endpoint.target, options=self._options, interceptors=interceptors)
        else:
            channel = grpc.aio.secure_channel(
                endpoint.target, self._credentials, options=self._options, interceptors=interceptors
            )
        return SubChannel(endpoint, channel)

    def _on_endpoints(self, endpoints: tuple[Endpoint, ...]) -> None:
        if self._closed:
            return
        wanted = {e.id: e for e in endpoints}
        for endpoint_id, sub in list(self._subs.items()):
            new = wanted.get(endpoint_id)
            if new is None or new.target != sub.endpoint.target:
                del self._subs[endpoint_id]
                self._retire(sub)
        for endpoint in endpoints:
            existing = self._subs.get(endpoint.id)
            if existing is None:
                self._subs[endpoint.id] = self._open(endpoint)
            else:
                existing.endpoint = endpoint
        log.info("%s now has %d endpoint(s) (%s)", self.service, len(self._subs), self.filter.describe())
        self._rebalance()

    def _retire(self, sub: SubChannel) -> None:
        """Stop picking ``sub``; close it after its running calls end (never cancel them early)."""
        self._draining.add(sub)
        sub.drain(self._drain_grace)
        task = sub._close_task
        if task is not None:
            task.add_done_callback(lambda _: self._draining.discard(sub))

    def _rebalance(self) -> None:
        now = time.monotonic()
        subs = list(self._subs.values())
        active = [s.endpoint for s in subs if not s.is_ejected(now)]
        if not active:  # panic mode: every endpoint is ejected; better to try them than fail
            active = [s.endpoint for s in subs]
        self._balancer.update(active)
        self._next_unejection = min((s.ejected_until for s in subs if s.is_ejected(now)), default=float("inf"))

    # -- CallHost (used by the call objects) -----------------------------------------------

    def _pick(self, request_key: str | None, exclude: set[str]) -> SubChannel | None:
        if time.monotonic() >= self._next_unejection:
            self._rebalance()
        endpoint = self._balancer.pick(request_key, exclude)
        if endpoint is None and exclude:
            # The balancer only knows non-ejected endpoints; a retry may still use an ejected one.
            endpoint = next((s.endpoint for s in self._subs.values() if s.id not in exclude), None)
        return None if endpoint is None else self._subs.get(endpoint.id)

    async def acquire(
        self, request_key: str | None, exclude: set[str], deadline: float | None, wait_for_ready: bool
    ) -> SubChannel | None:
        if self._closed:
            raise ChannelClosedError("MeshChannel is closed")
        self.watcher.start()
        sub = self._pick(request_key, exclude)
        if sub is not None or exclude:
            return sub
        loop = asyncio.get_running_loop()
        wait = None if wait_for_ready else self._endpoint_wait
        remaining = None if deadline is None else deadline - loop.time()
        limit = remaining if wait is None else (wait if remaining is None else min(wait, remaining))
        await self.watcher.wait_for_endpoints(limit)
        sub = self._pick(request_key, exclude)
        if sub is not None:
            return sub
        self._no_endpoint_errors += 1
        raise self._no_endpoints_error(limit, deadline_hit=remaining is not None and limit == remaining)

    def pick_now(self, request_key: str | None) -> SubChannel | None:
        """``acquire``'s common case without a coroutine: an endpoint if one can be picked now.

        ``None`` means the caller must ``await acquire(...)`` (no endpoint yet, so it waits).
        """
        if self._closed:
            raise ChannelClosedError("MeshChannel is closed")
        self.watcher.start()
        return self._pick(request_key, set())

    def _no_endpoints_error(self, waited: float | None, deadline_hit: bool) -> NoEndpointsRpcError:
        where = f"service {self.service!r} ({self.filter.describe()})"
        known = "" if self.watcher.synced else "; the registry has not answered yet"
        if deadline_hit:
            return NoEndpointsRpcError(
                grpc.StatusCode.DEADLINE_EXCEEDED,
                f"deadline exceeded while waiting for a SERVING endpoint of {where}{known}",
            )
        return NoEndpointsRpcError(
            grpc.StatusCode.UNAVAILABLE,
            f"no SERVING endpoint of {where} after waiting {waited or 0:.1f}s{known}",
        )

    def attempt_started(self, sub: SubChannel) -> float:
        sub.call_started()
        self._balancer.call_started(sub.endpoint)
        return time.monotonic()

    def attempt_ended(self, sub: SubChannel, started: float, error: BaseException | None) -> None:
        latency = time.monotonic() - started
        transport_failure = isinstance(error, grpc.aio.AioRpcError) and is_transport_failure(error)
        sub.call_finished(latency, ok=not transport_failure)
        self._balancer.call_finished(sub.endpoint, latency, not transport_failure)
        if isinstance(error, grpc.aio.AioRpcError) and is_not_sent(error):
            if sub.record_connect_failure(self._outlier) and sub.id in self._subs:
                self._rebalance()
        elif not transport_failure:
            sub.record_success()

    def may_retry(self, method: str, error: BaseException) -> bool:
        if not isinstance(error, grpc.aio.AioRpcError) or isinstance(error, NoEndpointsRpcError):
            return False
        retry = is_not_sent(error) or (
            error.code() is grpc.StatusCode.UNAVAILABLE and ("/" + method.strip("/")) in self._retry_methods
        )
        if retry:
            self._retries += 1
            log.debug("retrying %s on another endpoint of %s after: %s", method, self.service, error.details())
        return retry

    async def ensure_connected(self, sub: SubChannel, deadline: float | None) -> bool:
        if sub.channel.get_state(try_to_connect=True) is grpc.ChannelConnectivity.READY:
            return True
        remaining = None if deadline is None else deadline - asyncio.get_running_loop().time()
        limit = self._connect_timeout if remaining is None else max(0.0, min(self._connect_timeout, remaining))
        try:
            await asyncio.wait_for(sub.channel.channel_ready(), limit)
        except TimeoutError:
            if sub.record_connect_failure(self._outlier) and sub.id in self._subs:
                self._rebalance()
            return False
        return True

    # -- multicallables -------------------------------------------------------------------

    def _request_key(self, metadata: Any) -> str | None:
        if not metadata:
            return None
        for key, value in metadata:
            if key.lower() == self._hash_key:
                return value if isinstance(value, str) else bytes(value).decode("utf-8", "replace")
        return None

    def _call_options(
        self,
        timeout: float | None,
        metadata: Any,
        credentials: grpc.CallCredentials | None,
        wait_for_ready: bool | None,
        compression: grpc.Compression | None,
    ) -> CallOptions:
        deadline = None if timeout is None else asyncio.get_running_loop().time() + timeout
        return CallOptions(deadline, metadata, credentials, wait_for_ready, compression, self._request_key(metadata))

    def unary_unary(
        self,
        method: str,
        request_serializer: Any = None,
        response_deserializer: Any = None,
        _registered_method: bool = False,
    ) -> grpc.aio.UnaryUnaryMultiCallable:  # type: ignore[type-arg]
        return _UnaryUnary(
            self, MethodSpec(UNARY_UNARY, method, request_serializer, response_deserializer, _registered_method)
        )

    def unary_stream(
        self,
        method: str,
        request_serializer: Any = None,
        response_deserializer: Any = None,
        _registered_method: bool = False,
    ) -> grpc.aio.UnaryStreamMultiCallable:  # type: ignore[type-arg]
        return _UnaryStream(
            self, MethodSpec(UNARY_STREAM, method, request_serializer, response_deserializer, _registered_method)
        )

    def stream_unary(
        self,
        method: str,
        request_serializer: Any = None,
        response_deserializer: Any = None,
        _registered_method: bool = False,
    ) -> grpc.aio.StreamUnaryMultiCallable:  # type: ignore[type-arg]
        return _StreamUnary(
            self, MethodSpec(STREAM_UNARY, method, request_serializer, response_deserializer, _registered_method)
        )

    def stream_stream(
        self,
        method: str,
        request_serializer: Any = None,
        response_deserializer: Any = None,
        _registered_method: bool = False,
    ) -> grpc.aio.StreamStreamMultiCallable:  # type: ignore[type-arg]
        return _StreamStream(
            self, MethodSpec(STREAM_STREAM, method, request_serializer, response_deserializer, _registered_method)
        )

    # -- channel surface ------------------------------------------------------------------

    def get_state(self, try_to_connect: bool = False) -> grpc.ChannelConnectivity:
        """The best state among sub-channels (READY if any is), SHUTDOWN once closed."""
        if self._closed:
            return grpc.ChannelConnectivity.SHUTDOWN
        states = {s.channel.get_state(try_to_connect) for s in self._subs.values()}
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
        while self.get_state() == last_observed_state and not self._closed:
            waiters = [asyncio.ensure_future(self.watcher.wait_changed(self.watcher.version))]
            waiters += [
                asyncio.ensure_future(s.channel.wait_for_state_change(s.channel.get_state()))
                for s in self._subs.values()
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
            if self._closed:
                raise ChannelClosedError("MeshChannel is closed")
            changed = asyncio.ensure_future(self.watcher.wait_changed(self.watcher.version))
            readies = [asyncio.ensure_future(s.channel.channel_ready()) for s in self._subs.values()]
            try:
                done, _ = await asyncio.wait([changed, *readies], return_when=asyncio.FIRST_COMPLETED)
            finally:
                for waiter in (changed, *readies):
                    waiter.cancel()
            if any(r in done and not r.cancelled() and r.exception() is None for r in readies):
                return

    async def close(self, grace: float | None = None) -> None:
        """Close every sub-channel (waiting up to ``grace`` for running calls) and stop watching."""
        if self._closed:
            return
        self._closed = True
        await self.watcher.close()
        subs = list(self._subs.values()) + list(self._draining)
        self._subs.clear()
        self._draining.clear()
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
        return tuple(s.endpoint for s in self._subs.values())

    def stats(self) -> ChannelStats:
        now = time.monotonic()
        subs = list(self._subs.values())
        return ChannelStats(
            service=self.service,
            filter=self.filter.describe(),
            policy=self.policy,
            endpoints=len(subs),
            ejected=sum(1 for s in subs if s.is_ejected(now)),
            ejections_total=sum(s.ejections for s in subs) + sum(s.ejections for s in self._draining),
            retries_total=self._retries,
            no_endpoint_errors=self._no_endpoint_errors,
            draining=len(self._draining),
            per_endpoint=tuple(s.stats(now) for s in subs),
            watch_errors=self.watcher.watch_errors,
        )

    def __repr__(self) -> str:
        return (
            f"<MeshChannel {self.service} ({self.filter.describe()}) policy={self.policy} endpoints={len(self._subs)}>"
        )


class _MultiCallable:
    def __init__(self, host: MeshChannel, spec: MethodSpec) -> None:
        self._host = host
        self._spec = spec


class _UnaryUnary(_MultiCallable, grpc.aio.UnaryUnaryMultiCallable):  # type: ignore[type-arg]
    def __call__(
        self,
        request: Any,
        timeout: float | None = None,
        metadata: Any = None,
        credentials: grpc.CallCredentials | None = None,
        wait_for_ready: bool | None = None,
        compression: grpc.Compression | None = None,
    ) -> MeshUnaryUnaryCall:
        options = self._host._call_options(timeout, metadata, credentials, wait_for_ready, compression)
        return MeshUnaryUnaryCall(self._host, self._spec, options, request)


class _UnaryStream(_MultiCallable, grpc.aio.UnaryStreamMultiCallable):  # type: ignore[type-arg]
    def __call__(
        self,
        request: Any,
        timeout: float | None = None,
        metadata: Any = None,
        credentials: grpc.CallCredentials | None = None,
        wait_for_ready: bool | None = None,
        compression: grpc.Compression | None = None,
    ) -> MeshUnaryStreamCall:
        options = self._host._call_options(timeout, metadata, credentials, wait_for_ready, compression)
        return MeshUnaryStreamCall(self._host, self._spec, options, request)


class _StreamUnary(_MultiCallable, grpc.aio.StreamUnaryMultiCallable):  # type: ignore[type-arg]
    def __call__(
        self,
        request_iterator: Any = None,
        timeout: float | None = None,
        metadata: Any = None,
        credentials: grpc.CallCredentials | None = None,
        wait_for_ready: bool | None = None,
        compression: grpc.Compression | None = None,
    ) -> MeshStreamUnaryCall:
        options = self._host._call_options(timeout, metadata, credentials, wait_for_ready, compression)
        return MeshStreamUnaryCall(self._host, self._spec, options, request_iterator)


class _StreamStream(_MultiCallable, grpc.aio.StreamStreamMultiCallable):  # type: ignore[type-arg]
    def __call__(
        self,
        request_iterator: Any = None,
        timeout: float | None = None,
        metadata: Any = None,
        credentials: grpc.CallCredentials | None = None,
        wait_for_ready: bool | None = None,
        compression: grpc.Compression | None = None,
    ) -> MeshStreamStreamCall:
        options = self._host._call_options(timeout, metadata, credentials, wait_for_ready, compression)
        return MeshStreamStreamCall(self._host, self._spec, options, request_iterator)
