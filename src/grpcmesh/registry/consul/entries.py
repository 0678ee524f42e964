"""``/v1/health/service/:name`` entries turned into instances, each checked to be what it claims.

An entry written by grpcmesh carries the whole instance in its ``Meta`` (see :mod:`.meta`);
one written by other tools (the original Go design's agent registration) is read best effort
from ``Service``, ``Tags``, ``Weights`` and ``Meta``. Anything else is an
:class:`~grpcmesh.errors.InvalidRecordError`, which the registry skips with one warning.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from grpcmesh.errors import InvalidRecordError
from grpcmesh.model import HealthStatus, ServiceInstance
from grpcmesh.registry.consul.meta import SEED_KEYS, decode_meta, has_grpcmesh_record

__all__ = ["consul_service_id", "entry_instance", "health_from_checks", "ttl_check_id"]


def consul_service_id(instance: ServiceInstance) -> str:
    """Consul's per-agent unique ``ID`` for ``instance``: ``<name>:<id>``."""
    return f"{instance.name}:{instance.id}"


def ttl_check_id(service_id: str) -> str:
    """The ID Consul itself would give a service's single check."""
    return f"service:{service_id}"


def health_from_checks(registered: HealthStatus, checks: Any) -> HealthStatus:
    """Worst of the registered health and every check on the entry (service and node checks)."""
    statuses = {str(c.get("Status", "")) for c in checks if isinstance(c, dict)} if isinstance(checks, list) else set()
    if "critical" in statuses:  # maintenance mode is a critical check too
        return HealthStatus.NOT_SERVING
    if "warning" in statuses and registered is HealthStatus.SERVING:
        return HealthStatus.UNKNOWN
    return registered


def entry_instance(name: str, entry: Any) -> ServiceInstance:
    """The instance one entry describes; :class:`InvalidRecordError` for anything unusable."""
    try:
        return _entry_instance(name, entry)
    except InvalidRecordError:
        raise
    except Exception as exc:  # hostile data must not escape as anything but a skipped record
        raise InvalidRecordError(f"entry is unusable ({type(exc).__name__}: {str(exc)[:200]})") from None


def _entry_instance(name: str, entry: Any) -> ServiceInstance:
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


def _foreign_instance(entry: dict[str, Any], service: dict[str, Any], meta: Mapping[str, Any]) -> ServiceInstance:
    """Best effort for services registered by other tools (e.g. the original Go design's code)."""
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
            version=tags[0] if isinstance(tags, list) and tags and isinstance(tags[0], str) else "",
            metadata={k: v for k, v in meta.items() if k not in SEED_KEYS and isinstance(v, str)},
            endpoints=split("endpoints"),
            dependencies=split("dependencies"),
            weight=weights.get("Passing", 1) if isinstance(weights, dict) else 1,
        )
    except (ValueError, TypeError) as exc:
        raise InvalidRecordError(f"not a usable service instance: {exc}") from None
