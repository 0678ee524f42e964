"""The service model: one running instance of a service, and its stable JSON wire encoding.

``ServiceInstance`` is the original Go design's ``ServiceInfo`` plus ``weight`` and ``health``. Every
registry backend stores exactly the bytes of :func:`encode_instance`, so an instance written
by one version of grpcmesh can be read by another: the encoding carries a format version,
readers ignore fields they do not know and default optional fields that are missing.
"""

from __future__ import annotations

import enum
import ipaddress
import json
import re
import uuid
from collections.abc import Mapping
from typing import Any

import pydantic

from grpcmesh.errors import InvalidInstanceError, InvalidRecordError

WIRE_FORMAT_VERSION = 1
DEFAULT_WEIGHT = 100
MAX_WEIGHT = 10_000

_NAME_RE = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*$")
_ID_RE = re.compile(r"^[A-Za-z0-9._:@-]{1,128}$")
_HOST_LABEL_RE = re.compile(r"^(?!-)[A-Za-z0-9-]{1,63}(?<!-)$")


class HealthStatus(enum.StrEnum):
    """Serving status, named as in ``grpc.health.v1.HealthCheckResponse.ServingStatus``."""

    SERVING = "SERVING"
    NOT_SERVING = "NOT_SERVING"
    UNKNOWN = "UNKNOWN"


def check_service_name(name: str, field: str = "name") -> str:
    """Validate a service name (lowercase DNS labels joined by dots), naming ``field`` on error."""
    if not isinstance(name, str) or not name:
        raise InvalidInstanceError(field, "must be a non-empty service name such as 'user-service'")
    if len(name) > 253 or not _NAME_RE.match(name):
        raise InvalidInstanceError(
            field,
            f"{name!r} is not a valid service name; use lowercase letters, digits and '-' "
            "(DNS-label style, e.g. 'order-service'), optionally dot-separated",
        )
    return name


def is_service_name(name: object) -> bool:
    """Whether ``name`` is a valid service name (see :func:`check_service_name`); never raises."""
    return isinstance(name, str) and 0 < len(name) <= 253 and _NAME_RE.match(name) is not None


def _is_hostname(address: str) -> bool:
    if len(address) > 253:
        return False
    labels = address.rstrip(".").split(".")
    return all(_HOST_LABEL_RE.match(label) for label in labels)


def check_address(address: str, field: str = "address") -> str:
    """Validate an IP address or hostname."""
    if not isinstance(address, str) or not address:
        raise InvalidInstanceError(field, "must be an IP address or hostname such as '127.0.0.1'")
    try:
        ipaddress.ip_address(address)
        return address
    except ValueError:
        pass
    if not _is_hostname(address):
        raise InvalidInstanceError(
            field, f"{address!r} is neither an IP address nor a hostname; give e.g. '127.0.0.1' or 'localhost'"
        )
    return address


def check_port(port: int, field: str = "port") -> int:
    """Validate a TCP port in 1-65535."""
    if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
        raise InvalidInstanceError(field, f"{port!r} is not a TCP port; use a whole number from 1 to 65535")
    return port


class ServiceInstance(pydantic.BaseModel):
    """One running instance of a service, as registered in the mesh.

    Construct with keyword arguments; invalid values raise :class:`InvalidInstanceError`
    naming the field. Instances are immutable: use :meth:`replace` to derive a changed copy.
    """

    model_config = pydantic.ConfigDict(frozen=True, extra="forbid", validate_default=False)

    name: str
    address: str
    port: int
    version: str = ""
    id: str = pydantic.Field(default_factory=lambda: uuid.uuid4().hex)
    metadata: dict[str, str] = pydantic.Field(default_factory=dict)
    endpoints: tuple[str, ...] = ()
    dependencies: tuple[str, ...] = ()
    weight: int = DEFAULT_WEIGHT
    health: HealthStatus = HealthStatus.SERVING

    def __init__(self, **data: Any) -> None:
        try:
            super().__init__(**data)
        except pydantic.ValidationError as exc:
            raise _to_instance_error(exc) from None

    @pydantic.field_validator("name")
    @classmethod
    def _v_name(cls, value: str) -> str:
        return check_service_name(value)

    @pydantic.field_validator("address")
    @classmethod
    def _v_address(cls, value: str) -> str:
        return check_address(value)

    @pydantic.field_validator("port", mode="before")
    @classmethod
    def _v_port(cls, value: Any) -> int:
        return check_port(value)

    @pydantic.field_validator("version")
    @classmethod
    def _v_version(cls, value: str) -> str:
        if len(value) > 64 or any(ch.isspace() for ch in value):
            raise InvalidInstanceError("version", f"{value!r} must be at most 64 characters with no spaces, e.g. 'v1'")
        return value

    @pydantic.field_validator("id")
    @classmethod
    def _v_id(cls, value: str) -> str:
        if not _ID_RE.match(value):
            raise InvalidInstanceError(
                "id", f"{value!r} must be 1-128 characters of letters, digits and . _ : @ - (no '/' or spaces)"
            )
        return value

    @pydantic.field_validator("endpoints")
    @classmethod
    def _v_endpoints(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        seen: set[str] = set()
        for i, endpoint in enumerate(value):
            if not endpoint or endpoint != endpoint.strip():
                raise InvalidInstanceError(f"endpoints[{i}]", "must be a non-empty method name without spaces")
            if endpoint in seen:
                raise InvalidInstanceError(f"endpoints[{i}]", f"{endpoint!r} is listed twice; list each endpoint once")
            seen.add(endpoint)
        return value

    @pydantic.field_validator("dependencies")
    @classmethod
    def _v_dependencies(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for i, dep in enumerate(value):
            check_service_name(dep, f"dependencies[{i}]")
        if len(set(value)) != len(value):
            raise InvalidInstanceError("dependencies", "a service is listed twice; list each dependency once")
        return value

    @pydantic.field_validator("weight", mode="before")
    @classmethod
    def _v_weight(cls, value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_WEIGHT:
            raise InvalidInstanceError("weight", f"{value!r} must be a whole number from 1 to {MAX_WEIGHT}")
        return value

    @property
    def target(self) -> str:
        """``host:port`` as gRPC dials it (IPv6 addresses in brackets)."""
        host = f"[{self.address}]" if ":" in self.address else self.address
        return f"{host}:{self.port}"

    @property
    def key(self) -> tuple[str, str]:
        """``(name, id)``: what identifies a registration in every backend."""
        return (self.name, self.id)

    def replace(self, **changes: Any) -> ServiceInstance:
        """A validated copy with ``changes`` applied."""
        data = self.model_dump()
        data.update(changes)
        return ServiceInstance(**data)

    def to_json(self) -> bytes:
        """The stable wire encoding (see :func:`encode_instance`)."""
        return encode_instance(self)

    @classmethod
    def from_json(cls, data: bytes | str) -> ServiceInstance:
        """Decode the wire encoding (see :func:`decode_instance`)."""
        return decode_instance(data)


def _to_instance_error(exc: pydantic.ValidationError) -> InvalidInstanceError:
    err = exc.errors()[0]
    loc = err.get("loc", ())
    field = ".".join(str(p) for p in loc) or "instance"
    ctx_error = err.get("ctx", {}).get("error")
    if isinstance(ctx_error, InvalidInstanceError):
        return ctx_error
    kind = err.get("type", "")
    if kind == "missing":
        return InvalidInstanceError(field, "is required")
    if kind == "extra_forbidden":
        return InvalidInstanceError(field, "is not a ServiceInstance field")
    return InvalidInstanceError(field, str(err.get("msg", "is invalid")))


_KNOWN_FIELDS = frozenset(ServiceInstance.model_fields)


def encode_instance(instance: ServiceInstance) -> bytes:
    """Encode as compact, key-sorted JSON carrying the wire format version ``"v"``."""
    data = instance.model_dump(mode="json")
    data["v"] = WIRE_FORMAT_VERSION
    return json.dumps(data, sort_keys=True, separators=(",", ":")).encode()


MAX_RECORD_BYTES = 1 << 20
"""Largest stored record decoded (1 MiB): a bigger one is refused before parsing, as hostile."""

_SHOWN_PROBLEM = 200


def decode_instance(data: bytes | str | Mapping[str, Any]) -> ServiceInstance:
    """Decode a stored record; unknown fields are ignored, missing optional ones defaulted.

    Raises :class:`InvalidRecordError`, and nothing else, for anything that is not a valid
    instance: registry data may be corrupt or hostile (nested thousands of levels deep, wrong
    types in any field, huge), and a reader must be able to skip it and carry on.
    """
    try:
        return _decode(data)
    except InvalidRecordError:
        raise
    except Exception as exc:  # RecursionError, TypeError, OverflowError, ... from any layer
        problem = f"{type(exc).__name__}: {exc}"[:_SHOWN_PROBLEM]
        raise InvalidRecordError(f"record cannot be decoded ({problem})") from None


def _decode(data: bytes | str | Mapping[str, Any]) -> ServiceInstance:
    if isinstance(data, (bytes, bytearray, memoryview, str)):
        if len(data) > MAX_RECORD_BYTES:
            raise InvalidRecordError(f"record is {len(data)} bytes long; at most {MAX_RECORD_BYTES} are read")
        try:
            obj = json.loads(data)
        except (ValueError, UnicodeDecodeError) as exc:
            raise InvalidRecordError(f"record is not JSON: {str(exc)[:_SHOWN_PROBLEM]}") from None
    elif isinstance(data, Mapping):
        obj = dict(data)
    else:
        raise InvalidRecordError(f"record is a {type(data).__name__}, expected JSON text")
    if not isinstance(obj, dict):
        raise InvalidRecordError(f"record is a JSON {type(obj).__name__}, expected an object")
    fields = {k: v for k, v in obj.items() if k in _KNOWN_FIELDS}
    try:
        return ServiceInstance(**fields)
    except InvalidInstanceError as exc:
        raise InvalidRecordError(f"record has an invalid field {str(exc)[:_SHOWN_PROBLEM]}") from None
