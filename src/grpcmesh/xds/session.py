"""Protocol state of one ADS stream (state of the world, gRFC A27 / xDS "SotW" ADS).

Rules followed, per resource type:

* a request whose ``response_nonce`` is not the latest one sent for its type is stale and
  ignored (the client has not seen our newest response yet);
* a request with the latest nonce and an ``error_detail`` is a NACK: logged (sanitised) and
  remembered; nothing is resent for it, only a later change;
* otherwise a request with a nonce is an ACK of that response;
* a new or changed subscription (``resource_names``) is answered at once; Listener and
  Cluster responses list every subscribed resource (absence means "does not exist"),
  RouteConfiguration and ClusterLoadAssignment responses are sent once they have content;
* an endpoint change of service S rebuilds only the assignments of S's clusters, and the
  response carries only the assignments that changed (EDS allows a subset), so a stream
  subscribed to 50,000 names costs one resource per change, not 50,000.

Versions are an XOR of per-resource content digests (updated in O(1) per changed resource),
so equal resource sets get equal versions on any stream and an unchanged state never
triggers a push; nonces count responses on this stream. A subscription above
``limits.max_names_per_stream`` raises :class:`TooManyNamesError` (the server ends the stream
with RESOURCE_EXHAUSTED).
"""

from __future__ import annotations

import collections
import dataclasses
import logging
from collections.abc import Iterable
from typing import Any, Protocol

from grpcmesh.__about__ import __version__
from grpcmesh.errors import MeshError
from grpcmesh.xds import resources
from grpcmesh.xds.policy import XdsPolicies
from grpcmesh.xds.protos import discovery_response, message
from grpcmesh.xds.resources import CLUSTER_TYPE, ENDPOINT_TYPE, LISTENER_TYPE, RESOURCE_TYPES, ROUTE_TYPE

log = logging.getLogger("grpcmesh.xds")

CONTROL_PLANE_ID = f"grpcmesh/{__version__}"
MAX_KEPT_NACKS = 32
"""NACKs remembered per stream for inspection (all are logged)."""
MAX_LOGGED_CHARS = 200
_ABSENCE_MEANS_DELETED = frozenset({LISTENER_TYPE, CLUSTER_TYPE})


def printable(value: object, limit: int = MAX_LOGGED_CHARS) -> str:
    """``value`` safe to log: control characters escaped (no forged log lines), length capped."""
    text = str(value)
    if len(text) > limit:
        text = text[:limit] + "..."
    return text.encode("unicode_escape").decode("ascii") if not text.isprintable() else text


class TooManyNamesError(MeshError):
    """A client subscribed to more resource names than ``limits.max_names_per_stream`` allows."""


class EndpointSource(Protocol):
    """Where a session reads a cluster's current assignment (``RegistryWatches`` in the server)."""

    def assignment(self, cluster_name: str) -> tuple[str, Any] | None:
        """``(digest, packed ClusterLoadAssignment)``, or None while the endpoints are not known yet."""


@dataclasses.dataclass
class TypeState:
    """What one stream knows about one resource type."""

    names: frozenset[str] = frozenset()
    subscribed: bool = False
    sent: dict[str, str] = dataclasses.field(default_factory=dict)
    """Digest of each resource the client was last sent (by name)."""
    version_bits: int = 0
    sent_version: str = ""
    sent_nonce: str = ""
    acked_version: str = ""
    nacks: int = 0
    last_error: str = ""

    def record(self, name: str, digest: str | None) -> None:
        """Note that the client now has ``digest`` for ``name`` (None: no longer has it)."""
        old = self.sent.pop(name, None)
        if old is not None:
            self.version_bits ^= int(old, 16)
        if digest is not None:
            self.sent[name] = digest
            self.version_bits ^= int(digest, 16)


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

    def __init__(self, source: EndpointSource, *, peer: str = "", policies: XdsPolicies | None = None) -> None:
        self._source = source
        self._policies = policies or XdsPolicies()
        self.peer = peer
        self.node_id = ""
        self.states: dict[str, TypeState] = {type_url: TypeState() for type_url in RESOURCE_TYPES}
        self.nacks: collections.deque[Nack] = collections.deque(maxlen=MAX_KEPT_NACKS)
        self._nonce = 0
        self._eds_by_service: dict[str, set[str]] = {}
        self.subscription_changes = 0
        """Counts changes of the EDS subscription (the server re-syncs its watches only then)."""

    @property
    def client(self) -> str:
        """How logs name the client: its node id, else its address (sanitised)."""
        return printable(self.node_id or self.peer or "unknown client")

    def services(self) -> set[str]:
        """Services whose endpoints this stream needs (its EDS subscription)."""
        return set(self._eds_by_service)

    def _index_endpoints(self, names: frozenset[str]) -> None:
        """Group the EDS names by service once per subscription change, not once per endpoint change."""
        index: dict[str, set[str]] = {}
        for name in names:
            service = resources.service_of(name)
            if service is not None:
                index.setdefault(service, set()).add(name)
        self._eds_by_service = index
        self.subscription_changes += 1

    def handle(self, request: Any) -> list[Any]:
        """Apply one ``DiscoveryRequest``; returns the ``DiscoveryResponse``s to send (zero or one)."""
        if request.HasField("node") and request.node.id:
            self.node_id = request.node.id[:MAX_LOGGED_CHARS]
        type_url = request.type_url
        state = self.states.get(type_url)
        if state is None:
            log.warning("xDS: %s asked for unsupported type %s; ignored", self.client, printable(type_url))
            return []
        if request.response_nonce and request.response_nonce != state.sent_nonce:
            log.debug("xDS: %s sent stale nonce %s for %s", self.client, printable(request.response_nonce), type_url)
            return []
        if request.response_nonce:
            if request.HasField("error_detail") and (request.error_detail.code or request.error_detail.message):
                self._record_nack(request, state)
            else:
                state.acked_version = printable(request.version_info)
        limit = self._policies.limits.max_names_per_stream
        if len(request.resource_names) > limit:
            raise TooManyNamesError(
                f"{len(request.resource_names)} {resources.short_type(type_url)} names in one request; "
                f"at most {limit} per stream (limits.max_names_per_stream)"
            )
        names = frozenset(request.resource_names)
        if state.subscribed and names == state.names:
            return []
        first = not state.subscribed
        state.subscribed = True
        state.names = names
        if type_url == ENDPOINT_TYPE:
            self._index_endpoints(names)
        for gone in set(state.sent) - names:
            state.record(gone, None)
        if first and not names:
            log.info("xDS: %s sent a wildcard %s request; only named resources are served", self.client, type_url)
        return self._respond(type_url, state, names, force=True)

    def refresh(self, changed: Iterable[str] | None = None) -> list[Any]:
        """Responses for the endpoints of ``changed`` services (every service if None) that changed."""
        state = self.states[ENDPOINT_TYPE]
        if not state.subscribed:
            return []
        if changed is None:
            names: Iterable[str] = state.names
        else:
            names = [name for service in changed for name in self._eds_by_service.get(service, ())]
        return self._respond(ENDPOINT_TYPE, state, names, force=False)

    def _record_nack(self, request: Any, state: TypeState) -> None:
        nack = Nack(
            type_url=request.type_url,
            nonce=printable(request.response_nonce),
            rejected_version=state.sent_version,
            kept_version=printable(request.version_info),
            message=printable(request.error_detail.message, 1000),
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

    def _build(self, type_url: str, name: str) -> tuple[str, Any] | None:
        service = resources.service_of(name)
        if service is None:
            return None
        policy = self._policies.for_service(service)
        if type_url == LISTENER_TYPE:
            if resources.VERSION_SEPARATOR in name:
                return None
            built = resources.listener(name, service, policy)
        elif type_url == ROUTE_TYPE:
            if service != name:
                return None
            built = resources.route_configuration(service, policy)
        elif type_url == CLUSTER_TYPE:
            if name not in resources.cluster_names(service, policy):
                return None
            built = resources.cluster(name, policy)
        else:
            return self._source.assignment(name)
        packed = resources.pack(built)
        return resources.digest(packed), packed

    def _respond(self, type_url: str, state: TypeState, names: Iterable[str], *, force: bool) -> list[Any]:
        if not state.names:
            return []
        changed: list[Any] = []
        every: list[Any] = []
        for name in sorted(names):
            built = self._build(type_url, name)
            if built is None:
                state.record(name, None)
                continue
            digest, packed = built
            every.append(packed)
            if force or state.sent.get(name) != digest:
                changed.append(packed)
            state.record(name, digest)
        version = f"{state.version_bits:016x}"[-16:]
        if type_url in _ABSENCE_MEANS_DELETED:
            to_send = every  # only answered on a subscription change, with every subscribed resource
        elif changed:
            to_send = changed
        else:
            return []  # nothing known yet, or nothing changed: an empty RDS/EDS response says nothing
        self._nonce += 1
        state.sent_version = version
        state.sent_nonce = str(self._nonce)
        return [
            discovery_response()(
                version_info=version,
                resources=to_send,
                type_url=type_url,
                nonce=state.sent_nonce,
                control_plane=message("envoy.config.core.v3.ControlPlane")(identifier=CONTROL_PLANE_ID),
            )
        ]
