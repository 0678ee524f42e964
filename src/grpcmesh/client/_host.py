"""The channel's private half: its endpoint set and everything a call asks of its channel.

``MeshChannel`` is what users hold (a ``grpc.aio.Channel`` plus ``stats()``/``endpoints``);
this is what the call engine in :mod:`grpcmesh.client.calls` talks to. The methods are the
engine's extension points, in the order a call meets them:

1. :meth:`CallHost.call_options` — per-call deadline and metadata, computed once before the
   first attempt (deadline and request-context propagation belong here);
2. :meth:`CallHost.begin_call` — the mesh's client-side observation (auth headers, tracing
   context, metrics, access log) starts; it returns what to call with the final status;
3. :meth:`CallHost.pick_now` / :meth:`CallHost.acquire` — an endpoint is chosen (fail-fast
   or wait-for-ready decisions);
4. :meth:`CallHost.attempt_started` / :meth:`CallHost.attempt_ended` — per-attempt
   accounting (outlier ejection, balancer load, throttling);
5. :meth:`CallHost.may_retry` — whether a failed attempt moves to another endpoint (retry budget);
6. :meth:`CallHost.ensure_connected` — client-streaming kinds only: the chosen endpoint's
   connection must be ready before the caller's stream is handed to it;
7. :meth:`CallHost.explain_failure` — the error a call that failed before any response
   ends with (a refused TLS handshake gets its likely cause).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Set
from typing import TYPE_CHECKING, Any, Protocol

import grpc

from grpcmesh.client.calls import CallOptions
from grpcmesh.client.errors import MeshRpcError, NoEndpointsRpcError, is_not_sent, is_transport_failure
from grpcmesh.client.outlier import OutlierDetector
from grpcmesh.client.retry_budget import RetryBudget
from grpcmesh.client.settings import CallSettings
from grpcmesh.client.subchannel import SubChannel
from grpcmesh.client.throttle import AdaptiveThrottle
from grpcmesh.context import TIMEOUT_HEADER, encodable_timeout, merged_metadata
from grpcmesh.discovery.balancers import Balancer
from grpcmesh.discovery.balancers.base import NoLoadFeedback
from grpcmesh.discovery.endpoints import Endpoint, EndpointFilter, EndpointWatcher
from grpcmesh.errors import ChannelClosedError
from grpcmesh.security.tls import handshake_hint

if TYPE_CHECKING:
    from grpcmesh.client.calls import CallFinish, CallObserver, MethodSpec
    from grpcmesh.config import SecurityConfig

_NO_EXCLUSIONS: frozenset[str] = frozenset()  # pick_now's, not a new empty set per call
_NOTHING_SENT = object()
log = logging.getLogger("grpcmesh.client")


class _Startable(Protocol):
    def _start_if_idle(self) -> None: ...


class CallHost:
    """One channel's sub-channels, balancer and outlier state, and the calls' questions to it."""

    def __init__(
        self,
        watcher: EndpointWatcher,
        filter: EndpointFilter,
        balancer: Balancer,
        open_sub: Callable[[Endpoint], SubChannel],
        *,
        endpoint_wait: float,
        settings: CallSettings,
        hash_key: str,
        drain_grace: float,
        connect_timeout: float,
        observer: CallObserver | None,
        security: SecurityConfig | None = None,
        reuse_metadata: bool = False,
    ) -> None:
        self.watcher = watcher
        self.service = watcher.service
        self.filter = filter
        self.balancer = balancer
        self._feedback = not isinstance(balancer, NoLoadFeedback)
        """Whether the balancer uses call starts and ends (p2c); the others' hooks do nothing."""
        self._open_sub = open_sub
        self._endpoint_wait = endpoint_wait
        self.settings = settings
        self._hash_key = hash_key
        self.outliers = OutlierDetector(settings.outlier)
        self.throttle = AdaptiveThrottle(settings.throttle)
        self.budget = RetryBudget(settings.retry_budget)
        self._drain_grace = drain_grace
        self._connect_timeout = connect_timeout
        self.observer = observer
        self.security = security
        """The TLS settings the sub-channels' credentials came from (None: no handshake hints)."""
        self.subs: dict[str, SubChannel] = {}
        self.draining: set[SubChannel] = set()
        self._next_check = self.outliers.next_evaluation
        """When a pick must first end the outlier interval or lift an ejection."""
        self.closed = False
        self.retries = 0
        self.no_endpoint_errors = 0
        self.ejections_of_gone = 0
        """Ejections counted by sub-channels that have since been closed (keeps the total monotonic)."""
        self._reuse_metadata = reuse_metadata
        self._sent: tuple[object, grpc.aio.Metadata | None] = (_NOTHING_SENT, None)
        """The last metadata tuple an attempt sent, and the ``grpc.aio.Metadata`` made of it."""
        self._later: list[_Startable] = []
        """Calls made in this loop turn that start on the next one unless awaited first."""

    # -- calls not awaited at once ------------------------------------------------------

    def start_later(self, call: _Startable) -> None:
        """Start ``call`` on the loop's next turn if nobody has awaited it by then.

        One loop callback per turn serves every call the channel made in it (a callback per call
        was a measurable part of a call's cost), in the order they were made.
        """
        later = self._later
        later.append(call)
        if len(later) == 1:
            asyncio.get_running_loop().call_soon(self._start_pending)

    def _start_pending(self) -> None:
        pending, self._later = self._later, []
        for call in pending:
            try:
                call._start_if_idle()
            except Exception:  # one call that cannot start must not keep the others from starting
                log.exception("could not start a call to %s", self.service)

    # -- endpoint set -----------------------------------------------------------------

    def on_endpoints(self, endpoints: tuple[Endpoint, ...]) -> None:
        if self.closed:
            return
        wanted = {e.id: e for e in endpoints}
        for endpoint_id, sub in list(self.subs.items()):
            new = wanted.get(endpoint_id)
            if new is None or new.target != sub.endpoint.target:
                del self.subs[endpoint_id]
                self._retire(sub)
        for endpoint in endpoints:
            existing = self.subs.get(endpoint.id)
            if existing is None:
                self.subs[endpoint.id] = self._open_sub(endpoint)
            else:
                existing.endpoint = endpoint
        self.outliers.update(self.subs)
        log.info("%s now has %d endpoint(s) (%s)", self.service, len(self.subs), self.filter.describe())
        self._rebalance()

    def _retire(self, sub: SubChannel) -> None:
        """Stop picking ``sub``; close it after its running calls end (never cancel them early)."""
        self.draining.add(sub)
        task = sub.drain(self._drain_grace)
        task.add_done_callback(lambda _: self._forget(sub))

    def _forget(self, sub: SubChannel) -> None:
        if sub in self.draining:
            self.draining.discard(sub)
            self.ejections_of_gone += sub.ejections

    def ejections_total(self) -> int:
        """Every ejection this channel made, including those of endpoints that left: never decreases."""
        live = sum(s.ejections for s in self.subs.values()) + sum(s.ejections for s in self.draining)
        return self.ejections_of_gone + live

    def _rebalance(self) -> None:
        now = time.monotonic()
        subs = list(self.subs.values())
        for sub in subs:  # the sub-channels carry the outlier state for stats()
            health = self.outliers.health(sub.id)
            if health is not None:
                sub.ejected_until, sub.ejections = health.ejected_until, health.ejections
        active = [s.endpoint for s in subs if not s.is_ejected(now)]
        if not active:  # panic mode: every endpoint is ejected; better to try them than fail
            active = [s.endpoint for s in subs]
        self.balancer.update(active)
        self._next_check = min(self.outliers.next_unejection(now), self.outliers.next_evaluation)

    def take_all(self) -> list[SubChannel]:
        """Every sub-channel, live and draining, removed from the host (for closing the channel)."""
        subs = list(self.subs.values()) + list(self.draining)
        for sub in subs:
            self.ejections_of_gone += sub.ejections
        self.subs.clear()
        self.draining.clear()
        return subs

    # -- 1. per-call options ----------------------------------------------------------------

    def call_options(
        self,
        spec: MethodSpec,
        timeout: float | None,
        metadata: Any,
        credentials: grpc.CallCredentials | None,
        wait_for_ready: bool | None,
        compression: grpc.Compression | None,
        default_timeout: float | None,
    ) -> CallOptions:
        """The call's deadline (absolute, loop clock) and metadata, fixed before the first attempt.

        Without a timeout of its own a call takes the method's configured default; inside a
        handler served by a mesh server it takes the incoming call's remaining deadline (less
        the margin) when that is shorter, and carries the incoming call's allowlisted metadata
        (request id, baggage). An already spent budget leaves a deadline in the past, which
        :meth:`admit` turns into DEADLINE_EXCEEDED before anything is sent.
        """
        settings = self.settings
        if timeout is None:
            timeout = default_timeout
        outgoing = settings.propagation.outgoing(timeout, metadata)
        if outgoing.metadata:
            metadata = merged_metadata(metadata, outgoing.metadata)
        timeout = outgoing.timeout
        if timeout is not None and timeout > 0:  # lets the server measure how long the call queued
            timeout, sent = encodable_timeout(timeout)  # a few ms shorter, so grpc sends what the header says
            metadata = merged_metadata(metadata, ((TIMEOUT_HEADER, str(sent)),))
        deadline = None if timeout is None else asyncio.get_running_loop().time() + timeout
        if wait_for_ready is None:
            wait_for_ready = settings.wait_for_ready
        key = self._request_key(metadata) if metadata else None
        return CallOptions(deadline, metadata, credentials, wait_for_ready, compression, key)

    def sendable(self, metadata: Any) -> Any:
        """``metadata`` as an attempt hands it to grpc.aio.

        grpc.aio turns a metadata tuple into a ``grpc.aio.Metadata`` (an ordered dict of lists)
        on every call: ~1.3 µs for one entry (a tight loop, grpcio 1.85). The tuple most calls
        send is the same object call after call (the signed ``x-mesh-auth`` header, fixed for a
        second), so it is turned once here and that object reused; grpc.aio only reads it. Not on channels with user
        interceptors, which may change the metadata they are given in place.
        """
        tuple_, built = self._sent
        if metadata is tuple_:
            return built
        if not self._reuse_metadata or type(metadata) is not tuple or not metadata:
            return metadata
        built = grpc.aio.Metadata(*metadata)  # what from_tuple does, one call fewer
        self._sent = (metadata, built)
        return built

    def admit(self, spec: MethodSpec, options: CallOptions, now: float | None = None) -> MeshRpcError | None:
        """Why the call must fail without being sent (spent deadline, client-side throttling), or None.

        ``now`` is ``time.monotonic()`` if the caller has read it already (one reading per call serves
        admission, the pick and the attempt's start).
        """
        if options.deadline is not None and options.deadline <= asyncio.get_running_loop().time():
            return MeshRpcError(
                grpc.StatusCode.DEADLINE_EXCEEDED,
                f"deadline exceeded before {spec.method} could be sent (no time was left of the call's deadline, "
                "or of the incoming call's it inherits)",
            )
        if now is None:
            now = time.monotonic()
        if not self.throttle.allow(now):
            return MeshRpcError(
                grpc.StatusCode.UNAVAILABLE,
                f"{spec.method} to service {self.service!r} rejected by client-side throttling: "
                f"the service has recently failed or refused most calls",
            )
        self.budget.request(now)
        return None

    def _request_key(self, metadata: Any) -> str | None:
        if not metadata:
            return None
        for key, value in metadata:
            if key.lower() == self._hash_key:
                return value if isinstance(value, str) else bytes(value).decode("utf-8", "replace")
        return None

    # -- 2. observation -------------------------------------------------------------------

    def begin_call(self, spec: MethodSpec, options: CallOptions) -> CallFinish | None:
        """Start the mesh's observation of one call (may add metadata); ``None`` when nothing observes."""
        observer = self.observer
        return None if observer is None else observer.begin(self.service, spec, options)

    # -- 3. endpoint acquisition -------------------------------------------------------------

    def _pick(self, request_key: str | None, exclude: Set[str], now: float | None = None) -> SubChannel | None:
        if now is None:
            now = time.monotonic()
        if now >= self._next_check:
            if now >= self.outliers.next_evaluation:
                self.outliers.evaluate(now)
            self._rebalance()
        endpoint = self.balancer.pick(request_key, exclude)
        if endpoint is not None and self.outliers.streaking and self.outliers.on_probation(endpoint.id, now):
            probe = self.subs.get(endpoint.id)
            if probe is not None and probe.outstanding > 0:  # one probe at a time
                endpoint = self.balancer.pick(request_key, {*exclude, endpoint.id}) or endpoint
        if endpoint is None and exclude:
            # The balancer only knows non-ejected endpoints; a retry may still use an ejected one.
            endpoint = next((s.endpoint for s in self.subs.values() if s.id not in exclude), None)
        return None if endpoint is None else self.subs.get(endpoint.id)

    def pick_now(self, request_key: str | None, now: float | None = None) -> SubChannel | None:
        """``acquire``'s common case without a coroutine: an endpoint if one can be picked now.

        ``None`` means the caller must ``await acquire(...)`` (no endpoint yet, so it waits).
        """
        if self.closed:
            raise ChannelClosedError("MeshChannel is closed")
        sub = self._pick(request_key, _NO_EXCLUSIONS, now)
        if sub is None:  # (a sub-channel means the watcher runs: its endpoints came from it)
            self.watcher.start()
        return sub

    async def acquire(
        self, request_key: str | None, exclude: set[str], deadline: float | None, wait_for_ready: bool
    ) -> SubChannel | None:
        """An endpoint, waiting for one to appear (up to ``endpoint_wait``, or the deadline with
        ``wait_for_ready``); ``None`` only when ``exclude`` leaves nothing (the retry gives up)."""
        if self.closed:
            raise ChannelClosedError("MeshChannel is closed")
        self.watcher.start()
        sub = self._pick(request_key, exclude)
        if sub is not None or exclude:
            return sub
        loop = asyncio.get_running_loop()
        remaining = None if deadline is None else deadline - loop.time()
        if wait_for_ready:  # like gRPC: wait for an endpoint up to the deadline
            limit = remaining
            await self.watcher.wait_for_endpoints(limit)
        else:  # fail fast, but give the registry a chance to answer first (bounded)
            limit = self._endpoint_wait if remaining is None else min(self._endpoint_wait, remaining)
            await self._wait_synced(limit)
        sub = self._pick(request_key, exclude)
        if sub is not None:
            return sub
        self.no_endpoint_errors += 1
        deadline_hit = remaining is not None and limit == remaining and (wait_for_ready or not self.watcher.synced)
        raise self._no_endpoints_error(limit, deadline_hit=deadline_hit)

    async def _wait_synced(self, timeout: float | None) -> None:
        """Wait until the registry has answered once (the endpoint set is known, maybe empty)."""
        watcher = self.watcher
        loop = asyncio.get_running_loop()
        end = None if timeout is None else loop.time() + timeout
        while not watcher.synced:
            left = None if end is None else end - loop.time()
            if left is not None and left <= 0:
                return
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(watcher.wait_changed(watcher.version), left)

    def _no_endpoints_error(self, waited: float | None, deadline_hit: bool) -> NoEndpointsRpcError:
        where = f"service {self.service!r} ({self.filter.describe()})"
        if deadline_hit:
            known = "" if self.watcher.synced else "; the registry has not answered yet"
            return NoEndpointsRpcError(
                grpc.StatusCode.DEADLINE_EXCEEDED,
                f"deadline exceeded while waiting for a SERVING endpoint of {where}{known}",
            )
        if self.watcher.synced:
            return NoEndpointsRpcError(
                grpc.StatusCode.UNAVAILABLE,
                f"no SERVING endpoint of {where} in the registry (pass wait_for_ready=True to wait for one)",
            )
        return NoEndpointsRpcError(
            grpc.StatusCode.UNAVAILABLE,
            f"no SERVING endpoint of {where}: the registry has not answered after {waited or 0:.1f}s",
        )

    # -- 4. attempts ----------------------------------------------------------------------

    def attempt_started(self, sub: SubChannel, now: float | None = None) -> float:
        """Count the attempt on ``sub``; returns its start time (``now`` if given)."""
        sub.call_started()
        if self._feedback:
            self.balancer.call_started(sub.endpoint)
        return time.monotonic() if now is None else now

    def attempt_ended(self, sub: SubChannel, started: float, error: BaseException | None) -> None:
        now = time.monotonic()
        latency = now - started
        if error is None:  # the common case: every hook told of a success, nothing else to work out
            sub.call_finished(latency, True)
            if self._feedback:
                self.balancer.call_finished(sub.endpoint, latency, True)
            self.throttle.record(grpc.StatusCode.OK, now)
            self.outliers.record(sub.id, latency, None, now)
            return
        rpc_error = error if isinstance(error, grpc.aio.AioRpcError) else None
        failed = rpc_error is not None and (
            is_transport_failure(rpc_error) or rpc_error.code() is grpc.StatusCode.DEADLINE_EXCEEDED
        )
        sub.call_finished(latency, ok=not failed)
        if self._feedback:
            self.balancer.call_finished(sub.endpoint, latency, not failed)
        if rpc_error is not None:
            self.throttle.record(rpc_error.code(), now)
        if self.outliers.record(sub.id, latency, error, now) and sub.id in self.subs:
            self._rebalance()

    # -- 5. retries -----------------------------------------------------------------------

    def may_retry(self, method: str, error: BaseException) -> bool:
        """One retry on another endpoint: when the request never left, or UNAVAILABLE on an opted-in method."""
        if not isinstance(error, grpc.aio.AioRpcError) or isinstance(error, NoEndpointsRpcError):
            return False
        retry = is_not_sent(error) or (
            error.code() is grpc.StatusCode.UNAVAILABLE
            and self.settings.may_retry_method(method)
            and self.budget.try_retry()  # the request may have run: only within the retry budget
        )
        if retry:
            self.retries += 1
            log.debug("retrying %s on another endpoint of %s after: %s", method, self.service, error.details())
        return retry

    # -- 7. failures ----------------------------------------------------------------------

    def explain_failure(self, error: BaseException) -> BaseException:
        """``error``, or for a call that failed before any response on a TLS channel with gRPC's
        bare ``UNAVAILABLE ... Socket closed`` (or an SSL failure), a :class:`MeshRpcError` whose
        details add the likely cause of the refused handshake (the original is its ``__cause__``)."""
        security = self.security
        if (
            security is None
            or not isinstance(error, grpc.aio.AioRpcError)
            or isinstance(error, MeshRpcError)
            or error.code() is not grpc.StatusCode.UNAVAILABLE
        ):
            return error
        details = error.details() or ""
        hint = handshake_hint(details, security)
        if hint is None:
            return error
        explained = MeshRpcError(error.code(), f"{details} (likely cause: {hint})")
        explained.__cause__ = error
        return explained

    # -- 6. connection before a client stream ---------------------------------------------------

    async def ensure_connected(self, sub: SubChannel, deadline: float | None) -> bool:
        if sub.channel.get_state(try_to_connect=True) is grpc.ChannelConnectivity.READY:
            return True
        remaining = None if deadline is None else deadline - asyncio.get_running_loop().time()
        limit = self._connect_timeout if remaining is None else max(0.0, min(self._connect_timeout, remaining))
        try:
            await asyncio.wait_for(sub.channel.channel_ready(), limit)
        except TimeoutError:
            if self.outliers.record_connect_failure(sub.id) and sub.id in self.subs:
                self._rebalance()
            return False
        return True
