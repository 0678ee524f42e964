"""The Consul backend: agent registration as in the original Go design, read back through blocking queries.

Writes go to the local agent (``PUT /v1/agent/service/register`` and
``/v1/agent/service/deregister/:id``) with the original design's fields: ``ID``, ``Name``,
``Tags`` = ``[version]``, ``Address``, ``Port``, ``Meta`` (``endpoints``/``dependencies``
comma-joined, plus the whole instance, see :mod:`.meta`), ``Weights`` and one check:

* ``check=grpc`` (default): the agent probes the instance's ``grpc.health.v1`` endpoint
  (``GRPC`` = ``host:port``, ``GRPCUseTLS`` false, ``Interval`` 10s, ``Timeout`` 5s,
  ``DeregisterCriticalServiceAfter`` 30s). Liveness is Consul's job.
* ``check=ttl``: a TTL check of the registration's ``ttl`` that this registry keeps passing
  (``PUT /v1/agent/check/pass/:check_id`` every ``ttl / 3``), for services without gRPC
  health. A dead owner's check goes critical after the TTL, and Consul deregisters it after
  ``deregister_after`` (Consul enforces at least one minute there).

Owners look after their registrations every ``ttl / 3`` in both modes
(``GET /v1/agent/service/:id``): one deleted by someone else is registered again, and one
now owned by another live registry (its ``grpcmesh-owner`` differs) is reported, not
overwritten. ``deregister`` and ``close`` remove only registrations this registry still owns.

Reads use ``GET /v1/health/service/:name``; watches are blocking-query loops
(:mod:`.watcher`). Check status becomes the instance's health: ``critical`` is
``NOT_SERVING``, ``warning`` is ``UNKNOWN`` and ``passing`` keeps the registered health.

Consul service IDs are unique per agent while grpcmesh ids are unique per service, so the
Consul ``ID`` is ``<name>:<id>`` (names cannot contain ``:``, so it splits unambiguously).
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from typing import Any
from urllib.parse import quote

from grpcmesh._tasks import cancel_and_wait
from grpcmesh.errors import InvalidRecordError, RegistryError
from grpcmesh.model import ServiceInstance, is_service_name
from grpcmesh.registry._hub import Topic, WatchHub
from grpcmesh.registry._warn import WarnOnce
from grpcmesh.registry.base import DEFAULT_TTL, BaseRegistry, Snapshot, check_ttl, sort_snapshot
from grpcmesh.registry.consul.entries import consul_service_id, entry_instance, ttl_check_id
from grpcmesh.registry.consul.meta import encode_meta, owner_of
from grpcmesh.registry.consul.options import ConsulOptions, go_duration
from grpcmesh.registry.consul.transport import REQUEST_TIMEOUT, ConsulHttp, refusal
from grpcmesh.registry.consul.watcher import follow_blocking, index_of

__all__ = ["CONSUL_SERVICE", "ConsulRegistry"]

log = logging.getLogger("grpcmesh.registry.consul")

CONSUL_SERVICE = "consul"  # the servers' own catalog entry, never a mesh service
_CARE_CONCURRENCY = 16


class ConsulRegistry(BaseRegistry):
    """Registry backed by a Consul agent's HTTP API."""

    def __init__(self, options: ConsulOptions | None = None) -> None:
        self.options = options or ConsulOptions()
        self._http = ConsulHttp(self.options, self._ensure_open)
        self._owner = uuid.uuid4().hex
        self._owned: dict[tuple[str, str], tuple[ServiceInstance, float]] = {}
        self._hub: WatchHub[int] = WatchHub("consul", self._load, self._follow, guard=self._check_watch)
        self._care_task: asyncio.Task[None] | None = None
        self._warned = WarnOnce()
        self._contested: set[tuple[str, str]] = set()
        self._failing: set[tuple[str, str]] = set()

    def __repr__(self) -> str:
        return f"ConsulRegistry(address={self.options.address!r}, scheme={self.options.scheme!r})"

    # -- registration -----------------------------------------------------------------

    def registration(self, instance: ServiceInstance, ttl: float) -> dict[str, Any]:
        """The ``/v1/agent/service/register`` body for ``instance`` (public so tests can inspect it)."""
        service_id = consul_service_id(instance)
        body: dict[str, Any] = {
            "ID": service_id,
            "Name": instance.name,
            "Tags": [instance.version] if instance.version else [],
            "Address": instance.address,
            "Port": instance.port,
            "Meta": encode_meta(instance, self._owner),
            "Weights": {"Passing": instance.weight, "Warning": 1},
        }
        if self.options.check == "grpc":
            body["Check"] = {
                "GRPC": instance.target,
                "GRPCUseTLS": False,
                "Interval": go_duration(self.options.check_interval),
                "Timeout": go_duration(self.options.check_timeout),
                "DeregisterCriticalServiceAfter": go_duration(self.options.deregister_after),
            }
        else:
            body["Check"] = {
                "CheckID": ttl_check_id(service_id),
                "Name": f"grpcmesh TTL for {instance.name}",
                "TTL": go_duration(ttl),
                "Status": "passing",
                "DeregisterCriticalServiceAfter": go_duration(self.options.deregister_after),
            }
        return body

    async def register(self, instance: ServiceInstance, *, ttl: float = DEFAULT_TTL) -> None:
        ttl = check_ttl(ttl)
        self._ensure_open()
        await self._put_registration(instance, ttl)
        self._owned[instance.key] = (instance, ttl)
        self._contested.discard(instance.key)
        if self._care_task is None or self._care_task.done():
            self._care_task = asyncio.get_running_loop().create_task(self._care_loop())

    async def _put_registration(self, instance: ServiceInstance, ttl: float) -> None:
        await self._http.call(
            "PUT",
            "/v1/agent/service/register",
            params=self._http.params(read=False, **{"replace-existing-checks": "true"}),
            body=self.registration(instance, ttl),
        )

    async def deregister(self, instance: ServiceInstance) -> None:
        self._ensure_open()
        self._owned.pop(instance.key, None)
        self._contested.discard(instance.key)
        await self._deregister_if_mine(consul_service_id(instance))

    async def _agent_service(self, service_id: str) -> dict[str, Any] | None:
        """The agent's copy of a registration (``None`` when it has none)."""
        path = f"/v1/agent/service/{quote(service_id, safe='')}"
        reply = await self._http.call("GET", path, params=self._http.params(read=False), allow=frozenset({404}))
        return reply.data if reply.status != 404 and isinstance(reply.data, dict) else None

    async def _deregister_if_mine(self, service_id: str) -> None:
        current = await self._agent_service(service_id)
        if current is None:
            return
        owner = owner_of(current.get("Meta"))
        if owner is not None and owner != self._owner:
            log.info("consul: not deregistering %s: another live registry registered it since", service_id)
            return
        path = f"/v1/agent/service/deregister/{quote(service_id, safe='')}"
        await self._http.call("PUT", path, params=self._http.params(read=False), allow=frozenset({404}))

    async def _care_loop(self) -> None:
        """Keep owned registrations alive and ours, every ``ttl / 3``, until none is left."""
        while self._owned and not self._closed:
            await asyncio.sleep(min(ttl for _, ttl in self._owned.values()) / 3)
            gate = asyncio.Semaphore(_CARE_CONCURRENCY)

            async def care(instance: ServiceInstance, ttl: float, gate: asyncio.Semaphore = gate) -> None:
                async with gate:
                    await self._care(instance, ttl)

            await asyncio.gather(*(care(inst, ttl) for inst, ttl in list(self._owned.values())))

    async def _care(self, instance: ServiceInstance, ttl: float) -> None:
        service_id = consul_service_id(instance)
        try:
            current = await self._agent_service(service_id)
            owner = None if current is None else owner_of(current.get("Meta"))
            if owner is not None and owner != self._owner:
                # Another live registry registered this id since: neither overwrite it nor keep
                # its TTL check passing (its owner does that, and must be allowed to die).
                if instance.key not in self._contested:
                    self._contested.add(instance.key)
                    log.warning(
                        "consul: instance id %s of %s has two live owners (this registry and another one "
                        "registered it); leaving it to the other. Give each process its own instance id",
                        instance.id,
                        instance.name,
                    )
                return
            lost = current is None or (self.options.check == "ttl" and not await self._pass(service_id))
            if lost and instance.key in self._owned:
                # Gone although its owner lives: the agent restarted, reaped us after a pause, or
                # someone deregistered it (an old process of a rolling restart). Put it back.
                log.warning("consul lost registration %s/%s; registering it again", instance.name, instance.id)
                self._contested.discard(instance.key)
                await self._put_registration(instance, ttl)
        except Exception as exc:  # never end the loop: the next round retries; logged once per streak
            if instance.key not in self._failing:
                self._failing.add(instance.key)
                log.warning(
                    "consul upkeep of %s/%s failed, retrying every %gs: %s",
                    instance.name,
                    instance.id,
                    ttl / 3,
                    exc,
                    exc_info=not isinstance(exc, RegistryError),
                )
        else:
            if instance.key in self._failing:
                self._failing.discard(instance.key)
                log.info("consul upkeep of %s/%s works again", instance.name, instance.id)

    async def _pass(self, service_id: str) -> bool:
        """Pass the TTL check; False when the agent no longer has it."""
        path = f"/v1/agent/check/pass/{quote(ttl_check_id(service_id), safe='')}"
        reply = await self._http.call("PUT", path, params=self._http.params(read=False), allow=frozenset({404, 500}))
        lost = reply.status == 404 or (reply.status == 500 and "does not have associated TTL" in reply.text)
        if reply.status == 500 and not lost:
            raise refusal("PUT", path, reply.status, reply.text)
        return not lost

    # -- reading ----------------------------------------------------------------------

    async def _health(self, name: str, index: int = 0) -> tuple[Snapshot, int]:
        params = self._http.params(read=True)
        timeout = REQUEST_TIMEOUT
        if index > 0:
            params.update(index=str(index), wait=go_duration(self.options.wait))
            timeout += self.options.wait * 17 / 16  # Consul adds up to wait/16 of jitter
        path = f"/v1/health/service/{quote(name, safe='')}"
        reply = await self._http.call("GET", path, params=params, timeout=timeout)
        if not isinstance(reply.data, list):
            raise RegistryError(
                f"consul answered /v1/health/service/{name} with {type(reply.data).__name__}, expected a list"
            )
        return self._decode_entries(name, reply.data), index_of(reply.headers)

    def _decode_entries(self, name: str, entries: list[Any]) -> Snapshot:
        instances = []
        for entry in entries:
            service = entry.get("Service") if isinstance(entry, dict) else None
            service_id = str(service.get("ID", "?"))[:200] if isinstance(service, dict) else "?"
            try:
                instance = entry_instance(name, entry)
            except InvalidRecordError as exc:
                self._warned.warning(
                    log, (service_id, str(exc)), "skipping bad consul service %r (%s): %s", service_id, name, exc
                )
                continue
            instances.append(instance)
        return sort_snapshot(instances)

    async def get_service(self, name: str) -> list[ServiceInstance]:
        """One non-blocking read of ``/v1/health/service/:name``; health folded in from the checks."""
        self._check_name(name)
        instances, _ = await self._health(name)
        return instances

    async def list_services(self) -> list[str]:
        """Services with at least one usable instance (names holding only bad records are left out)."""
        reply = await self._http.call("GET", "/v1/catalog/services", params=self._http.params(read=True))
        if not isinstance(reply.data, dict):
            raise RegistryError(
                f"consul answered /v1/catalog/services with {type(reply.data).__name__}, expected an object"
            )
        names = sorted(name for name in reply.data if name != CONSUL_SERVICE and is_service_name(name))
        gate = asyncio.Semaphore(_CARE_CONCURRENCY)

        async def read(name: str) -> tuple[Snapshot, int]:
            async with gate:
                return await self._health(name)

        found = await asyncio.gather(*(read(name) for name in names))
        return [name for name, (instances, _) in zip(names, found, strict=True) if instances]

    async def _load(self, name: str) -> tuple[Snapshot, int]:
        """One non-blocking read: the first snapshot and the index a blocking loop continues from."""
        return await self._health(name)

    async def _follow(self, topic: Topic[int]) -> None:
        await follow_blocking(topic, self._health, self.options.watch_rate)

    # -- shutdown ---------------------------------------------------------------------

    async def close(self) -> None:
        if self._closed:
            return
        if self._care_task is not None:
            self._care_task.cancel()  # at once: no upkeep races the deregistrations below
        owned = [consul_service_id(inst) for inst, _ in self._owned.values()]
        self._owned.clear()
        results = await asyncio.gather(*(self._deregister_if_mine(sid) for sid in owned), return_exceptions=True)
        failed = [r for r in results if isinstance(r, BaseException)]
        if failed:
            log.warning(
                "could not deregister %d instance(s) on close (Consul's checks will reap them): %s",
                len(failed),
                failed[0],
            )
        self._closed = True
        await self._hub.close()
        await cancel_and_wait((self._care_task,))
        await self._http.close()
