"""A stand-in for the part of Consul's HTTP API that ``grpcmesh.registry.consul`` uses.

No Consul binary can be installed where these tests run, so this small aiohttp server plays
one Consul agent (node ``standin`` in datacenter ``dc1``) and follows the request and
response shapes of Consul's API documentation:

* ``PUT /v1/agent/service/register`` (with ``replace-existing-checks``), validated like
  Consul does: ``Name`` required, ``Meta`` limits (64 pairs, keys ``[A-Za-z0-9_-]`` of at most
  128 characters without the ``consul-`` prefix, values of at most 512 bytes), positive
  ``Weights``, Go-style durations. Stricter than Consul: unknown fields are refused with 400,
  and only ``TTL`` and ``GRPC`` checks exist (the only kinds grpcmesh registers).
* ``GET /v1/agent/service/:service_id`` (the agent's copy of one registration, 404 if unknown),
  ``PUT /v1/agent/service/deregister/:service_id``, ``PUT /v1/agent/check/pass/:check_id``
  (a pass for an unknown check fails with 500 "does not have associated TTL", like the agent).
* ``GET /v1/health/service/:service`` (entries of ``Node``, ``Service``, ``Checks``, the node's
  ``serfHealth`` check included) and ``GET /v1/catalog/services`` (always listing ``consul``),
  both with blocking queries: ``index`` and ``wait`` (default 5m, at most 10m, plus up to
  ``wait/16`` of jitter), answering with ``X-Consul-Index``; an ``index`` at or above the
  current one hangs until a change touches the result or the wait ends.
* ``dc`` (anything but ``dc1`` fails with 500 "No path to datacenter"), ``ns`` (or the
  ``X-Consul-Namespace`` header, or the body's ``Namespace``: data is kept per namespace, as
  in Consul Enterprise) and ``X-Consul-Token`` (when started with a token, anything else gets
  403, compared in constant time).

Health checks: TTL checks start with the registered ``Status`` (default ``critical``, as in
Consul) and turn ``critical`` when their TTL passes without a pass. GRPC checks are probed for
real with ``grpc.health.v1.Health/Check`` every ``Interval`` (first probe at once, not
staggered as Consul does). A service whose check stays critical for
``DeregisterCriticalServiceAfter`` is deregistered. Unlike Consul, the stand-in honours
values under one minute and reaps every 50 ms instead of every 30 s, so tests of owner death
run in seconds.

Test hooks (thread-safe; the server runs on its own thread and event loop, so sync test code
can call them): :meth:`ConsulStandIn.rewind_index` (a raft snapshot restore: every index goes
back, blocked queries wake up), :meth:`set_check_status`, :meth:`fail_reads`, and
:attr:`requests`, a log of every request received. Run ``python -m tests.registry.consul_standin
--port 8500`` to use it by hand.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hmac
import json
import random
import re
import socket
import ssl
import threading
import time
import uuid
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, TypeVar

import grpc
from aiohttp import web
from grpc_health.v1 import health_pb2, health_pb2_grpc

T = TypeVar("T")

NODE = "standin"
DATACENTER = "dc1"
DEFAULT_NAMESPACE = "default"
MAX_WAIT = 600.0
DEFAULT_WAIT = 300.0

_SERVICE_FIELDS = {
    "ID",
    "Name",
    "Tags",
    "Address",
    "TaggedAddresses",
    "Meta",
    "Namespace",
    "Port",
    "Kind",
    "Proxy",
    "Connect",
    "Check",
    "Checks",
    "EnableTagOverride",
    "Weights",
}
_CHECK_FIELDS = {
    "CheckID",
    "ID",
    "Name",
    "Notes",
    "Status",
    "TTL",
    "GRPC",
    "GRPCUseTLS",
    "Interval",
    "Timeout",
    "DeregisterCriticalServiceAfter",
    "TLSServerName",
    "TLSSkipVerify",
    "SuccessBeforePassing",
    "FailuresBeforeCritical",
    "OutputMaxSize",
}
_UNIMPLEMENTED_CHECKS = {"HTTP", "TCP", "UDP", "Args", "ScriptArgs", "H2PING", "DockerContainerID", "AliasService"}
_STATUSES = ("passing", "warning", "critical")
_META_KEY_RE = re.compile(r"^[a-zA-Z0-9_-]+$")
_DURATION_PART_RE = re.compile(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)")
_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


class BadRequest(Exception):
    """Answered with 400 and the message as plain text, as Consul does."""


def parse_go_duration(text: Any, what: str) -> float:
    """Go's ``time.ParseDuration`` for the forms Consul accepts (``10s``, ``1m30s``, ``500ms``)."""
    if not isinstance(text, str):
        raise BadRequest(f"Request decode failed: {what}: expected a duration string, got {text!r}")
    if text in ("0", ""):
        return 0.0
    parts = _DURATION_PART_RE.findall(text)
    if not parts or "".join(n + u for n, u in parts) != text:
        raise BadRequest(f'Request decode failed: {what}: time: invalid duration "{text}"')
    return sum(float(n) * _UNITS[u] for n, u in parts)


@dataclass
class RecordedRequest:
    method: str
    path: str
    query: dict[str, str]
    body: Any
    token_sent: bool
    at: float
    """``time.monotonic()`` when the request arrived."""


@dataclass
class _Check:
    check_id: str
    name: str
    service_id: str
    status: str
    definition: dict[str, Any]
    ttl: float | None = None
    grpc_target: str | None = None
    grpc_service: str = ""
    grpc_use_tls: bool = False
    interval: float = 0.0
    timeout: float = 10.0
    deregister_after: float | None = None
    notes: str = ""
    output: str = ""
    deadline: float = 0.0
    critical_since: float | None = None
    create_index: int = 0
    modify_index: int = 0
    probe: asyncio.Task[None] | None = None


@dataclass
class _Service:
    namespace: str
    service_id: str
    name: str
    tags: list[str]
    address: str
    port: int
    meta: dict[str, str]
    weights: dict[str, int]
    enable_tag_override: bool
    create_index: int
    modify_index: int
    checks: dict[str, _Check] = field(default_factory=dict)


class ConsulStandIn:
    """One fake Consul agent on 127.0.0.1, served from its own thread."""

    def __init__(
        self,
        *,
        token: str | None = None,
        ssl_context: ssl.SSLContext | None = None,
        reap_interval: float = 0.05,
        port: int = 0,
    ) -> None:
        self.token = token
        self.ssl_context = ssl_context
        self.reap_interval = reap_interval
        self.node_id = str(uuid.uuid4())
        self.requests: list[RecordedRequest] = []
        self.port = port
        self._services: dict[tuple[str, str], _Service] = {}
        self._index = 100
        self._default_index = 1
        self._name_index: dict[tuple[str, str], int] = {}
        self._catalog_index: dict[str, int] = {}
        self._epoch = 0
        self._wakeup: asyncio.Event | None = None
        self._failing_reads: tuple[int, int] = (0, 500)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None
        self._reaper: asyncio.Task[None] | None = None

    # -- lifecycle (called from the test's thread) --------------------------------------

    @property
    def url(self) -> str:
        return f"{'https' if self.ssl_context else 'http'}://127.0.0.1:{self.port}"

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> ConsulStandIn:
        ready = threading.Event()
        self._loop = asyncio.new_event_loop()

        def serve() -> None:
            assert self._loop is not None
            asyncio.set_event_loop(self._loop)
            self._loop.run_until_complete(self._start_server())
            ready.set()
            self._loop.run_forever()
            self._loop.run_until_complete(self._stop_server())
            self._loop.close()

        self._thread = threading.Thread(target=serve, name="consul-standin", daemon=True)
        self._thread.start()
        if not ready.wait(10):
            raise RuntimeError("consul stand-in did not start within 10 s")
        return self

    def stop(self) -> None:
        if self._loop is None or self._thread is None:
            return
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop = None
        self._thread = None

    def __enter__(self) -> ConsulStandIn:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _call(self, make: Callable[[], Coroutine[Any, Any, T]]) -> T:
        assert self._loop is not None, "stand-in is not running"
        return asyncio.run_coroutine_threadsafe(make(), self._loop).result(10)

    # -- test hooks ---------------------------------------------------------------------

    def rewind_index(self, to: int) -> None:
        """Simulate a snapshot restore: every index drops to at most ``to``; blocked queries return."""

        async def rewind() -> None:
            self._index = to
            self._default_index = min(self._default_index, to)
            for key, value in self._name_index.items():
                self._name_index[key] = min(value, to)
            for namespace, value in self._catalog_index.items():
                self._catalog_index[namespace] = min(value, to)
            self._epoch += 1
            self._wake()

        self._call(rewind)

    def set_check_status(self, service_id: str, status: str, namespace: str = DEFAULT_NAMESPACE) -> None:
        """Force every check of a service to ``status`` (as a failing probe would)."""

        async def force() -> None:
            service = self._services[(namespace, service_id)]
            for check in service.checks.values():
                self._set_status(service, check, status, "set by test")

        self._call(force)

    def fail_reads(self, count: int, status: int = 500) -> None:
        """Make the next ``count`` GET requests fail with ``status`` (an unavailable server)."""

        async def arm() -> None:
            self._failing_reads = (count, status)

        self._call(arm)

    def service_ids(self, namespace: str = DEFAULT_NAMESPACE) -> list[str]:
        async def ids() -> list[str]:
            return sorted(sid for ns, sid in self._services if ns == namespace)

        return self._call(ids)

    # -- server -------------------------------------------------------------------------

    async def _start_server(self) -> None:
        self._wakeup = asyncio.Event()
        app = web.Application(middlewares=[self._middleware])
        app.router.add_put("/v1/agent/service/register", self._register)
        app.router.add_put("/v1/agent/service/deregister/{service_id}", self._deregister)
        app.router.add_put("/v1/agent/check/pass/{check_id}", self._pass)
        app.router.add_get("/v1/agent/service/{service_id}", self._agent_service)
        app.router.add_get("/v1/health/service/{service}", self._health_service)
        app.router.add_get("/v1/catalog/services", self._catalog_services)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=1.0)
        await self._runner.setup()
        sock = socket.socket()
        sock.bind(("127.0.0.1", self.port))
        self.port = sock.getsockname()[1]
        await web.SockSite(self._runner, sock, ssl_context=self.ssl_context).start()
        self._reaper = asyncio.get_running_loop().create_task(self._reap_loop())

    async def _stop_server(self) -> None:
        self._epoch += 1
        self._wake()
        tasks = [c.probe for s in self._services.values() for c in s.checks.values() if c.probe is not None]
        if self._reaper is not None:
            tasks.append(self._reaper)
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if self._runner is not None:
            await self._runner.cleanup()

    @web.middleware
    async def _middleware(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        body: Any = None
        if request.can_read_body:
            raw = await request.text()
            try:
                body = json.loads(raw) if raw.strip() else None
            except ValueError as exc:
                return web.Response(status=400, text=f"Request decode failed: {exc}")
        sent = request.headers.get("X-Consul-Token")
        self.requests.append(
            RecordedRequest(request.method, request.path, dict(request.query), body, sent is not None, time.monotonic())
        )
        if self.token is not None:
            if sent is None:
                return web.Response(status=403, text="Permission denied: anonymous token lacks permission")
            if not hmac.compare_digest(sent.encode(), self.token.encode()):
                return web.Response(status=403, text="ACL not found")
        if request.method == "GET" and self._failing_reads[0] > 0:
            count, status = self._failing_reads
            self._failing_reads = (count - 1, status)
            return web.Response(status=status, text="rpc error making call: No cluster leader")
        try:
            return await handler(request)
        except BadRequest as exc:
            return web.Response(status=400, text=str(exc))

    @staticmethod
    def _namespace(request: web.Request, body: Any = None) -> str:
        if isinstance(body, dict) and body.get("Namespace"):
            return str(body["Namespace"])
        return request.query.get("ns") or request.headers.get("X-Consul-Namespace") or DEFAULT_NAMESPACE

    @staticmethod
    def _check_datacenter(request: web.Request) -> web.Response | None:
        dc = request.query.get("dc")
        if dc and dc != DATACENTER:
            return web.Response(status=500, text="No path to datacenter")
        return None

    # -- index bookkeeping ----------------------------------------------------------------

    def _wake(self) -> None:
        assert self._wakeup is not None
        self._wakeup.set()
        self._wakeup = asyncio.Event()

    def _bump(self, namespace: str, *names: str) -> int:
        self._index += 1
        for name in names:
            self._name_index[(namespace, name)] = self._index
        self._catalog_index[namespace] = self._index
        self._wake()
        return self._index

    async def _block(self, request: web.Request, current: Callable[[], int]) -> None:
        """Hang while the result's index is at most the client's ``index`` (Consul's blocking query)."""
        raw_index = request.query.get("index", "0")
        if not raw_index.isdigit():
            raise BadRequest(f"Invalid index: {raw_index!r}")
        index = int(raw_index)
        if index <= 0:
            return
        wait = parse_go_duration(request.query["wait"], "wait") if "wait" in request.query else DEFAULT_WAIT
        wait = min(wait, MAX_WAIT) if wait > 0 else DEFAULT_WAIT
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait + random.uniform(0, wait / 16)
        epoch = self._epoch
        while current() <= index and self._epoch == epoch:
            remaining = deadline - loop.time()
            if remaining <= 0:
                return
            assert self._wakeup is not None
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wakeup.wait(), remaining)

    @staticmethod
    def _json_response(data: Any, index: int) -> web.Response:
        return web.json_response(
            data,
            headers={"X-Consul-Index": str(index), "X-Consul-KnownLeader": "true", "X-Consul-LastContact": "0"},
        )

    # -- agent endpoints ------------------------------------------------------------------

    async def _register(self, request: web.Request) -> web.Response:
        body = json.loads(await request.text())  # the middleware already refused bodies that are not JSON
        if not isinstance(body, dict):
            raise BadRequest("Request decode failed: body must be a JSON object")
        unknown = sorted(set(body) - _SERVICE_FIELDS)
        if unknown:
            raise BadRequest(f"Request decode failed: stand-in refuses unknown field(s) {unknown}")
        name = body.get("Name")
        if not isinstance(name, str) or not name:
            raise BadRequest("Missing service name")
        namespace = self._namespace(request, body)
        service_id = body.get("ID") or name
        meta = body.get("Meta") or {}
        _validate_meta(meta)
        weights = body.get("Weights") or {"Passing": 1, "Warning": 1}
        if not isinstance(weights, dict) or set(weights) - {"Passing", "Warning"}:
            raise BadRequest("Request decode failed: Weights takes Passing and Warning")
        if not isinstance(weights.get("Passing", 1), int) or weights.get("Passing", 1) < 1:
            raise BadRequest("Passing must be greater than 0")
        if not isinstance(weights.get("Warning", 1), int) or weights.get("Warning", 1) < 0:
            raise BadRequest("Warning must be greater or equal than 0")
        port = body.get("Port", 0)
        if not isinstance(port, int) or isinstance(port, bool):
            raise BadRequest(f"Request decode failed: Port: expected a number, got {port!r}")
        tags = body.get("Tags") or []
        if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
            raise BadRequest("Request decode failed: Tags must be a list of strings")
        definitions = ([body["Check"]] if body.get("Check") else []) + list(body.get("Checks") or [])
        key = (namespace, service_id)
        old = self._services.get(key)
        index = self._index + 1
        service = _Service(
            namespace=namespace,
            service_id=service_id,
            name=name,
            tags=tags,
            address=str(body.get("Address") or ""),
            port=port,
            meta=dict(meta),
            weights={"Passing": weights.get("Passing", 1), "Warning": weights.get("Warning", 1)},
            enable_tag_override=bool(body.get("EnableTagOverride", False)),
            create_index=old.create_index if old else index,
            modify_index=index,
        )
        now = asyncio.get_running_loop().time()
        for position, definition in enumerate(definitions):
            check = self._parse_check(definition, service, position, len(definitions), now)
            check.create_index = check.modify_index = index
            service.checks[check.check_id] = check
        if old is not None:
            keep_old = "replace-existing-checks" not in request.query
            for check_id, check in old.checks.items():
                if check_id not in service.checks and keep_old:
                    service.checks[check_id] = check
                elif check.probe is not None:
                    check.probe.cancel()
        self._services[key] = service
        for check in service.checks.values():
            if check.grpc_target is not None and (check.probe is None or check.probe.done()):
                check.probe = asyncio.get_running_loop().create_task(self._probe_loop(service, check))
        self._bump(namespace, name, *([old.name] if old and old.name != name else []))
        return web.Response(status=200)

    def _parse_check(self, definition: Any, service: _Service, position: int, count: int, now: float) -> _Check:
        if not isinstance(definition, dict):
            raise BadRequest("Request decode failed: Check must be an object")
        unknown = sorted(set(definition) - _CHECK_FIELDS - _UNIMPLEMENTED_CHECKS)
        if unknown:
            raise BadRequest(f"Request decode failed: stand-in refuses unknown check field(s) {unknown}")
        if set(definition) & _UNIMPLEMENTED_CHECKS:
            raise BadRequest("stand-in implements only TTL and GRPC checks")
        has_ttl, has_grpc = "TTL" in definition, "GRPC" in definition
        if has_ttl == has_grpc:
            raise BadRequest("Invalid check: must define exactly one of TTL or GRPC (stand-in)")
        default_id = f"service:{service.service_id}" + (f":{position + 1}" if count > 1 else "")
        status = definition.get("Status") or "critical"
        if status not in _STATUSES:
            raise BadRequest(f"Invalid check status: {status!r}")
        check = _Check(
            check_id=str(definition.get("CheckID") or definition.get("ID") or default_id),
            name=str(definition.get("Name") or f"Service '{service.name}' check"),
            service_id=service.service_id,
            status=status,
            notes=str(definition.get("Notes") or ""),
            definition=dict(definition),
            critical_since=now if status == "critical" else None,
        )
        if "DeregisterCriticalServiceAfter" in definition:
            after = parse_go_duration(definition["DeregisterCriticalServiceAfter"], "DeregisterCriticalServiceAfter")
            check.deregister_after = after if after > 0 else None
        if has_ttl:
            check.ttl = parse_go_duration(definition["TTL"], "TTL")
            if check.ttl <= 0:
                raise BadRequest("TTL must be > 0 for TTL checks")
            check.deadline = now + check.ttl
        else:
            target = definition["GRPC"]
            if not isinstance(target, str) or not target:
                raise BadRequest("Request decode failed: GRPC must be host:port[/service]")
            check.grpc_target, _, check.grpc_service = target.partition("/")
            check.grpc_use_tls = bool(definition.get("GRPCUseTLS", False))
            check.interval = parse_go_duration(definition.get("Interval", ""), "Interval")
            if check.interval <= 0:
                raise BadRequest("Interval must be > 0 for Script, HTTP, H2PING, TCP, UDP or GRPC checks")
            if "Timeout" in definition:
                check.timeout = parse_go_duration(definition["Timeout"], "Timeout")
        return check

    async def _deregister(self, request: web.Request) -> web.Response:
        service = self._services.pop((self._namespace(request), request.match_info["service_id"]), None)
        if service is not None:
            self._forget(service)
        return web.Response(status=200)

    def _forget(self, service: _Service) -> None:
        for check in service.checks.values():
            if check.probe is not None:
                check.probe.cancel()
        self._bump(service.namespace, service.name)

    async def _pass(self, request: web.Request) -> web.Response:
        namespace, check_id = self._namespace(request), request.match_info["check_id"]
        for service in self._services.values():
            check = service.checks.get(check_id)
            if service.namespace == namespace and check is not None and check.ttl is not None:
                check.deadline = asyncio.get_running_loop().time() + check.ttl
                self._set_status(service, check, "passing", request.query.get("note", ""))
                return web.Response(status=200)
        return web.Response(status=500, text=f'CheckID "{check_id}" does not have associated TTL')

    def _set_status(self, service: _Service, check: _Check, status: str, output: str) -> None:
        """Change a check; only a status change moves the index (output is not synced eagerly)."""
        check.output = output
        if check.status == status:
            return
        check.status = status
        check.critical_since = asyncio.get_running_loop().time() if status == "critical" else None
        check.modify_index = self._bump(service.namespace, service.name)

    async def _probe_loop(self, service: _Service, check: _Check) -> None:
        assert check.grpc_target is not None
        loop = asyncio.get_running_loop()
        while True:
            status, output = await loop.run_in_executor(
                None, _probe_grpc, check.grpc_target, check.grpc_service, check.grpc_use_tls, check.timeout
            )
            if self._services.get((service.namespace, service.service_id)) is not service:
                return
            self._set_status(service, check, status, output)
            await asyncio.sleep(check.interval)

    async def _reap_loop(self) -> None:
        while True:
            await asyncio.sleep(self.reap_interval)
            now = asyncio.get_running_loop().time()
            for service in list(self._services.values()):
                for check in service.checks.values():
                    if check.ttl is not None and check.status != "critical" and now >= check.deadline:
                        self._set_status(service, check, "critical", "TTL expired")
                if any(
                    c.deregister_after is not None
                    and c.critical_since is not None
                    and now - c.critical_since >= c.deregister_after
                    for c in service.checks.values()
                ):
                    del self._services[(service.namespace, service.service_id)]
                    self._forget(service)

    # -- read endpoints -------------------------------------------------------------------

    async def _agent_service(self, request: web.Request) -> web.Response:
        """``GET /v1/agent/service/:service_id``: the agent's copy of one registration (404 if unknown)."""
        service_id = request.match_info["service_id"]
        service = self._services.get((self._namespace(request), service_id))
        if service is None:
            return web.Response(status=404, text=f"unknown service ID: {service_id}")
        return web.json_response(
            {
                "ID": service.service_id,
                "Service": service.name,
                "Tags": list(service.tags),
                "Meta": dict(service.meta),
                "Port": service.port,
                "Address": service.address,
                "Weights": dict(service.weights),
                "EnableTagOverride": service.enable_tag_override,
                "Datacenter": DATACENTER,
                "ContentHash": f"{service.modify_index:016x}",
            }
        )

    async def _health_service(self, request: web.Request) -> web.Response:
        refused = self._check_datacenter(request)
        if refused is not None:
            return refused
        namespace, name = self._namespace(request), request.match_info["service"]

        def current() -> int:
            return self._name_index.get((namespace, name), self._default_index)

        await self._block(request, current)
        entries = [
            self._entry(service)
            for service in sorted(self._services.values(), key=lambda s: s.service_id)
            if service.namespace == namespace and service.name == name
        ]
        return self._json_response(entries, current())

    async def _catalog_services(self, request: web.Request) -> web.Response:
        refused = self._check_datacenter(request)
        if refused is not None:
            return refused
        namespace = self._namespace(request)

        def current() -> int:
            return self._catalog_index.get(namespace, self._default_index)

        await self._block(request, current)
        listing: dict[str, set[str]] = {"consul": set()} if namespace == DEFAULT_NAMESPACE else {}
        for service in self._services.values():
            if service.namespace == namespace:
                listing.setdefault(service.name, set()).update(service.tags)
        return self._json_response({name: sorted(tags) for name, tags in sorted(listing.items())}, current())

    def _node(self) -> dict[str, Any]:
        return {
            "ID": self.node_id,
            "Node": NODE,
            "Address": "127.0.0.1",
            "Datacenter": DATACENTER,
            "TaggedAddresses": {"lan": "127.0.0.1", "wan": "127.0.0.1"},
            "Meta": {"consul-network-segment": ""},
            "CreateIndex": 5,
            "ModifyIndex": 5,
        }

    def _entry(self, service: _Service) -> dict[str, Any]:
        serf = {
            "Node": NODE,
            "CheckID": "serfHealth",
            "Name": "Serf Health Status",
            "Status": "passing",
            "Notes": "",
            "Output": "Agent alive and reachable",
            "ServiceID": "",
            "ServiceName": "",
            "ServiceTags": [],
            "Type": "",
            "Namespace": service.namespace,
            "CreateIndex": 5,
            "ModifyIndex": 5,
        }
        checks = [
            {
                "Node": NODE,
                "CheckID": c.check_id,
                "Name": c.name,
                "Status": c.status,
                "Notes": c.notes,
                "Output": c.output,
                "ServiceID": service.service_id,
                "ServiceName": service.name,
                "ServiceTags": list(service.tags),
                "Type": "ttl" if c.ttl is not None else "grpc",
                "Namespace": service.namespace,
                "Definition": c.definition,
                "CreateIndex": c.create_index,
                "ModifyIndex": c.modify_index,
            }
            for c in service.checks.values()
        ]
        return {
            "Node": self._node(),
            "Service": {
                "ID": service.service_id,
                "Service": service.name,
                "Tags": list(service.tags),
                "Address": service.address,
                "TaggedAddresses": {},
                "Meta": dict(service.meta),
                "Port": service.port,
                "Weights": dict(service.weights),
                "EnableTagOverride": service.enable_tag_override,
                "Namespace": service.namespace,
                "CreateIndex": service.create_index,
                "ModifyIndex": service.modify_index,
            },
            "Checks": [serf, *checks],
        }


def _validate_meta(meta: Any) -> None:
    """Consul's ``validateMetaPair`` rules, written out independently of the client's encoder."""
    if not isinstance(meta, dict):
        raise BadRequest("Request decode failed: Meta must be an object of strings")
    if len(meta) > 64:
        raise BadRequest("Invalid Service Meta: Node metadata cannot contain more than 64 key/value pairs")
    for key, value in meta.items():
        if not _META_KEY_RE.match(key):
            raise BadRequest(f"Invalid Service Meta: Key {key!r} contains invalid characters")
        if len(key) > 128:
            raise BadRequest("Invalid Service Meta: Key is too long (limit: 128 characters)")
        if key.startswith("consul-"):
            raise BadRequest('Invalid Service Meta: Key prefix "consul-" is reserved for internal use')
        if not isinstance(value, str):
            raise BadRequest(f"Request decode failed: Meta[{key!r}] must be a string")
        if len(value.encode()) > 512:
            raise BadRequest("Invalid Service Meta: Value is too long (limit: 512 characters)")


def _probe_grpc(target: str, service: str, use_tls: bool, timeout: float) -> tuple[str, str]:
    """One ``grpc.health.v1`` probe, as Consul's GRPC check does; runs on a worker thread."""
    credentials = grpc.ssl_channel_credentials() if use_tls else None
    channel = grpc.secure_channel(target, credentials) if credentials else grpc.insecure_channel(target)
    try:
        reply = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service=service), timeout=timeout
        )
    except grpc.RpcError as exc:
        return "critical", f"gRPC probe {target} failed: {exc.code()}"
    finally:
        channel.close()
    if reply.status == health_pb2.HealthCheckResponse.SERVING:
        return "passing", f"gRPC check {target}: success"
    return "critical", f"gRPC check {target}: status {health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)}"


def main() -> None:
    parser = argparse.ArgumentParser(description="Run the Consul stand-in on 127.0.0.1")
    parser.add_argument("--port", type=int, default=8500)
    parser.add_argument("--token", default=None)
    args = parser.parse_args()
    standin = ConsulStandIn(token=args.token, port=args.port).start()
    print(f"consul stand-in listening on {standin.url}", flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        pass
    finally:
        standin.stop()


if __name__ == "__main__":
    main()
