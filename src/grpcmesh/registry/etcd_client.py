"""A small multi-endpoint etcd v3 client: the few calls the etcd registry needs, with failover.

aetcd supplies the etcd v3 API bindings (stubs generated from etcd's protos, on asyncio
``grpc.aio``). Its ``Client`` talks to one endpoint over plaintext only, so this module drives
those stubs itself, to get what a production registry needs:

* TLS (CA, client certificate) and username/password on every endpoint;
* a deadline on every call, and retry on the *next* endpoint when a member is down, cut off
  from the leader, or slow: a killed member costs one failed attempt, not an outage;
* a fresh channel after each failure, so a restarted etcd is reached at once instead of
  after gRPC's reconnect backoff.

A :class:`Session` is one channel to one endpoint. When a call on it fails in a way that
another member could serve, the session is *retired* (its ``retired`` event is set, so watch
streams on it restart elsewhere) and the next call opens a session on the next endpoint.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import grpc
import grpc.aio

from grpcmesh._extras import require
from grpcmesh._tasks import cancel_and_wait
from grpcmesh.errors import ConfigError, RegistryError, RegistryUnavailableError

rpc: Any = require("aetcd.rpc", "etcd", "the etcd registry")
prefix_range_end: Any = require("aetcd.utils", "etcd", "the etcd registry").prefix_range_end

log = logging.getLogger("grpcmesh.registry.etcd")

T = TypeVar("T")

DEFAULT_PORT = 2379

_RETRYABLE = frozenset(
    {
        grpc.StatusCode.UNAVAILABLE,  # member down, no leader, connection refused
        grpc.StatusCode.DEADLINE_EXCEEDED,  # member hung or partitioned
        grpc.StatusCode.UNAUTHENTICATED,  # auth token expired: a new session logs in again
        grpc.StatusCode.CANCELLED,  # the channel went away under the call
    }
)

_CHANNEL_OPTIONS: tuple[tuple[str, int], ...] = (
    # Detect a dead peer under a long-lived watch stream. etcd rejects pings more often
    # than every 5 s and pings without an open stream, so ping every 10 s, only in calls.
    ("grpc.keepalive_time_ms", 10_000),
    ("grpc.keepalive_timeout_ms", 5_000),
    ("grpc.http2.max_pings_without_data", 0),
    ("grpc.max_receive_message_length", 64 * 1024 * 1024),
    ("grpc.initial_reconnect_backoff_ms", 500),
    ("grpc.min_reconnect_backoff_ms", 500),
    ("grpc.max_reconnect_backoff_ms", 2_000),
)


EOF: Any = grpc.aio.EOF  # type: ignore[attr-defined]  # (missing from grpc-stubs) end of a stream


class LeaseNotFoundError(Exception):
    """etcd does not know the lease (it expired, or etcd lost its data)."""


@dataclass(frozen=True)
class Endpoint:
    """One etcd member's client address."""

    host: str
    port: int

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    @classmethod
    def parse(cls, text: str) -> Endpoint:
        """``host``, ``host:port`` or ``[v6]:port``; the port defaults to 2379."""
        text = text.strip()
        host, port_text = text, ""
        if text.startswith("["):
            host, _, rest = text[1:].partition("]")
            port_text = rest.removeprefix(":")
        elif text.count(":") == 1:
            host, port_text = text.split(":")
        if not host:
            raise ConfigError(f"registry: etcd endpoint {text!r} has no host; write host:port, e.g. 127.0.0.1:2379")
        if not port_text:
            return cls(host, DEFAULT_PORT)
        if not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
            raise ConfigError(f"registry: etcd endpoint {text!r} has an invalid port; use 1-65535, e.g. {host}:2379")
        return cls(host, int(port_text))


@dataclass(frozen=True)
class TlsFiles:
    """PEM files for TLS: ``ca`` verifies the server, ``cert`` + ``key`` identify this client."""

    ca: Path | None = None
    cert: Path | None = None
    key: Path | None = None

    def load(self) -> grpc.ChannelCredentials:
        """Read the files (blocking: call in a worker thread)."""

        def read(path: Path | None, option: str) -> bytes | None:
            if path is None:
                return None
            try:
                return path.read_bytes()
            except OSError as exc:
                raise ConfigError(f"registry: etcd option {option}={str(path)!r} cannot be read: {exc}") from None

        return grpc.ssl_channel_credentials(
            root_certificates=read(self.ca, "ca"),
            private_key=read(self.key, "key"),
            certificate_chain=read(self.cert, "cert"),
        )


class Session:
    """One channel to one etcd member, with the stubs and auth metadata calls need."""

    def __init__(self, endpoint: Endpoint, channel: grpc.aio.Channel) -> None:
        self.endpoint = endpoint
        self.channel = channel
        self.kv: Any = rpc.KVStub(channel)
        self.lease: Any = rpc.LeaseStub(channel)
        self.watch: Any = rpc.WatchStub(channel)
        self.metadata: tuple[tuple[str, str], ...] = ()
        self.authenticated = False
        self.retired = asyncio.Event()
        """Set when this session failed and calls moved on: streams on it should restart."""

    async def range_prefix(self, prefix: bytes, timeout: float, *, keys_only: bool = False) -> Any:
        request = rpc.RangeRequest(key=prefix, range_end=prefix_range_end(prefix), keys_only=keys_only)
        return await self.kv.Range(request, timeout=timeout, metadata=self.metadata)

    async def put(self, key: bytes, value: bytes, lease_id: int, timeout: float) -> None:
        await self.kv.Put(rpc.PutRequest(key=key, value=value, lease=lease_id), timeout=timeout, metadata=self.metadata)

    async def delete(self, key: bytes, timeout: float) -> None:
        await self.kv.DeleteRange(rpc.DeleteRangeRequest(key=key), timeout=timeout, metadata=self.metadata)

    async def delete_if_lease(self, key: bytes, lease_id: int, timeout: float) -> bool:
        """Delete ``key`` only while it is attached to ``lease_id`` (one transaction); True if deleted."""
        same_lease = rpc.Compare(
            result=rpc.Compare.CompareResult.EQUAL, target=rpc.Compare.CompareTarget.LEASE, key=key, lease=lease_id
        )
        delete = rpc.RequestOp(request_delete_range=rpc.DeleteRangeRequest(key=key))
        reply = await self.kv.Txn(
            rpc.TxnRequest(compare=[same_lease], success=[delete]), timeout=timeout, metadata=self.metadata
        )
        return bool(reply.succeeded)

    async def get(self, key: bytes, timeout: float) -> Any:
        """The key-value of ``key`` (``None`` when absent)."""
        reply = await self.kv.Range(rpc.RangeRequest(key=key), timeout=timeout, metadata=self.metadata)
        return reply.kvs[0] if reply.kvs else None

    async def grant(self, ttl: int, timeout: float) -> tuple[int, int]:
        """A new lease: ``(id, granted TTL)`` (etcd may raise a short TTL to its minimum)."""
        reply = await self.lease.LeaseGrant(rpc.LeaseGrantRequest(TTL=ttl), timeout=timeout, metadata=self.metadata)
        if reply.error:
            raise RegistryError(f"etcd at {self.endpoint} refused a {ttl}s lease: {reply.error}")
        return int(reply.ID), int(reply.TTL)

    async def revoke(self, lease_id: int, timeout: float) -> None:
        await self.lease.LeaseRevoke(rpc.LeaseRevokeRequest(ID=lease_id), timeout=timeout, metadata=self.metadata)

    async def keep_alive(self, lease_id: int, timeout: float) -> int:
        """Refresh a lease; returns its TTL, 0 when etcd no longer has it."""
        call = self.lease.LeaseKeepAlive(
            iter([rpc.LeaseKeepAliveRequest(ID=lease_id)]), timeout=timeout, metadata=self.metadata
        )
        try:
            reply = await call.read()
        finally:
            call.cancel()
        return 0 if reply is EOF else int(reply.TTL)


class EtcdClient:
    """Calls to an etcd cluster through one member at a time, moving on when it fails."""

    def __init__(
        self,
        endpoints: Sequence[Endpoint],
        *,
        tls: TlsFiles | None = None,
        username: str | None = None,
        password: str | None = None,
        timeout: float = 5.0,
    ) -> None:
        if not endpoints:
            raise ConfigError("registry: etcd needs at least one endpoint, e.g. etcd://127.0.0.1:2379")
        if (username is None) != (password is None):
            raise ConfigError("registry: etcd needs both username and password options, or neither")
        self.endpoints = tuple(endpoints)
        self.timeout = timeout
        self._tls = tls
        self._credentials: grpc.ChannelCredentials | None = None
        self._username = username
        self._password = password
        self._index = 0
        self._session: Session | None = None
        self._channels: set[grpc.aio.Channel] = set()
        self._closers: set[asyncio.Task[None]] = set()
        self._lock = asyncio.Lock()
        self._closed = False

    @property
    def endpoint(self) -> Endpoint:
        """The member calls go to now."""
        return self._session.endpoint if self._session is not None else self.endpoints[self._index]

    def describe(self) -> str:
        return ",".join(str(e) for e in self.endpoints)

    async def call(self, what: str, op: Callable[[Session, float], Awaitable[T]]) -> T:
        """Run ``op(session, attempt_timeout)``, on other members if needed, within ``timeout``.

        Raises :class:`RegistryUnavailableError` when no member answered in time,
        :class:`RegistryError` when etcd refused the call, :class:`LeaseNotFoundError`.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.timeout
        per_attempt = max(1.0, self.timeout / 2) if len(self.endpoints) > 1 else self.timeout
        failures: list[str] = []
        while True:
            remaining = deadline - loop.time()
            if remaining <= 0 or self._closed:
                tried = "; ".join(dict.fromkeys(failures[-len(self.endpoints) :])) or "no attempt finished"
                raise RegistryUnavailableError(
                    f"etcd at {self.describe()} could not be reached while {what} "
                    f"({len(failures)} attempt(s) in {self.timeout:g}s; last: {tried}); "
                    "check that etcd is running and the registry URL lists its client address(es)"
                )
            attempt_timeout = min(remaining, per_attempt)
            session = await self._session_for_call()
            try:
                if not session.authenticated:
                    async with self._lock:  # one login per session, not one per concurrent call
                        if not session.authenticated:
                            await self._authenticate(session, attempt_timeout)
                return await op(session, attempt_timeout)
            except grpc.aio.AioRpcError as exc:
                code, details = exc.code(), exc.details() or ""
                if code == grpc.StatusCode.NOT_FOUND and "lease not found" in details:
                    raise LeaseNotFoundError(details) from None
                if code not in _RETRYABLE:
                    raise RegistryError(f"etcd at {session.endpoint} refused {what}: {code.name}: {details}") from None
                failures.append(f"{session.endpoint}: {code.name} {details}".strip())
            except grpc.aio.UsageError as exc:  # the channel was closed under us
                failures.append(f"{session.endpoint}: {exc}")
            self.retire(session)
            if len(failures) % len(self.endpoints) == 0:
                rounds = len(failures) // len(self.endpoints)
                await asyncio.sleep(min(0.05 * 2**rounds, 0.5, max(0.0, deadline - loop.time())))

    async def session(self, what: str) -> Session:
        """A connected (and logged-in) session, for streams the caller runs itself."""

        async def ready(session: Session, timeout: float) -> Session:
            return session

        return await self.call(what, ready)

    def retire(self, session: Session) -> None:
        """Stop using ``session``: later calls go to the next endpoint; its streams restart."""
        if self._session is session:
            self._session = None
            self._index = (self._index + 1) % len(self.endpoints)
            if len(self.endpoints) > 1:
                log.info("etcd member %s failed; moving to %s", session.endpoint, self.endpoints[self._index])
        if not session.retired.is_set():
            session.retired.set()
            closer = asyncio.get_running_loop().create_task(self._close_channel(session.channel, grace=self.timeout))
            self._closers.add(closer)
            closer.add_done_callback(self._closers.discard)

    async def close(self) -> None:
        """Close every channel; calls in flight fail."""
        self._closed = True
        if self._session is not None:
            self._session.retired.set()
            self._session = None
        channels = list(self._channels)  # including those a graceful closer is still closing
        await cancel_and_wait(list(self._closers))
        for channel in channels:
            await self._close_channel(channel, grace=None)  # at once; closing twice is harmless

    async def _close_channel(self, channel: grpc.aio.Channel, grace: float | None) -> None:
        try:
            await channel.close(grace)
        finally:
            self._channels.discard(channel)

    async def _session_for_call(self) -> Session:
        async with self._lock:
            if self._session is None:
                if self._tls is not None and self._credentials is None:
                    self._credentials = await asyncio.to_thread(self._tls.load)
                endpoint = self.endpoints[self._index]
                if self._credentials is not None:
                    channel = grpc.aio.secure_channel(str(endpoint), self._credentials, options=_CHANNEL_OPTIONS)
                else:
                    channel = grpc.aio.insecure_channel(str(endpoint), options=_CHANNEL_OPTIONS)
                self._channels.add(channel)
                self._session = Session(endpoint, channel)
            return self._session

    async def _authenticate(self, session: Session, timeout: float) -> None:
        if self._username is None or self._password is None:
            session.authenticated = True
            return
        request = rpc.AuthenticateRequest(name=self._username, password=self._password)
        try:
            reply = await rpc.AuthStub(session.channel).Authenticate(request, timeout=timeout)
        except grpc.aio.AioRpcError as exc:
            if exc.code() in _RETRYABLE:
                raise
            raise RegistryError(
                f"etcd at {session.endpoint} rejected the login as user {self._username!r}: {exc.details()}; "
                "check the registry's username and password options"
            ) from None
        session.metadata = (("token", str(reply.token)),)
        session.authenticated = True
