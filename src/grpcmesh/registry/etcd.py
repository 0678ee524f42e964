"""The production registry: etcd v3, with leases for liveness and prefix watches for changes.

Layout: ``{prefix}/{name}/{id}`` (prefix default ``/services``) holds the shared JSON wire
encoding, so ``etcdctl get --prefix /services`` shows readable records.

* **Liveness.** Each registry object (one *owner*) puts its keys under one etcd lease per
  distinct TTL (normally exactly one lease) and keeps it alive every ``ttl / 3``. A killed
  owner stops refreshing and etcd deletes its keys when the lease expires. If etcd loses the
  lease instead (etcd wiped or restarted without data, or the owner cut off for longer than
  the TTL), the next keep-alive learns it, and the owner grants a new lease and puts
  everything it owns again, logging that it did.
* **Watching.** ``watch(name)`` reads the service's keys, then watches the prefix from the
  read's revision + 1, so no change falls between the two. If the stream breaks, its member
  dies, or the start revision was compacted, the watch starts over with a fresh read. One
  stream per watched name serves every watcher of this registry object (:class:`SnapshotFeed`).
* **Several members.** ``etcd://a:2379,b:2379,c:2379`` sends calls to one member and moves
  to the next when it fails; leases and keys live in the cluster, so nothing is lost.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import SplitResult

import grpc
import grpc.aio

from grpcmesh._tasks import cancel_and_wait
from grpcmesh.errors import InvalidRecordError, RegistryError, RegistryUnavailableError
from grpcmesh.model import ServiceInstance, decode_instance, encode_instance, is_service_name
from grpcmesh.registry._hub import Topic, WatchHub
from grpcmesh.registry._warn import WarnOnce
from grpcmesh.registry.base import DEFAULT_TTL, BaseRegistry, Snapshot, check_ttl, sort_snapshot
from grpcmesh.registry.etcd_client import (
    EOF,
    Endpoint,
    EtcdClient,
    LeaseNotFoundError,
    Session,
    TlsFiles,
    prefix_range_end,
    rpc,
)
from grpcmesh.registry.etcd_url import DEFAULT_PREFIX, DEFAULT_TIMEOUT, check_prefix, parse_url

log = logging.getLogger("grpcmesh.registry.etcd")

_REPUT_CONCURRENCY = 64


@dataclass
class _Lease:
    """This owner's lease for one TTL, and the keep-alive task refreshing it."""

    ttl: int
    id: int | None = None
    granted_ttl: int = 0
    needs_reput: bool = False
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    task: asyncio.Task[None] | None = None


@dataclass
class _Watched:
    """What a watch stream of one service continues from: the revision read and the records by key."""

    revision: int
    instances: dict[bytes, ServiceInstance]

    def snapshot(self) -> Snapshot:
        return sort_snapshot(self.instances.values())


class EtcdRegistry(BaseRegistry):
    """Registry in an etcd v3 cluster (etcd 3.4+)."""

    def __init__(
        self,
        endpoints: Sequence[str | Endpoint] = ("127.0.0.1:2379",),
        *,
        prefix: str = DEFAULT_PREFIX,
        tls: TlsFiles | None = None,
        username: str | None = None,
        password: str | None = None,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> None:
        parsed = [e if isinstance(e, Endpoint) else Endpoint.parse(e) for e in endpoints]
        self.prefix = check_prefix(prefix)
        self._client = EtcdClient(parsed, tls=tls, username=username, password=password, timeout=timeout)
        self._owned: dict[tuple[str, str], tuple[ServiceInstance, int]] = {}
        self._leases: dict[int, _Lease] = {}
        self._hub: WatchHub[_Watched] = WatchHub("etcd", self._load, self._follow, guard=self._check_watch)
        self._warned = WarnOnce()
        self._contested: set[tuple[str, str]] = set()

    def __repr__(self) -> str:
        return f"EtcdRegistry(endpoints={self._client.describe()!r}, prefix={self.prefix!r})"

    @property
    def endpoint(self) -> str:
        """``host:port`` of the member this registry currently talks to."""
        return str(self._client.endpoint)

    # -- keys -------------------------------------------------------------------------

    def _service_prefix(self, name: str) -> bytes:
        return f"{self.prefix}/{name}/".encode()

    def _key(self, instance: ServiceInstance) -> bytes:
        return self._service_prefix(instance.name) + instance.id.encode()

    # -- registration -----------------------------------------------------------------

    async def register(self, instance: ServiceInstance, *, ttl: float = DEFAULT_TTL) -> None:
        self._ensure_open()
        seconds = max(1, math.ceil(check_ttl(ttl)))
        lease = self._leases.get(seconds)
        if lease is None:
            lease = self._leases[seconds] = _Lease(seconds)
        previous = self._owned.get(instance.key)
        self._owned[instance.key] = (instance, seconds)  # before the put: a lease recovery re-puts it too
        try:
            await self._put(lease, instance)
        except BaseException:
            if self._owned.get(instance.key) == (instance, seconds):
                if previous is None:
                    del self._owned[instance.key]
                else:
                    self._owned[instance.key] = previous
            raise
        self._contested.discard(instance.key)  # registering again takes the id back
        if lease.task is None:
            lease.task = asyncio.get_running_loop().create_task(self._keep_alive(lease))

    async def _put(self, lease: _Lease, instance: ServiceInstance) -> None:
        key, value = self._key(instance), encode_instance(instance)
        for _ in range(3):
            lease_id = await self._lease_id(lease, f"registering {instance.name}/{instance.id}")
            try:
                await self._client.call(
                    f"registering {instance.name}/{instance.id}",
                    lambda s, t: s.put(key, value, lease_id, t),  # noqa: B023 - awaited at once
                )
                return
            except LeaseNotFoundError:
                await self._recover(lease, lease_id)
        raise RegistryError(f"etcd kept losing the lease while registering {instance.name}/{instance.id}")

    async def _lease_id(self, lease: _Lease, why: str) -> int:
        if lease.id is not None:
            return lease.id
        async with lease.lock:
            if lease.id is not None:
                return lease.id
            new_id, lease.granted_ttl = await self._client.call(
                f"{why} (granting a {lease.ttl}s lease)", lambda s, t: s.grant(lease.ttl, t)
            )
            lease.id = new_id
            return new_id

    async def _recover(self, lease: _Lease, lost_id: int | None) -> None:
        """etcd lost lease ``lost_id``: grant a new one and put everything it carried again.

        If that fails half-way (etcd went away again), ``needs_reput`` stays set and the
        keep-alive loop retries until every owned key is back.
        """
        async with lease.lock:
            if lease.id != lost_id and not lease.needs_reput:
                return  # someone recovered already
            if lease.id == lost_id:
                lease.id = None
            lease.needs_reput = True
            owned = [inst for inst, ttl in self._owned.values() if ttl == lease.ttl]
            if owned and lease.id is None:
                lease.id, lease.granted_ttl = await self._client.call(
                    f"granting a {lease.ttl}s lease", lambda s, t: s.grant(lease.ttl, t)
                )
            new_id = lease.id or 0
            limit = asyncio.Semaphore(_REPUT_CONCURRENCY)

            async def reput(instance: ServiceInstance) -> None:
                key, value = self._key(instance), encode_instance(instance)
                async with limit:
                    await self._client.call(
                        f"re-registering {instance.name}/{instance.id}", lambda s, t: s.put(key, value, new_id, t)
                    )

            try:
                await asyncio.gather(*(reput(inst) for inst in owned))
            except LeaseNotFoundError:
                lease.id = None  # lost again already: the next attempt grants another
                raise
            lease.needs_reput = False
        if owned:
            log.warning(
                "etcd lost lease %s (etcd restarted without its data, or no keep-alive reached it for longer "
                "than the %ss TTL); re-registered %d instance(s) under lease %x: %s",
                "?" if lost_id is None else f"{lost_id:x}",
                lease.ttl,
                len(owned),
                new_id,
                ", ".join(f"{i.name}/{i.id}" for i in owned[:10]) + (" ..." if len(owned) > 10 else ""),
            )

    async def _keep_alive(self, lease: _Lease) -> None:
        failing = False
        while not self._closed:
            interval = max(lease.granted_ttl, lease.ttl) / 3
            await asyncio.sleep(min(interval, 0.5) if failing else interval)
            lease_id = lease.id
            try:
                if lease.needs_reput:
                    await self._recover(lease, None)
                elif lease_id is not None:
                    remaining = await self._client.call(
                        f"keeping lease {lease_id:x} alive",
                        lambda s, t: s.keep_alive(lease_id, t),  # noqa: B023
                    )
                    if remaining <= 0:
                        await self._recover(lease, lease_id)
                    else:
                        await self._look_after(lease)
                if failing:
                    log.info("etcd keep-alive works again (via %s)", self.endpoint)
                failing = False
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # registrations must not lapse silently: log once, retry
                if not failing:
                    log.warning(
                        "etcd keep-alive of lease %s failed, retrying every 0.5 s: %s",
                        "?" if lease_id is None else f"{lease_id:x}",
                        exc,
                        exc_info=not isinstance(exc, (RegistryError, LeaseNotFoundError)),
                    )
                failing = True

    async def _look_after(self, lease: _Lease) -> None:
        """Put back owned keys someone deleted; report keys another live owner took over.

        One range read per owned service (not per instance) on every keep-alive.
        """
        lease_id = lease.id
        if lease_id is None:
            return
        by_name: dict[str, list[ServiceInstance]] = {}
        for inst, ttl in list(self._owned.values()):
            if ttl == lease.ttl:
                by_name.setdefault(inst.name, []).append(inst)
        limit = asyncio.Semaphore(_REPUT_CONCURRENCY)

        async def check(name: str, instances: list[ServiceInstance]) -> None:
            prefix = self._service_prefix(name)
            async with limit:
                reply = await self._client.call(f"checking {name}", lambda s, t: s.range_prefix(prefix, t))
                leases = {bytes(kv.key): int(kv.lease) for kv in reply.kvs}
                for instance in instances:
                    key = self._key(instance)
                    found = leases.get(key)
                    if found == lease_id:
                        self._contested.discard(instance.key)
                    elif found:  # under another lease: a second live owner
                        self._report_contested(instance, key)
                    elif instance.key in self._owned:  # deleted (or left without a lease) by someone else
                        value = encode_instance(instance)
                        what = f"restoring {instance.name}/{instance.id}"
                        await self._client.call(what, lambda s, t: s.put(key, value, lease_id, t))  # noqa: B023
                        log.warning("etcd key %s of a live owner was deleted by someone else; put back", key.decode())

        await asyncio.gather(*(check(name, instances) for name, instances in by_name.items()))

    def _report_contested(self, instance: ServiceInstance, key: bytes) -> None:
        if instance.key not in self._contested:
            self._contested.add(instance.key)
            log.warning(
                "etcd: instance id %s of %s has two live owners (key %s is now under another lease); "
                "leaving it to the other one. Give each process its own instance id",
                instance.id,
                instance.name,
                key.decode("utf-8", "replace"),
            )

    async def deregister(self, instance: ServiceInstance) -> None:
        """Delete the instance's key if this registry still owns it (never a successor's key)."""
        self._ensure_open()
        owned = self._owned.pop(instance.key, None)
        self._contested.discard(instance.key)
        lease = self._leases.get(owned[1]) if owned is not None else None
        lease_id = lease.id if lease is not None else None
        if lease_id is None:
            return  # not registered here (or its lease is gone, and the key with it)
        key = self._key(instance)
        await self._client.call(
            f"deregistering {instance.name}/{instance.id}", lambda s, t: s.delete_if_lease(key, lease_id, t)
        )

    # -- reading ----------------------------------------------------------------------

    async def get_service(self, name: str) -> list[ServiceInstance]:
        self._ensure_open()
        self._check_name(name)
        prefix = self._service_prefix(name)
        reply = await self._client.call(f"reading {name}", lambda s, t: s.range_prefix(prefix, t))
        return sort_snapshot(self._decode_all(name, reply.kvs).values())

    async def list_services(self) -> list[str]:
        """Services with at least one usable instance (names holding only bad records are left out)."""
        self._ensure_open()
        root = f"{self.prefix}/".encode()
        reply = await self._client.call("listing services", lambda s, t: s.range_prefix(root, t))
        names = set()
        for kv in reply.kvs:
            key = bytes(kv.key)
            name, sep, instance_id = key[len(root) :].decode("utf-8", "replace").partition("/")
            if not (sep and instance_id and "/" not in instance_id and is_service_name(name)) or name in names:
                continue
            if self._decode(name, key, bytes(kv.value), int(kv.mod_revision)) is not None:
                names.add(name)
        return sorted(names)

    def _decode_all(self, name: str, kvs: Iterable[Any]) -> dict[bytes, ServiceInstance]:
        decoded = {}
        for kv in kvs:
            key = bytes(kv.key)
            instance = self._decode(name, key, bytes(kv.value), int(kv.mod_revision))
            if instance is not None:
                decoded[key] = instance
        return decoded

    def _decode(self, name: str, key: bytes, value: bytes, revision: int) -> ServiceInstance | None:
        """The instance a key holds, or None (logged once) for a bad or misplaced record."""
        instance_id = key[len(self._service_prefix(name)) :].decode("utf-8", "replace")
        try:
            instance = decode_instance(value)
            if instance.key != (name, instance_id):
                stored = f"{name}/{instance_id}"
                raise InvalidRecordError(f"record is for {instance.name}/{instance.id}, stored under {stored}")
        except InvalidRecordError as exc:
            shown = key.decode("utf-8", "replace")
            self._warned.warning(log, (key, revision), "skipping bad registry record %s in etcd: %s", shown, exc)
            return None
        return instance

    # -- watching ---------------------------------------------------------------------

    async def _load(self, name: str) -> tuple[Snapshot, _Watched]:
        """Read the service afresh: its snapshot, and the records and revision a stream continues from."""
        prefix = self._service_prefix(name)
        reply = await self._client.call(f"reading {name}", lambda s, t: s.range_prefix(prefix, t))
        watched = _Watched(int(reply.header.revision), self._decode_all(name, reply.kvs))
        return watched.snapshot(), watched

    async def _follow(self, topic: Topic[_Watched]) -> None:
        """Stream changes after the loaded revision until the stream ends (then the hub reloads)."""
        name, revision = topic.name, topic.state.revision
        session = await self._client.session(f"watching {name}")
        stop = asyncio.Event()
        prefix = self._service_prefix(name)
        create = rpc.WatchCreateRequest(
            key=prefix, range_end=_prefix_end(prefix), start_revision=revision + 1, progress_notify=True
        )

        async def requests() -> AsyncIterator[Any]:
            yield rpc.WatchRequest(create_request=create)
            await stop.wait()

        # "hasleader": the member ends the stream if it loses the leader (partitioned), so we move on.
        call = session.watch.Watch(requests(), metadata=(*session.metadata, ("hasleader", "true")))
        reader = asyncio.ensure_future(self._read_stream(topic, session, call))
        retired = asyncio.ensure_future(session.retired.wait())
        try:
            await asyncio.wait({reader, retired}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stop.set()
            call.cancel()
            await cancel_and_wait((reader, retired))
        if not reader.done() or reader.cancelled():
            return  # the session was retired by another call: start over on the next member
        exc = reader.exception()
        if exc is None:
            return
        if isinstance(exc, grpc.aio.AioRpcError):
            problem = f"broke ({exc.code().name})"
        elif isinstance(exc, TimeoutError):
            problem = "was not confirmed in time"
        else:
            raise exc
        self._client.retire(session)
        raise RegistryUnavailableError(f"etcd watch of {name} on {session.endpoint} {problem}")

    async def _read_stream(self, topic: Topic[_Watched], session: Session, call: Any) -> None:
        name, watched = topic.name, topic.state
        first = await asyncio.wait_for(call.read(), self._client.timeout)
        if first is EOF:
            raise RegistryUnavailableError(f"etcd at {session.endpoint} ended the watch of {name} before it started")
        if first.compact_revision or first.canceled:
            log.info(
                "etcd watch of %s could not start at revision %d (%s); reloading",
                name,
                watched.revision + 1,
                f"compacted up to {first.compact_revision}" if first.compact_revision else first.cancel_reason,
            )
            return
        if first.header.revision < watched.revision:
            log.info("etcd at %s is at an older revision than we read (data reset); reloading", session.endpoint)
            return
        topic.healthy()
        while True:
            reply = await call.read()
            if reply is EOF:
                return
            if reply.compact_revision or reply.canceled:
                log.info("etcd ended the watch of %s (%s); reloading", name, reply.cancel_reason or "compacted")
                return
            for event in reply.events:  # none in a progress notification
                key = bytes(event.kv.key)
                instance = None
                if event.type != rpc.Event.DELETE:
                    instance = self._decode(name, key, bytes(event.kv.value), int(event.kv.mod_revision))
                if instance is None:
                    watched.instances.pop(key, None)
                else:
                    watched.instances[key] = instance
                watched.revision = max(watched.revision, int(event.kv.mod_revision))
            if reply.events:
                await topic.publish(watched.snapshot())

    # -- shutdown ---------------------------------------------------------------------

    async def close(self) -> None:
        """Revoke this owner's leases (deleting its keys at once), end watches, disconnect."""
        if self._closed:
            return
        self._closed = True
        for lease in self._leases.values():
            if lease.task is not None:
                lease.task.cancel()  # at once: no keep-alive races the revokes below
        for lease in self._leases.values():
            lease_id = lease.id
            if lease_id is None:
                continue
            try:
                await self._client.call(f"revoking lease {lease_id:x}", lambda s, t: s.revoke(lease_id, t))  # noqa: B023
            except LeaseNotFoundError:
                pass
            except RegistryError as exc:
                log.warning("could not deregister on close (the keys expire after their TTL): %s", exc)
        self._owned.clear()
        await self._hub.close()
        await cancel_and_wait(lease.task for lease in self._leases.values())
        await self._client.close()


def _prefix_end(prefix: bytes) -> bytes:
    return bytes(prefix_range_end(prefix))


def from_url(url: SplitResult, options: dict[str, Any]) -> EtcdRegistry:
    """``etcd://host:port[,host:port...]/prefix``; see :func:`grpcmesh.registry.etcd_url.parse_url`."""
    return EtcdRegistry(**parse_url(url, options))
