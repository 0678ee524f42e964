"""The configuration file's sections as pydantic models (the seed's YAML, plus a few keys).

Every model is frozen and forbids unknown keys, so a typo is an error rather than a
silently ignored setting. Key names follow the seed (``registry.check_interval``,
``security.service_auth_key``, ``metrics.prometheus_port``...).
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

import pydantic

from grpcmesh.config.durations import Duration
from grpcmesh.model import DEFAULT_WEIGHT, MAX_WEIGHT, check_address, check_service_name
from grpcmesh.registry import BACKENDS

REGISTRY_TYPES = ("memory", "sqlite", "etcd", "consul")
"""The seed's ``registry.type`` values; each maps to the ``open_registry`` URL scheme of the same name."""

DEFAULT_REGISTRY_URL = "sqlite://"
_VERSION_RE = re.compile(r"^\S{0,64}$")
_PATTERN_RE = re.compile(r"^\S{1,256}$")


class KeyProblem(ValueError):
    """A cross-field check failed on ``key`` (a child of the model being validated)."""

    def __init__(self, key: str, problem: str) -> None:
        self.key = key
        self.problem = problem
        super().__init__(problem)


class _Section(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(frozen=True, extra="forbid")


def _service_name(value: str) -> str:
    check_service_name(value)
    return value


def _version(value: str) -> str:
    if not _VERSION_RE.match(value):
        raise ValueError(f"{value!r} must be at most 64 characters with no spaces, e.g. 'v1'")
    return value


def _port(value: int) -> int:
    if not 0 <= value <= 65535:
        raise ValueError(f"{value} is not a TCP port; use 1-65535, or 0 to pick a free port")
    return value


def _host(value: str) -> str:
    check_address(value)
    return value


ServiceName = Annotated[str, pydantic.AfterValidator(_service_name)]
Version = Annotated[str, pydantic.AfterValidator(_version)]
Port = Annotated[int, pydantic.AfterValidator(_port)]
Host = Annotated[str, pydantic.AfterValidator(_host)]


class ServiceConfig(_Section):
    """``service:`` — who this process is and how it listens and stops."""

    name: ServiceName
    version: Version = ""
    port: Port = 0
    """0 picks a free port; the bound port is what gets registered."""
    host: Host = "127.0.0.1"
    """Interface to bind."""
    advertise_address: Host | None = None
    """Address registered for clients to dial; defaults to ``host`` (or the hostname when binding all interfaces)."""
    metadata: dict[str, str] = pydantic.Field(default_factory=dict)
    weight: Annotated[int, pydantic.Field(ge=1, le=MAX_WEIGHT)] = DEFAULT_WEIGHT
    reflection: bool = True
    shutdown_grace: Duration = 10.0
    """How long in-flight calls may run after the server stops accepting new ones."""
    propagation_delay: Duration = 1.0
    """Pause between deregistering and closing the listener, so clients learn to stop picking us."""


class RegistryConfig(_Section):
    """``registry:`` — where instances are registered, as the seed's ``type``/``address`` or a ``url``."""

    type: Literal["memory", "sqlite", "etcd", "consul"] | None = None
    address: str | None = None
    url: str | None = None
    check_interval: Duration = 10.0
    """How often the registry checks the instance (Consul's gRPC check); heartbeat-based backends beat faster."""
    deregister_after: Duration = 30.0
    """How long a registration outlives its owner's last heartbeat (the registration TTL)."""
    options: dict[str, str] = pydantic.Field(default_factory=dict)
    """Extra backend options passed to ``open_registry``."""

    @pydantic.model_validator(mode="after")
    def _check_location(self) -> RegistryConfig:
        if self.url is not None:
            if self.type is not None or self.address is not None:
                raise KeyProblem("url", "give either url or type/address, not both")
            _check_registry_url(self.url)
        elif self.address is not None and self.type is None:
            raise KeyProblem("type", f"is required with address; one of {', '.join(REGISTRY_TYPES)}")
        elif self.type in ("etcd", "consul") and not self.address:
            raise KeyProblem("address", f"is required for type {self.type}, e.g. localhost:{_PORTS[self.type]}")
        if self.deregister_after < 1.0:
            raise KeyProblem("deregister_after", "must be at least 1s so heartbeats can keep the registration alive")
        return self

    @property
    def resolved_url(self) -> str:
        """The ``open_registry`` URL this section names."""
        if self.url is not None:
            return self.url
        if self.type is None:
            return DEFAULT_REGISTRY_URL
        address = (self.address or "").strip()
        if self.type == "sqlite":
            if not address:
                return "sqlite://"
            return f"sqlite://{address}" if address.startswith("/") else f"sqlite:{address}"
        return f"{self.type}://{address}"


_PORTS = {"etcd": 2379, "consul": 8500}


def _check_registry_url(url: str) -> None:
    if "://" not in url and not url.startswith("sqlite:"):
        raise KeyProblem("url", f"{url!r} has no scheme; use e.g. sqlite:///path/registry.db or etcd://host:2379")
    scheme = urlsplit(url).scheme
    known = sorted(set(REGISTRY_TYPES) | set(BACKENDS))
    if scheme not in known:
        raise KeyProblem("url", f"unknown registry scheme {scheme!r}; use one of {', '.join(s + '://' for s in known)}")


class DependencyConfig(_Section):
    """One ``dependencies:`` entry: a service this one calls."""

    name: ServiceName
    version: Version = ""
    """Empty matches any version; ``v1`` matches ``v1`` and ``v1.x...``."""
    required: bool = True
    """Required dependencies gate readiness (NOT_SERVING until one healthy instance exists)."""


def _method_pattern(value: str) -> str:
    if not _PATTERN_RE.match(value):
        raise ValueError(f"{value!r} must be a method pattern without spaces, e.g. '/pkg.Service/*'")
    return value


class SecurityConfig(_Section):
    """``security:`` — service-to-service authentication and TLS."""

    service_auth_key: pydantic.SecretStr | None = None
    tls_enabled: bool = False
    cert_file: Path | None = None
    key_file: Path | None = None
    ca_file: Path | None = None
    """CA bundle that signs peer certificates (needed for mTLS)."""
    client_auth: bool = False
    """Require and verify client certificates (mTLS)."""
    allowed_callers: dict[ServiceName, list[Annotated[str, pydantic.AfterValidator(_method_pattern)]]] = pydantic.Field(
        default_factory=dict
    )
    """Caller service -> method patterns it may call; empty allows every authenticated caller."""

    @pydantic.model_validator(mode="after")
    def _check_tls(self) -> SecurityConfig:
        if self.service_auth_key is not None and not self.service_auth_key.get_secret_value():
            raise KeyProblem("service_auth_key", "is empty; give a secret, or remove the key to disable auth")
        if self.tls_enabled and (self.cert_file is None) != (self.key_file is None):
            # A server needs both (checked where it is built); a call-only client may give neither.
            missing, given = ("key_file", "cert_file") if self.key_file is None else ("cert_file", "key_file")
            raise KeyProblem(
                missing, f"is required with {given} when tls_enabled is true (a call-only client may give neither)"
            )
        if self.client_auth:
            if not self.tls_enabled:
                raise KeyProblem("client_auth", "needs tls_enabled: true")
            if self.ca_file is None:
                raise KeyProblem("ca_file", "is required when client_auth is true (it verifies client certificates)")
        return self


class TracingConfig(_Section):
    """``tracing:`` — OpenTelemetry export."""

    enabled: bool = False
    jaeger_endpoint: str | None = None
    otlp_endpoint: str | None = None
    sample_rate: float = 1.0

    @pydantic.field_validator("sample_rate")
    @classmethod
    def _check_rate(cls, value: float) -> float:
        if math.isnan(value) or not 0.0 <= value <= 1.0:
            raise ValueError(f"{value} is not a sampling ratio; use a number from 0.0 to 1.0")
        return value

    @property
    def endpoint(self) -> str | None:
        """Where spans go: ``otlp_endpoint``, else the seed's ``jaeger_endpoint``."""
        return self.otlp_endpoint or self.jaeger_endpoint


class MetricsConfig(_Section):
    """``metrics:`` — the Prometheus endpoint."""

    enabled: bool = False
    prometheus_port: Port = 9090
    host: Host = "127.0.0.1"


class LoggingConfig(_Section):
    """``logging:`` — one structured line per call (not in the seed; grpc_zap's role there)."""

    enabled: bool = True
    format: Literal["json", "console"] = "json"
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    lifecycle: bool = True
    """Print grpcmesh's lifecycle lines (listening, registered, health, shutdown) when the
    application has not configured ``logging`` itself (see :mod:`grpcmesh.lifecycle_log`)."""


class MeshConfig(_Section):
    """A whole configuration file. Every section is optional; missing ones take their defaults."""

    service: ServiceConfig | None = None
    registry: RegistryConfig = pydantic.Field(default_factory=RegistryConfig)
    dependencies: list[DependencyConfig] = pydantic.Field(default_factory=list)
    security: SecurityConfig = pydantic.Field(default_factory=SecurityConfig)
    tracing: TracingConfig = pydantic.Field(default_factory=TracingConfig)
    metrics: MetricsConfig = pydantic.Field(default_factory=MetricsConfig)
    logging: LoggingConfig = pydantic.Field(default_factory=LoggingConfig)

    @pydantic.field_validator("dependencies")
    @classmethod
    def _unique_dependencies(cls, value: list[DependencyConfig]) -> list[DependencyConfig]:
        seen: set[str] = set()
        for index, dep in enumerate(value):
            if dep.name in seen:
                raise KeyProblem(f"[{index}].name", f"{dep.name!r} is listed twice; list each dependency once")
            seen.add(dep.name)
        return value


def known_keys() -> set[str]:
    """Every key name any section accepts (for 'did you mean' hints)."""
    keys: set[str] = set()
    for model in (MeshConfig, ServiceConfig, RegistryConfig, DependencyConfig, SecurityConfig, TracingConfig):
        keys.update(model.model_fields)
    keys.update(MetricsConfig.model_fields)
    keys.update(LoggingConfig.model_fields)
    return keys


def model_for_section(name: str) -> type[pydantic.BaseModel] | None:
    """The model of a top-level mapping section (used by environment overrides)."""
    sections: dict[str, Any] = {
        "service": ServiceConfig,
        "registry": RegistryConfig,
        "security": SecurityConfig,
        "tracing": TracingConfig,
        "metrics": MetricsConfig,
        "logging": LoggingConfig,
    }
    model: type[pydantic.BaseModel] | None = sections.get(name)
    return model
