"""What the xDS control plane tells clients beyond endpoints: per-service policies and limits.

A YAML file (``grpcmesh xds serve --policy FILE``; its top level or its ``xds:`` key)::

    services:
      echo-service:
        split: {v1: 90, v2: 10}          # gRFC A28 weighted clusters by instance version
        balancing: consistent_hash       # gRFC A42 ring hash ...
        hash_header: x-user-id           # ... keyed by this request header
        retry_methods: [grpc.health.v1.Health/Check]   # gRFC A44, or ["*"] for every method
        outlier: {failure_percentage: 50, interval: 1}  # gRFC A50
        locality_priority: [eu-west/eu-west-1a, eu-west]  # gRFC A27 priorities, first = preferred
        fault: {abort_percent: 20, abort_code: 14, delay_percent: 0, delay: 0.1}  # gRFC A33
    limits: {max_names_per_stream: 1000, max_streams_per_client: 64, max_queued_requests: 64}

Key names follow the mesh client's per-dependency keys (``balancing``, ``hash_header``,
``retry_methods``, ``outlier``) so one vocabulary serves both kinds of client.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

import pydantic
import yaml

from grpcmesh.errors import ConfigError
from grpcmesh.model import check_service_name

MAX_POLICY_FILE_BYTES = 1 << 20

Seconds = Annotated[float, pydantic.Field(gt=0, le=3600, allow_inf_nan=False)]
VersionName = Annotated[str, pydantic.Field(pattern=r"^[A-Za-z0-9._+-]{1,64}$")]
Percent = Annotated[float, pydantic.Field(ge=0, le=100, allow_inf_nan=False)]


class _Model(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(frozen=True, extra="forbid", strict=True)


class OutlierPolicy(_Model):
    """gRFC A50 failure-percentage ejection (the algorithm gRPC implements besides success rate)."""

    failure_percentage: Annotated[int, pydantic.Field(ge=1, le=100)] = 50
    request_volume: Annotated[int, pydantic.Field(ge=1, le=100_000)] = 5
    """Calls an endpoint must get in one interval before it can be judged."""
    minimum_hosts: Annotated[int, pydantic.Field(ge=1, le=10_000)] = 2
    interval: Seconds = 10.0
    base_ejection_time: Seconds = 30.0
    max_ejection_time: Seconds = 300.0
    max_ejection_percent: Annotated[int, pydantic.Field(ge=0, le=100)] = 10


class FaultPolicy(_Model):
    """gRFC A33 fault injection: delay and/or abort a percentage of calls (for chaos tests)."""

    delay_percent: Percent = 0.0
    delay: Seconds = 0.1
    abort_percent: Percent = 0.0
    abort_code: Annotated[int, pydantic.Field(ge=1, le=16)] = 14
    """The gRPC status code of injected aborts (14 = UNAVAILABLE)."""


RetryableCode = Literal["cancelled", "deadline-exceeded", "internal", "resource-exhausted", "unavailable"]
"""The status codes gRPC's xDS client may retry on (gRFC A44)."""


class RetryPolicy(_Model):
    """gRFC A44 retry settings applied to ``retry_methods``."""

    retry_on: list[RetryableCode] = pydantic.Field(default_factory=lambda: list[RetryableCode](["unavailable"]))
    num_retries: Annotated[int, pydantic.Field(ge=1, le=4)] = 2
    base_interval: Seconds = 0.025
    max_interval: Seconds = 0.25


class ServicePolicy(_Model):
    """Everything the control plane says about one service."""

    split: dict[VersionName, Annotated[int, pydantic.Field(ge=0)]] = pydantic.Field(default_factory=dict)
    balancing: Literal["round_robin", "consistent_hash"] = "round_robin"
    hash_header: Annotated[str, pydantic.Field(pattern=r"^[a-z0-9][a-z0-9_.-]{0,127}$")] | None = None
    retry_methods: list[Annotated[str, pydantic.Field(pattern=r"^(\*|[A-Za-z0-9_.]+/[A-Za-z0-9_]+)$")]] = (
        pydantic.Field(default_factory=list)
    )
    retry: RetryPolicy = pydantic.Field(default_factory=RetryPolicy)
    outlier: OutlierPolicy | None = None
    locality_priority: list[Annotated[str, pydantic.Field(pattern=r"^[^/\s]+(/[^/\s]+){0,2}$")]] = pydantic.Field(
        default_factory=list
    )
    fault: FaultPolicy | None = None

    @pydantic.model_validator(mode="after")
    def _check(self) -> ServicePolicy:
        if self.split and sum(self.split.values()) <= 0:
            raise ValueError("split: the weights must add up to more than 0, e.g. {v1: 90, v2: 10}")
        if self.hash_header is not None and self.balancing != "consistent_hash":
            raise ValueError("hash_header: needs balancing: consistent_hash")
        return self


class Limits(_Model):
    """What one client may ask of the control plane, so no client can exhaust it."""

    max_names_per_stream: Annotated[int, pydantic.Field(ge=1, le=1_000_000)] = 1000
    """Resource names one stream may subscribe to, per type; more ends the stream (RESOURCE_EXHAUSTED)."""
    max_streams_per_client: Annotated[int, pydantic.Field(ge=1, le=100_000)] = 64
    """Concurrent streams from one client address; more are refused (RESOURCE_EXHAUSTED)."""
    max_queued_requests: Annotated[int, pydantic.Field(ge=1, le=100_000)] = 64
    """Requests read ahead of processing per stream; a client sending faster waits (flow control)."""


class XdsPolicies(_Model):
    """The control plane's configuration file."""

    services: dict[str, ServicePolicy] = pydantic.Field(default_factory=dict)
    limits: Limits = pydantic.Field(default_factory=Limits)

    @pydantic.field_validator("services")
    @classmethod
    def _names(cls, value: dict[str, ServicePolicy]) -> dict[str, ServicePolicy]:
        for name in value:
            check_service_name(name, f"services.{name}")
        return value

    def for_service(self, service: str) -> ServicePolicy:
        return self.services.get(service, _DEFAULT_POLICY)

    @classmethod
    def from_yaml(cls, path: Path | str) -> XdsPolicies:
        """Load a policy file (its ``xds:`` key if it has one, else its top level)."""
        path = Path(path)
        try:
            if path.stat().st_size > MAX_POLICY_FILE_BYTES:
                raise ConfigError(f"{path}: larger than {MAX_POLICY_FILE_BYTES} bytes; not an xDS policy file")
            text = path.read_text()
        except OSError as exc:
            raise ConfigError(f"{path}: cannot read the xDS policy file: {exc.strerror}") from exc
        return cls.from_text(text, str(path))

    @classmethod
    def from_text(cls, text: str, origin: str = "xDS policy") -> XdsPolicies:
        try:
            loader = yaml.SafeLoader(text)
            try:
                node = loader.get_single_node()
                if node is not None and _has_alias(node):
                    raise ConfigError(f"{origin}: YAML aliases are not accepted")
                data: Any = loader.construct_document(node) if node is not None else {}
            finally:
                loader.dispose()
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f" at line {mark.line + 1}" if mark is not None else ""
            raise ConfigError(f"{origin}: not valid YAML{where}") from None
        if isinstance(data, dict) and "xds" in data:
            data = data["xds"]
        try:
            return cls.model_validate(data or {})
        except pydantic.ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in err['loc']) or '(top)'}: {err['msg']}" for err in exc.errors()
            )
            raise ConfigError(f"{origin}: {problems}") from None


def _has_alias(node: yaml.Node, seen: set[int] | None = None) -> bool:
    seen = set() if seen is None else seen
    if id(node) in seen:
        return True
    seen.add(id(node))
    children: list[yaml.Node] = []
    if isinstance(node, yaml.SequenceNode):
        children = list(node.value)
    elif isinstance(node, yaml.MappingNode):
        children = [part for pair in node.value for part in pair]
    return any(_has_alias(child, seen) for child in children)


_DEFAULT_POLICY = ServicePolicy()
