"""The state-of-the-world ADS protocol for one stream, as a synchronous state machine.

It turns each ``DiscoveryRequest`` into the responses to send, and says what to push after
endpoints change; it does no I/O, so every protocol rule is unit-testable with crafted
requests. Per resource type it keeps the client's subscription, the version and nonce last
sent and the version last ACKed. The rules (xDS protocol, "ACK/NACK and versioning"):

* a request whose ``response_nonce`` is not the nonce last sent for its type is stale and
  ignored: a newer response is already on its way to the client;
* ``error_detail`` set means NACK: the client rejected the response with that nonce and
  keeps its last good version (``version_info``); we log the reason and do not resend the
  same resources, only a later change;
* otherwise a request with a nonce is an ACK of that response;
* a new or changed subscription (``resource_names``) is answered at once; Listener and
  Cluster responses list every subscribed resource (absence means "does not exist"),
  RouteConfiguration and ClusterLoadAssignment responses are sent once they have content.

Versions are content hashes (see ``resources.version_of``), so an unchanged state never
triggers a push; nonces count responses on this stream.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
from collections.abc import Iterable
from typing import Any, Protocol

from envoy.config.core.v3 import base_pb2
from envoy.service.discovery.v3 import discovery_pb2

from grpcmesh.__about__ import __version__
from grpcmesh.model import ServiceInstance
from grpcmesh.xds import resources
from grpcmesh.xds.resources import CLUSTER_TYPE, ENDPOINT_TYPE, LISTENER_TYPE, RESOURCE_TYPES, ROUTE_TYPE

log = logging.getLogger("grpcmesh.xds")

CONTROL_PLANE_ID = f"grpcmesh/{__version__}"
MAX_KEPT_NACKS = 32
"""NACKs remembered per stream for inspection (all are logged)."""
_ABSENCE_MEANS_DELETED = frozenset({LISTENER_TYPE, CLUSTER_TYPE})


class EndpointSource(Protocol):
    """Where a session reads a service's current instances (``RegistryWatches`` in the server)."""

    def endpoints(self, service: str) -> list[ServiceInstance] | None:
        """The instances, or None while they are not known yet."""


@dataclasses.dataclass
class TypeState:
    """What one stream knows about one resource type."""

    names: frozenset[str] = frozenset()
    subscribed: bool = False
    sent_version: str = ""
    sent_nonce: str = ""
    acked_version: str = ""
    nacks: int = 0
    last_error: str = ""


@dataclasses.dataclass(frozen=True)
class Nack:
    """A rejected response, as reported by the client."""

    type_url: str
    nonce: str
    rejected_version: str
    kept_version: str
    message: str


class AdsSession:
    """Protocol state of one ADS stream (see the module docstring for the rules)."""

    def __init__(self, source: EndpointSource, *, peer: str = "") -> None:
        self._source = source
        self.peer = peer
        self.node_id = ""
        self.states: dict[str, TypeState] = {type_url: TypeState() for type_url in RESOURCE_TYPES}
        self.nacks: collections.deque[Nack] = collections.deque(maxlen=MAX_KEPT_NACKS)
        self._nonce = 0

    @property
    def client(self) -> str:
        """How logs name the client: its node id, else its address."""
        return self.node_id or self.peer or "unknown client"

    def services(self) -> set[str]:
        """Services whose endpoints this stream needs (its EDS subscription)."""
        wanted = (resources.service_of(name) for name in self.states[ENDPOINT_TYPE].names)
        return {service for service in wanted if service is not None}

    def handle(self, request: Any) -> list[Any]:
        """Apply one ``DiscoveryRequest``; returns the ``DiscoveryResponse``s to send (zero or one)."""
        if request.HasField("node") and request.node.id:
            self.node_id = request.node.id
        type_url = request.type_url
        state = self.states.get(type_url)
        if state is None:
            log.warning("xDS: %s asked for unsupported type %r; ignored", self.client, request.type_url)
            return []
        if request.response_nonce and request.response_nonce != state.sent_nonce:
            log.debug("xDS: %s sent stale nonce %s for %s", self.client, request.response_nonce, request.type_url)
            return []
        if request.response_nonce:
            if request.HasField("error_detail") and (request.error_detail.code or request.error_detail.message):
                self._record_nack(request, state)
            else:
                state.acked_version = request.version_info
        names = frozenset(request.resource_names)
        if state.subscribed and names == state.names:
            return []
        first = not state.subscribed
        state.subscribed = True
        state.names = names
        if first and not names:
            log.info(
                "xDS: %s sent a wildcard %s request; only named resources are served", self.client, request.type_url
            )
        return self._respond(request.type_url, state, force=True)

    def refresh(self) -> list[Any]:
        """Responses for every type whose resources changed since they were last sent."""
        out: list[Any] = []
        for type_url, state in self.states.items():
            if state.subscribed:
                out.extend(self._respond(type_url, state, force=False))
        return out

    def _record_nack(self, request: Any, state: TypeState) -> None:
        nack = Nack(
            type_url=request.type_url,
            nonce=request.response_nonce,
            rejected_version=state.sent_version,
            kept_version=request.version_info,
            message=request.error_detail.message,
        )
        state.nacks += 1
        state.last_error = nack.message
        self.nacks.append(nack)
        log.warning(
            "xDS: %s NACKed %s version %s (nonce %s), keeps version %r: %s",
            self.client,
            resources.short_type(nack.type_url),
            nack.rejected_version,
            nack.nonce,
            nack.kept_version,
            nack.message,
        )

    def _build(self, type_url: str, names: Iterable[str]) -> list[Any]:
        built: list[Any] = []
        for name in sorted(names):
            service = resources.service_of(name)
            if service is None or (type_url != LISTENER_TYPE and service != name):
                log.debug("xDS: %s asked for %s %r, which names no service", self.client, type_url, name)
                continue
            if type_url == LISTENER_TYPE:
                built.append(resources.listener(name, service))
            elif type_url == ROUTE_TYPE:
                built.append(resources.route_configuration(service))
            elif type_url == CLUSTER_TYPE:
                built.append(resources.cluster(service))
            else:
                instances = self._source.endpoints(service)
                if instances is not None:
                    built.append(resources.cluster_load_assignment(service, instances))
        return built

    def _respond(self, type_url: str, state: TypeState, *, force: bool) -> list[Any]:
        if not state.names:
            return []
        packed = resources.pack_all(self._build(type_url, state.names))
        if not packed and type_url not in _ABSENCE_MEANS_DELETED:
            return []  # nothing known yet; an empty RDS/EDS response would say nothing
        version = resources.version_of(packed)
        if not force and version == state.sent_version:
            return []
        self._nonce += 1
        state.sent_version = version
        state.sent_nonce = str(self._nonce)
        return [
            discovery_pb2.DiscoveryResponse(
                version_info=version,
                resources=packed,
                type_url=type_url,
                nonce=state.sent_nonce,
                control_plane=_control_plane(),
            )
        ]


def _control_plane() -> Any:
    return base_pb2.ControlPlane(identifier=CONTROL_PLANE_ID)
