"""The configuration file's sections as pydantic models (the original Go design's YAML, plus a few keys).

Every model is frozen and forbids unknown keys, so a typo is an error rather than a
silently ignored setting. Key names follow the original Go design (``registry.check_interval``,
``security.service_auth_key``, ``metrics.prometheus_port``...).
"""

from __future__ import annotations

import math
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

import pydantic

from grpcmesh.config.client import BALANCING_POLICIES as BALANCING_POLICIES
from grpcmesh.config.client import CLIENT_KEYS as CLIENT_KEYS
from grpcmesh.config.client import ClientConfig as ClientConfig
from grpcmesh.config.client import ClientOverrides as ClientOverrides
from grpcmesh.config.client import KeepaliveConfig as KeepaliveConfig
from grpcmesh.config.client import OutlierConfig as OutlierConfig
from grpcmesh.config.client import RetryBudgetConfig as RetryBudgetConfig
from grpcmesh.config.client import SheddingConfig as SheddingConfig
from grpcmesh.config.client import SuccessRateConfig as SuccessRateConfig
from grpcmesh.config.client import ThrottleConfig as ThrottleConfig
from grpcmesh.config.durations import Duration
from grpcmesh.config.fields import (
    FilePath,
    Host,
    KeyProblem,
    MethodPattern,
    Number,
    OptionValue,
    Port,
    ServiceName,
    Version,
    not_bool,
)
from grpcmesh.config.fields import Section as _Section
from grpcmesh.config.secrets import is_secret_name, redact_address, redact_url
from grpcmesh.model import DEFAULT_WEIGHT, MAX_WEIGHT
from grpcmesh.registry import BACKENDS

REGISTRY_TYPES = ("memory", "sqlite", "etcd", "consul")
"""The original ``registry.type`` values; each maps to the ``open_registry`` URL scheme of the same name."""

DEFAULT_REGISTRY_URL = "sqlite://"


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
    weight: Annotated[int, pydantic.BeforeValidator(not_bool), pydantic.Field(ge=1, le=MAX_WEIGHT)] = DEFAULT_WEIGHT
    reflection: bool = True
    shutdown_grace: Duration = 10.0
    """How long in-flight calls may run after the server stops accepting new ones."""
    propagation_delay: Duration = 1.0
    """Pause between deregistering and closing the listener, so clients learn to stop picking us."""
    load_shedding: SheddingConfig = pydantic.Field(default_factory=lambda: SheddingConfig())


class RegistryConfig(_Section):
    """``registry:`` — where instances are registered, as ``type``/``address`` (the original form) or a ``url``."""

    type: Literal["memory", "sqlite", "etcd", "consul"] | None = None
    address: str | None = None
    url: str | None = None
    check_interval: Duration = 10.0
    """How often the registry checks the instance (Consul's gRPC check); heartbeat-based backends beat faster."""
    deregister_after: Duration = 30.0
    """How long a registration outlives its owner's last heartbeat (the registration TTL)."""
    options: dict[str, OptionValue] = pydantic.Field(default_factory=dict)
    """Extra backend options passed to ``open_registry``; secret-named ones (password, token...) are SecretStr."""

    @pydantic.field_validator("options")
    @classmethod
    def _hide_secret_options(cls, value: dict[str, OptionValue]) -> dict[str, OptionValue]:
        return {
            key: pydantic.SecretStr(option) if isinstance(option, str) and is_secret_name(key) else option
            for key, option in value.items()
        }

    def backend_options(self) -> dict[str, str]:
        """``options`` with secrets revealed, for ``open_registry(resolved_url, **backend_options())``."""
        return {
            key: option.get_secret_value() if isinstance(option, pydantic.SecretStr) else option
            for key, option in self.options.items()
        }

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
        elif self.type in ("etcd", "consul"):
            _check_registry_url(self.resolved_url, "address")
        if self.check_interval <= 0:
            raise KeyProblem("check_interval", "must be more than 0s, e.g. 10s")
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


def _check_registry_url(url: str, key: str = "url") -> None:
    if "://" not in url and not url.startswith("sqlite:"):
        raise KeyProblem(
            key, f"{redact_address(url)!r} has no scheme; use e.g. sqlite:///path/registry.db or etcd://host:2379"
        )
    try:
        parts = urlsplit(url)
    except ValueError:
        raise KeyProblem(key, f"{redact_url(url)!r} is not a valid URL (an IPv6 host goes in [brackets])") from None
    known = sorted(set(REGISTRY_TYPES) | set(BACKENDS))
    if parts.scheme not in known:
        raise KeyProblem(
            key, f"unknown registry scheme {parts.scheme!r}; use one of {', '.join(s + '://' for s in known)}"
        )
    if parts.scheme in ("etcd", "consul"):
        hosts = parts.netloc.rpartition("@")[2]  # never look at (or show) credentials
        for host in filter(None, hosts.split(",")):  # etcd takes several endpoints
            after_host = host.rsplit("]", 1)[-1]
            port = after_host.rpartition(":")[2] if ":" in after_host else ""
            if port and not (port.isascii() and port.isdigit() and 1 <= int(port) <= 65535):
                raise KeyProblem(key, f"port {port!r} in {host!r} is not a TCP port; use 1-65535")


class DependencyConfig(ClientOverrides):
    """One ``dependencies:`` entry: a service this one calls (and, optionally, how to call it)."""

    name: ServiceName
    version: Version = ""
    """Empty matches any version; ``v1`` matches ``v1`` and ``v1.x...``."""
    required: bool = True
    """Required dependencies gate readiness (NOT_SERVING until one healthy instance exists)."""


class SecurityConfig(_Section):
    """``security:`` — service-to-service authentication and TLS."""

    service_auth_key: pydantic.SecretStr | None = None
    tls_enabled: bool = False
    cert_file: FilePath | None = None
    key_file: FilePath | None = None
    ca_file: FilePath | None = None
    """CA bundle that signs peer certificates (needed for mTLS)."""
    client_auth: bool = False
    """Require and verify client certificates (mTLS)."""
    allowed_callers: dict[ServiceName, list[MethodPattern]] = pydantic.Field(default_factory=dict)
    """Caller service -> method patterns it may call; empty allows every authenticated caller."""
    public_reflection: bool = False
    """With ``service_auth_key`` set, also serve reflection (every method's full schema) to callers without the key."""
    legacy_auth_headers: bool = False
    """Channels send the key, ``x-mesh-caller`` and ``x-mesh-caller-token`` (three headers) instead of the
    signed ``x-mesh-auth``: only while some servers of the mesh run a grpcmesh that predates it."""

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
    sample_rate: Number = 1.0

    @pydantic.field_validator("sample_rate")
    @classmethod
    def _check_rate(cls, value: float) -> float:
        if math.isnan(value) or not 0.0 <= value <= 1.0:
            raise ValueError(f"{value} is not a sampling ratio; use a number from 0.0 to 1.0")
        return value

    @property
    def endpoint(self) -> str | None:
        """Where spans go: ``otlp_endpoint``, else the original ``jaeger_endpoint``."""
        return self.otlp_endpoint or self.jaeger_endpoint


class MetricsConfig(_Section):
    """``metrics:`` — the Prometheus endpoint."""

    enabled: bool = False
    prometheus_port: Port = 9090
    host: Host = "127.0.0.1"


class LoggingConfig(_Section):
    """``logging:`` — structured access-log lines (grpc_zap's role in the original Go design).

    ``access_log`` picks the calls that get a line: ``sampled`` (default: every failed call,
    every call slower than ``slow_call_threshold``, and ``access_log_sample_rate`` of the
    rest), ``all``, ``errors`` (failed or slow only) or ``off``.
    """

    enabled: bool = True
    format: Literal["json", "console"] = "json"
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    access_log: Literal["all", "sampled", "errors", "off"] = "sampled"
    access_log_sample_rate: float = 0.01
    slow_call_threshold: Duration = 1.0
    lifecycle: bool = True
    """Print grpcmesh's lifecycle lines (listening, registered, health, shutdown) when the
    application has not configured ``logging`` itself (see :mod:`grpcmesh.lifecycle_log`)."""

    @pydantic.field_validator("access_log_sample_rate")
    @classmethod
    def _check_log_rate(cls, value: float) -> float:
        if math.isnan(value) or not 0.0 <= value <= 1.0:
            raise ValueError(f"{value} is not a sampling ratio; use a number from 0.0 to 1.0")
        return value


class MeshConfig(_Section):
    """A whole configuration file. Every section is optional; missing ones take their defaults."""

    service: ServiceConfig | None = None
    registry: RegistryConfig = pydantic.Field(default_factory=RegistryConfig)
    dependencies: list[DependencyConfig] = pydantic.Field(default_factory=list)
    security: SecurityConfig = pydantic.Field(default_factory=SecurityConfig)
    tracing: TracingConfig = pydantic.Field(default_factory=TracingConfig)
    metrics: MetricsConfig = pydantic.Field(default_factory=MetricsConfig)
    logging: LoggingConfig = pydantic.Field(default_factory=LoggingConfig)
    client: ClientConfig = pydantic.Field(default_factory=lambda: ClientConfig())

    def client_for(self, name: str) -> ClientConfig:
        """The client settings for calls to ``name``: ``client:`` defaults with its dependency entry's keys."""
        return self.client.for_dependency(next((d for d in self.dependencies if d.name == name), None))

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
    for extra in (ClientConfig, OutlierConfig, SuccessRateConfig, ThrottleConfig, RetryBudgetConfig, KeepaliveConfig):
        keys.update(extra.model_fields)
    keys.update(SheddingConfig.model_fields)
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
        "client": ClientConfig,
    }
    model: type[pydantic.BaseModel] | None = sections.get(name)
    return model
