"""The Consul backend: the seed's agent registration, read back through blocking queries.

Writes go to the local agent (``PUT /v1/agent/service/register`` and
``/v1/agent/service/deregister/:id``) with the seed's fields: ``ID``, ``Name``, ``Tags`` =
``[version]``, ``Address``, ``Port``, ``Meta`` (``endpoints``/``dependencies`` comma-joined, plus
the whole instance, see :mod:`grpcmesh.registry.consul_meta`), ``Weights`` and one check:

* ``check=grpc`` (default, the seed's): the agent probes the instance's ``grpc.health.v1``
  endpoint (``GRPC`` = ``host:port``, ``GRPCUseTLS`` false, ``Interval`` 10s, ``Timeout`` 5s,
  ``DeregisterCriticalServiceAfter`` 30s). Liveness is Consul's job; ``ttl`` is only validated.
* ``check=ttl``: a TTL check of the registration's ``ttl`` that this registry keeps passing
  (``PUT /v1/agent/check/pass/:check_id`` every ``ttl / 3``), for services without gRPC
  health. A dead owner's check goes critical after the TTL, and Consul deregisters it after
  ``deregister_after`` (Consul enforces at least one minute there).

Reads use ``GET /v1/health/service/:name``; watches turn it into a blocking-query loop
following Consul's "Implementation Details": the ``X-Consul-Index`` of each answer is the
next ``index``; an index that goes backwards resets the loop to ``0``; an index below ``1``
is raised to ``1`` so the next query blocks; a token bucket rate-limits the loop when
results churn; errors back off exponentially while watchers keep the last snapshot. Check
status becomes the instance's health: ``critical`` is ``NOT_SERVING``, ``warning`` is
``UNKNOWN`` and ``passing`` keeps the health the instance was registered with.

Consul service IDs are unique per agent while grpcmesh ids are unique per service, so the
Consul ``ID`` is ``<name>:<id>`` (names cannot contain ``:``, so it splits unambiguously).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import ssl
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import SplitResult, quote

import aiohttp

from grpcmesh._tasks import cancel_and_wait
from grpcmesh.config.durations import parse_duration as config_duration
from grpcmesh.errors import ConfigError, InvalidRecordError, RegistryError, RegistryUnavailableError
from grpcmesh.model import HealthStatus, ServiceInstance, is_service_name
from grpcmesh.registry._hub import Topic, WatchHub
from grpcmesh.registry._warn import WarnOnce
from grpcmesh.registry.base import DEFAULT_TTL, BaseRegistry, Snapshot, check_ttl, sort_snapshot
from grpcmesh.registry.consul_meta import SEED_KEYS, decode_meta, encode_meta, has_grpcmesh_record

log = logging.getLogger("grpcmesh.registry.consul")

CheckMode = Literal["grpc", "ttl"]
DEFAULT_ADDRESS = "127.0.0.1:8500"
CONSUL_SERVICE = "consul"  # the servers' own catalog entry, never a mesh service
_REQUEST_TIMEOUT = 10.0
_HEARTBEAT_CONCURRENCY = 16


@dataclass(frozen=True)
class ConsulOptions:
    """Everything ``consul://`` accepts, with the seed's defaults."""

    address: str = DEFAULT_ADDRESS
    scheme: Literal["http", "https"] = "http"
    token: str | None = field(default=None, repr=False)
    datacenter: str | None = None
    namespace: str | None = None
    check: CheckMode = "grpc"
    check_interval: float = 10.0
    check_timeout: float = 5.0
    deregister_after: float = 30.0
    wait: float = 60.0
    """Longest a blocking query waits for a change before Consul answers anyway."""
    watch_rate: float = 10.0
    """Blocking queries per second a churning watch degrades to (token bucket, burst 3)."""
    ca: str | None = None
    cert: str | None = None
    key: str | None = None

    @property
    def base_url(self) -> str:
        return f"{self.scheme}://{self.address}"


@dataclass(frozen=True)
class _Reply:
    status: int
    data: Any
    headers: Mapping[str, str]
    text: str


class ConsulRegistry(BaseRegistry):
    """Registry backed by a Consul agent's HTTP API."""

    def __init__(self, options: ConsulOptions | None = None) -> None:
        self.options = options or ConsulOptions()
        self._ssl = _ssl_context(self.options)
        self._session: aiohttp.ClientSession | None = None
        self._owned: dict[tuple[str, str], tuple[ServiceInstance, float]] = {}
        self._hub: WatchHub[int] = WatchHub("consul", self._load, self._follow, guard=self._check_watch)
        self._heartbeat_task: asyncio.Task[None] | None = None
        self._warned = WarnOnce()

    # -- HTTP plumbing ----------------------------------------------------------------

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None:
            headers = {"X-Consul-Token": self.options.token} if self.options.token else {}
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(ssl=self._ssl if self._ssl is not None else True),
                headers=headers,
            )
        return self._session

    def _params(self, *, read: bool, **extra: str) -> dict[str, str]:
        params = dict(extra)
        if self.options.namespace:
            params["ns"] = self.options.namespace
        if read and self.options.datacenter:
            params["dc"] = self.options.datacenter
        return params

    async def _call(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, str],
        body: Any = None,
        timeout: float = _REQUEST_TIMEOUT,
        allow: frozenset[int] = frozenset(),
    ) -> _Reply:
        """One request, its JSON body decoded (``None`` when empty).

        Raises :class:`RegistryUnavailableError` when the agent cannot be reached or fails
        (5xx), :class:`RegistryError` when it refuses (4xx); statuses in ``allow`` are returned.
        """
        self._ensure_open()
        url = self.options.base_url + path
        try:
            async with self._http().request(
                method, url, params=params, json=body, timeout=aiohttp.ClientTimeout(total=timeout)
            ) as response:
                text = await response.text()
                if response.status >= 400:
                    if response.status in allow:
                        return _Reply(response.status, None, response.headers, text)
                    raise _refusal(method, path, response.status, text)
                data = _json(text, method, path) if text.strip() else None
                return _Reply(response.status, data, response.headers, text)
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise RegistryUnavailableError(
                f"consul agent {self.options.base_url} unreachable ({method} {path}): {exc or type(exc).__name__}"
            ) from exc

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
            "Meta": encode_meta(instance),
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
        if self.options.check == "ttl":
            self._start_heartbeat()

    async def _put_registration(self, instance: ServiceInstance, ttl: float) -> None:
        await self._call(
            "PUT",
            "/v1/agent/service/register",
            params=self._params(read=False, **{"replace-existing-checks": "true"}),
            body=self.registration(instance, ttl),
        )

    async def deregister(self, instance: ServiceInstance) -> None:
        self._ensure_open()
        self._owned.pop(instance.key, None)
        await self._deregister_id(consul_service_id(instance))

    async def _deregister_id(self, service_id: str) -> None:
        path = f"/v1/agent/service/deregister/{quote(service_id, safe='')}"
        await self._call("PUT", path, params=self._params(read=False), allow=frozenset({404}))

    def _start_heartbeat(self) -> None:
        if self._heartbeat_task is None or self._heartbeat_task.done():
            self._heartbeat_task = asyncio.get_running_loop().create_task(self._heartbeat_loop())

    async def _heartbeat_loop(self) -> None:
        while self._owned and not self._closed:
            await asyncio.sleep(min(ttl for _, ttl in self._owned.values()) / 3)
            gate = asyncio.Semaphore(_HEARTBEAT_CONCURRENCY)

            async def beat(instance: ServiceInstance, ttl: float, gate: asyncio.Semaphore = gate) -> None:
                async with gate:
                    await self._pass(instance, ttl)

            await asyncio.gather(*(beat(inst, ttl) for inst, ttl in list(self._owned.values())))

    async def _pass(self, instance: ServiceInstance, ttl: float) -> None:
        check_id = ttl_check_id(consul_service_id(instance))
        path = f"/v1/agent/check/pass/{quote(check_id, safe='')}"
        try:
            reply = await self._call("PUT", path, params=self._params(read=False), allow=frozenset({404, 500}))
            lost = reply.status == 404 or (reply.status == 500 and "does not have associated TTL" in reply.text)
            if reply.status == 500 and not lost:
                raise _refusal("PUT", path, reply.status, reply.text)
            if lost and instance.key in self._owned:
                # The agent forgot the check (agent restart, or we paused past the TTL and it
                # reaped us): register again, as the owner is evidently alive.
                log.warning("consul lost registration %s/%s; registering it again", instance.name, instance.id)
                await self._put_registration(instance, ttl)
        except RegistryError as exc:
            log.warning("consul TTL pass for %s/%s failed, retrying: %s", instance.name, instance.id, exc)

    # -- reading ----------------------------------------------------------------------

    async def _health(self, name: str, *, index: int = 0) -> tuple[list[ServiceInstance], int]:
        params = self._params(read=True)
        timeout = _REQUEST_TIMEOUT
        if index > 0:
            params.update(index=str(index), wait=go_duration(self.options.wait))
            timeout += self.options.wait * 17 / 16  # Consul adds up to wait/16 of jitter
        reply = await self._call("GET", f"/v1/health/service/{quote(name, safe='')}", params=params, timeout=timeout)
        if not isinstance(reply.data, list):
            raise RegistryError(
                f"consul answered /v1/health/service/{name} with {type(reply.data).__name__}, expected a list"
            )
        return self._decode_entries(name, reply.data), _index(reply.headers)

    def _decode_entries(self, name: str, entries: list[Any]) -> list[ServiceInstance]:
        instances = []
        for entry in entries:
            service = entry.get("Service") if isinstance(entry, dict) else None
            service_id = str(service.get("ID", "?")) if isinstance(service, dict) else "?"
            try:
                instance = _entry_instance(name, entry)
            except InvalidRecordError as exc:
                self._warned.warning(
                    log, (service_id, str(exc)), "skipping bad consul service %s (%s): %s", service_id, name, exc
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
        reply = await self._call("GET", "/v1/catalog/services", params=self._params(read=True))
        if not isinstance(reply.data, dict):
            raise RegistryError(
                f"consul answered /v1/catalog/services with {type(reply.data).__name__}, expected an object"
            )
        return sorted(name for name in reply.data if name != CONSUL_SERVICE and is_service_name(name))

    async def _load(self, name: str) -> tuple[Snapshot, int]:
        """One non-blocking read: the first snapshot and the index a blocking loop continues from."""
        return await self._health(name)

    async def _follow(self, topic: Topic[int]) -> None:
        """The blocking-query loop of one watched name (the hub backs off and reloads when it fails)."""
        bucket = TokenBucket(rate=self.options.watch_rate, burst=3)
        index = next_index(0, topic.state)
        while True:
            await bucket.take()
            instances, returned = await self._health(topic.name, index=index)
            topic.healthy()
            await topic.publish(instances)
            if returned < index:
                log.info(
                    "consul index for %s went backwards (%d -> %d); restarting the blocking loop",
                    topic.name,
                    index,
                    returned,
                )
            index = next_index(index, returned)
            topic.state = index

    # -- shutdown ---------------------------------------------------------------------

    async def close(self) -> None:
        if self._closed:
            return
        if self._heartbeat_task is not None:
            self._heartbeat_task.cancel()  # at once: no TTL pass races the deregistrations below
        owned = [consul_service_id(inst) for inst, _ in self._owned.values()]
        self._owned.clear()
        results = await asyncio.gather(*(self._deregister_id(sid) for sid in owned), return_exceptions=True)
        failed = [r for r in results if isinstance(r, BaseException)]
        if failed:
            log.warning(
                "could not deregister %d instance(s) on close (Consul's checks will reap them): %s",
                len(failed),
                failed[0],
            )
        self._closed = True
        await self._hub.close()
        await cancel_and_wait((self._heartbeat_task,))
        if self._session is not None:
            await self._session.close()
            self._session = None


# -- pieces that need no registry ------------------------------------------------------


def consul_service_id(instance: ServiceInstance) -> str:
    """Consul's per-agent unique ``ID`` for ``instance``: ``<name>:<id>``."""
    return f"{instance.name}:{instance.id}"


def ttl_check_id(service_id: str) -> str:
    """The ID Consul itself would give a service's single check."""
    return f"service:{service_id}"


def next_index(previous: int, returned: int) -> int:
    """The ``index`` for the next blocking query, per Consul's blocking-query rules."""
    if returned < previous:
        return 0  # went backwards (snapshot restore, ...): restart the loop with a fresh read
    return max(returned, 1)  # an index below 1 would not block: guard against a busy loop


class TokenBucket:
    """Lets ``burst`` queries through at once, then at most ``rate`` per second.

    Consul's docs recommend this over a sleep per loop: in the happy case a change is
    delivered without delay, and only a churning result degrades into polling.
    """

    def __init__(self, rate: float, burst: int) -> None:
        self.rate = rate
        self.burst = burst
        self._tokens = float(burst)
        self._stamp = time.monotonic()

    async def take(self) -> None:
        now = time.monotonic()
        self._tokens = min(self.burst, self._tokens + (now - self._stamp) * self.rate)
        self._stamp = now
        if self._tokens < 1:
            await asyncio.sleep((1 - self._tokens) / self.rate)
            self._tokens = 1.0
            self._stamp = time.monotonic()
        self._tokens -= 1


def health_from_checks(registered: HealthStatus, checks: Any) -> HealthStatus:
    """Worst of the registered health and every check on the entry (service and node checks)."""
    statuses = {str(c.get("Status", "")) for c in checks if isinstance(c, dict)} if isinstance(checks, list) else set()
    if "critical" in statuses:  # maintenance mode is a critical check too
        return HealthStatus.NOT_SERVING
    if "warning" in statuses and registered is HealthStatus.SERVING:
        return HealthStatus.UNKNOWN
    return registered


def _entry_instance(name: str, entry: Any) -> ServiceInstance:
    """Turn one ``/v1/health/service`` entry into an instance, checking it is what it claims."""
    if not isinstance(entry, dict) or not isinstance(entry.get("Service"), dict):
        raise InvalidRecordError("entry has no Service object")
    service = entry["Service"]
    meta = service.get("Meta") or {}
    if not isinstance(meta, dict):
        raise InvalidRecordError("Service.Meta is not an object")
    instance = decode_meta(meta) if has_grpcmesh_record(meta) else _foreign_instance(entry, service, meta)
    if instance.name != name or service.get("Service") != name:
        raise InvalidRecordError(f"record is for service {instance.name!r}, listed under {name!r}")
    if has_grpcmesh_record(meta) and service.get("ID") != consul_service_id(instance):
        raise InvalidRecordError(f"record is for {consul_service_id(instance)!r}, stored as {service.get('ID')!r}")
    return instance.replace(health=health_from_checks(instance.health, entry.get("Checks")))


def _foreign_instance(entry: dict[str, Any], service: dict[str, Any], meta: dict[str, Any]) -> ServiceInstance:
    """Best effort for services registered by other tools (e.g. the seed's Go code)."""
    node = entry.get("Node") if isinstance(entry.get("Node"), dict) else None
    tags = service.get("Tags") or []
    weights = service.get("Weights") or {}

    def split(key: str) -> tuple[str, ...]:
        value = meta.get(key)
        return tuple(part for part in value.split(",") if part) if isinstance(value, str) else ()

    try:
        return ServiceInstance(
            name=service.get("Service"),
            id=service.get("ID"),
            address=service.get("Address") or (node or {}).get("Address"),
            port=service.get("Port"),
            version=tags[0] if tags and isinstance(tags[0], str) else "",
            metadata={k: v for k, v in meta.items() if k not in SEED_KEYS and isinstance(v, str)},
            endpoints=split("endpoints"),
            dependencies=split("dependencies"),
            weight=weights.get("Passing", 1) if isinstance(weights, dict) else 1,
        )
    except (ValueError, TypeError) as exc:
        raise InvalidRecordError(f"not a usable service instance: {exc}") from None


def _index(headers: Mapping[str, str]) -> int:
    try:
        return int(headers.get("X-Consul-Index", "0"))
    except ValueError:
        return 0


def _json(text: str, method: str, path: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        raise RegistryError(
            f"consul answered {method} {path} with something that is not JSON: {text[:200]!r}"
        ) from None


def _refusal(method: str, path: str, status: int, text: str) -> RegistryError:
    detail = text.strip()[:300] or "(empty body)"
    if status in (401, 403):
        return RegistryError(
            f"consul refused {method} {path} ({status}: {detail}); give a token with the needed ACL "
            "(registry option token=... or CONSUL_HTTP_TOKEN)"
        )
    if status >= 500:
        return RegistryUnavailableError(f"consul failed {method} {path} ({status}: {detail})")
    return RegistryError(f"consul refused {method} {path} ({status}: {detail})")


def _ssl_context(options: ConsulOptions) -> ssl.SSLContext | None:
    """Built once, at construction, so no certificate file is read on the event loop."""
    if options.scheme != "https":
        return None
    context = ssl.create_default_context(cafile=options.ca)
    if options.cert:
        context.load_cert_chain(options.cert, options.key)
    return context


# -- durations and the URL ---------------------------------------------------------------


def go_duration(seconds: float) -> str:
    """Seconds as a Go duration string, the form Consul parses: ``10s``, ``500ms``."""
    millis = round(seconds * 1000)
    return f"{millis // 1000}s" if millis % 1000 == 0 else f"{millis}ms"


def parse_duration(key: str, value: Any) -> float:
    """A duration option as the configuration writes it (``10s``, ``500ms``, ``1m30s`` or seconds); errors name it."""
    try:
        seconds = config_duration(value)
    except ValueError as exc:
        raise ConfigError(f"registry: consul option {key}: {exc}") from None
    if not seconds > 0:
        raise ConfigError(f"registry: consul option {key} must be longer than zero")
    return seconds


_KNOWN_OPTIONS = {
    "token",
    "scheme",
    "ca",
    "cert",
    "key",
    "dc",
    "ns",
    "check",
    "check_interval",
    "check_timeout",
    "deregister_after",
    "wait",
    "watch_rate",
}


def from_url(url: SplitResult, options: dict[str, Any]) -> ConsulRegistry:
    """``consul://host:port`` (default ``127.0.0.1:8500``) with options.

    ``token`` (else ``CONSUL_HTTP_TOKEN``), ``scheme=https`` with ``ca``/``cert``/``key`` files,
    ``dc``, ``ns``, ``check=grpc|ttl``, ``check_interval``, ``check_timeout``,
    ``deregister_after``, ``wait`` (durations like ``10s``) and ``watch_rate`` (per second).
    """
    unknown = sorted(set(options) - _KNOWN_OPTIONS)
    if unknown:
        raise ConfigError(f"registry: consul:// does not take option(s) {unknown}; it takes {sorted(_KNOWN_OPTIONS)}")
    if url.path not in ("", "/"):
        raise ConfigError(f"registry: consul URL has path {url.path!r}; write consul://host:port")
    scheme = str(options.get("scheme", "http"))
    if scheme not in ("http", "https"):
        raise ConfigError(f"registry: scheme={scheme!r}; use http or https")
    check = str(options.get("check", "grpc"))
    if check not in ("grpc", "ttl"):
        raise ConfigError(f"registry: check={check!r}; use grpc (the agent probes grpc.health.v1) or ttl")
    if ("cert" in options) != ("key" in options):
        raise ConfigError("registry: give both cert and key (client certificate and its private key) or neither")
    for tls_option in ("ca", "cert", "key"):
        if tls_option in options and scheme != "https":
            raise ConfigError(f"registry: {tls_option} only applies with scheme=https")
    try:
        watch_rate = float(options.get("watch_rate", 10.0))
    except ValueError:
        raise ConfigError(f"registry: watch_rate={options['watch_rate']!r} is not a number per second") from None
    if not watch_rate > 0:
        raise ConfigError("registry: watch_rate must be above zero")
    wait = parse_duration("wait", options.get("wait", 60.0))
    if wait > 600:
        raise ConfigError("registry: wait is at most 10m (Consul's limit for blocking queries)")
    token = options.get("token") or os.environ.get("CONSUL_HTTP_TOKEN") or None
    return ConsulRegistry(
        ConsulOptions(
            address=url.netloc or DEFAULT_ADDRESS,
            scheme="https" if scheme == "https" else "http",
            token=str(token) if token else None,
            datacenter=options.get("dc") or None,
            namespace=options.get("ns") or None,
            check="ttl" if check == "ttl" else "grpc",
            check_interval=parse_duration("check_interval", options.get("check_interval", 10.0)),
            check_timeout=parse_duration("check_timeout", options.get("check_timeout", 5.0)),
            deregister_after=parse_duration("deregister_after", options.get("deregister_after", 30.0)),
            wait=wait,
            watch_rate=watch_rate,
            ca=options.get("ca"),
            cert=options.get("cert"),
            key=options.get("key"),
        )
    )
