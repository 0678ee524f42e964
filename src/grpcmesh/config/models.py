"""The configuration file's sections as pydantic models (the original Go design's YAML, plus a few keys).

Every model is frozen and forbids unknown keys, so a typo is an error rather than a
silently ignored setting. Key names follow the original Go design (``registry.check_interval``,
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
from grpcmesh.config.secrets import is_secret_name, redact_address, redact_url
from grpcmesh.model import DEFAULT_WEIGHT, MAX_WEIGHT, check_address, check_service_name
from grpcmesh.registry import BACKENDS

REGISTRY_TYPES = ("memory", "sqlite", "etcd", "consul")
"""The original ``registry.type`` values; each maps to the ``open_registry`` URL scheme of the same name."""

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

    def __repr_args__(self) -> Any:
        # URLs and addresses may carry credentials (user:pass@, ?token=): masked in repr and str.
        for name, value in super().__repr_args__():
            yield name, _redacted(name, value)

    @pydantic.model_serializer(mode="wrap")
    def _redacted_dump(self, handler: pydantic.SerializerFunctionWrapHandler) -> Any:
        # ...and in every dump, like the SecretStr fields.
        data = handler(self)
        if isinstance(data, dict):
            return {key: _redacted(key, value) for key, value in data.items()}
        return data


def _redacted(name: str | None, value: Any) -> Any:
    if not isinstance(value, str):
        return value
    return redact_address(value) if name is not None and name.endswith("address") else redact_url(value)


def _not_bool(value: Any) -> Any:
    # pydantic reads true/false as 1/0 for numbers; in a config that is always a mistake.
    if isinstance(value, bool):
        raise ValueError(f"{str(value).lower()} is not a number")
    return value


def _file_path(value: Any) -> Any:
    if isinstance(value, str) and (not value.strip() or "\0" in value):
        raise ValueError("must be a file path (not empty, no NUL character)")
    return value


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
Port = Annotated[int, pydantic.BeforeValidator(_not_bool), pydantic.AfterValidator(_port)]
Number = Annotated[float, pydantic.BeforeValidator(_not_bool)]
FilePath = Annotated[Path, pydantic.BeforeValidator(_file_path)]


def _option_value(value: Any) -> str | pydantic.SecretStr:
    if not isinstance(value, (str, pydantic.SecretStr)):
        raise ValueError("must be a string; write numbers and booleans in quotes")
    return value


OptionValue = Annotated[str | pydantic.SecretStr, pydantic.PlainValidator(_option_value)]
"""A registry option: text, held as ``SecretStr`` when its name says it is a secret."""
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
    weight: Annotated[int, pydantic.BeforeValidator(_not_bool), pydantic.Field(ge=1, le=MAX_WEIGHT)] = DEFAULT_WEIGHT
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


BALANCING_POLICIES = ("round_robin", "weighted_round_robin", "p2c", "consistent_hash")


class SuccessRateConfig(_Section):
    """``outlier.success_rate:`` — eject an endpoint whose success rate in an interval is below ``threshold``."""

    threshold: Annotated[float, pydantic.Field(ge=0.0, le=1.0)] = 0.5
    request_volume: Annotated[int, pydantic.Field(ge=1)] = 10
    minimum_hosts: Annotated[int, pydantic.Field(ge=1)] = 2


class OutlierConfig(_Section):
    """``outlier:`` — when endpoints are ejected from balancing (gRFC A50's outlier detection)."""

    consecutive_failures: Annotated[int, pydantic.Field(ge=1)] = 3
    """UNAVAILABLE / DEADLINE_EXCEEDED / connection failures in a row that eject an endpoint."""
    interval: Duration = 1.0
    """How often success rates and latencies are compared."""
    base_ejection_time: Duration = 1.0
    max_ejection_time: Duration = 30.0
    max_ejection_percent: Annotated[int, pydantic.Field(ge=0, le=100)] = 50
    success_rate: SuccessRateConfig | None = pydantic.Field(default_factory=SuccessRateConfig)
    """null disables success-rate ejection."""
    latency_factor: Annotated[float, pydantic.Field(gt=1.0)] | None = 5.0
    """Eject an endpoint whose mean latency is over this many times the median; null disables."""

    @pydantic.model_validator(mode="after")
    def _check_times(self) -> OutlierConfig:
        if not 0 < self.base_ejection_time <= self.max_ejection_time:
            raise KeyProblem("base_ejection_time", "must be > 0 and <= max_ejection_time")
        if self.interval <= 0:
            raise KeyProblem("interval", "must be > 0")
        return self


class ThrottleConfig(_Section):
    """``throttle:`` — client-side adaptive throttling (the Google SRE algorithm)."""

    enabled: bool = True
    k: Annotated[float, pydantic.Field(ge=1.0)] = 1.5
    window: Duration = 10.0
    minimum_requests: Annotated[int, pydantic.Field(ge=0)] = 20


class RetryBudgetConfig(_Section):
    """``retry_budget:`` — retries of ``retry_methods`` limited to a share of recent calls (Finagle's)."""

    ratio: Annotated[float, pydantic.Field(ge=0.0, le=1.0)] = 0.2
    minimum_per_second: Annotated[float, pydantic.Field(ge=0.0)] = 10.0
    window: Duration = 10.0


class KeepaliveConfig(_Section):
    """``keepalive:`` — HTTP/2 pings on each sub-channel while calls run, to notice a frozen peer."""

    time: Duration = 5.0
    timeout: Duration = 3.0


def _header_name(value: str) -> str:
    if not re.fullmatch(r"[0-9a-z_.-]{1,128}", value):
        raise ValueError(f"{value!r} must be a lower-case metadata key such as 'x-user-id'")
    return value


HeaderName = Annotated[str, pydantic.AfterValidator(_header_name)]
MethodPattern = Annotated[str, pydantic.AfterValidator(lambda v: _method_pattern(v))]

CLIENT_KEYS = (
    "balancing",
    "timeout",
    "method_timeouts",
    "retry_methods",
    "wait_for_ready",
    "hash_header",
    "outlier",
    "throttle",
    "retry_budget",
    "keepalive",
)
"""Keys a ``dependencies:`` entry may set to override the top-level ``client:`` defaults."""


class ClientOverrides(_Section):
    """The per-dependency client keys; unset ones take the ``client:`` section's values."""

    balancing: Literal["round_robin", "weighted_round_robin", "p2c", "consistent_hash"] | None = None
    timeout: Duration | None = None
    """Default deadline of calls that pass no timeout."""
    method_timeouts: dict[MethodPattern, Duration] | None = None
    """Method pattern ('/pkg.Service/Method', '/pkg.Service/*') → default deadline; overrides ``timeout``."""
    retry_methods: list[MethodPattern] | None = None
    """Method patterns safe to send again after they may have run (idempotent)."""
    wait_for_ready: bool | None = None
    hash_header: HeaderName | None = None
    """Metadata key whose value is the consistent-hash key."""
    outlier: OutlierConfig | None = None
    throttle: ThrottleConfig | None = None
    retry_budget: RetryBudgetConfig | None = None
    keepalive: KeepaliveConfig | None = None


class ClientConfig(_Section):
    """``client:`` — defaults for every channel (each ``dependencies:`` entry may override them)."""

    balancing: Literal["round_robin", "weighted_round_robin", "p2c", "consistent_hash"] | None = None
    """Unset means round_robin (or the ``default_policy`` a program gives its ``Mesh``)."""
    timeout: Duration | None = None
    method_timeouts: dict[MethodPattern, Duration] = pydantic.Field(default_factory=dict)
    retry_methods: list[MethodPattern] = pydantic.Field(default_factory=list)
    wait_for_ready: bool = False
    hash_header: HeaderName = "x-mesh-hash-key"
    outlier: OutlierConfig = pydantic.Field(default_factory=OutlierConfig)
    throttle: ThrottleConfig = pydantic.Field(default_factory=ThrottleConfig)
    retry_budget: RetryBudgetConfig = pydantic.Field(default_factory=RetryBudgetConfig)
    keepalive: KeepaliveConfig = pydantic.Field(default_factory=KeepaliveConfig)
    context_propagation: list[HeaderName] = pydantic.Field(default_factory=lambda: ["x-request-id", "baggage"])
    """Metadata keys carried from an incoming call to the calls its handler makes (credentials never are)."""
    deadline_margin: Duration = 0.01
    """Kept back from an inherited deadline for the reply's way back."""

    def for_dependency(self, dependency: ClientOverrides | None) -> ClientConfig:
        """These defaults with the keys ``dependency`` sets (sub-sections merged key by key)."""
        if dependency is None:
            return self
        update: dict[str, Any] = {}
        for key in dependency.model_fields_set & set(CLIENT_KEYS):
            value = getattr(dependency, key)
            if value is None:
                continue
            base = getattr(self, key)
            if isinstance(value, pydantic.BaseModel) and isinstance(base, pydantic.BaseModel):
                value = base.model_copy(update={k: getattr(value, k) for k in value.model_fields_set})
            update[key] = value
        return self.model_copy(update=update)


class SheddingConfig(_Section):
    """``service.load_shedding:`` — refuse calls with RESOURCE_EXHAUSTED when the event loop lags."""

    enabled: bool = False
    max_queue_delay: Duration = 0.02
    """Queueing delay before the handler starts that, kept up for ``interval``, makes the server refuse calls."""
    interval: Duration = 0.1
    max_lag: Duration = 0.05
    cooldown: Duration = 1.0
    minimum_in_flight: Annotated[int, pydantic.Field(ge=1)] = 2
    window: Duration = 2.0


class DependencyConfig(ClientOverrides):
    """One ``dependencies:`` entry: a service this one calls (and, optionally, how to call it)."""

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
    cert_file: FilePath | None = None
    key_file: FilePath | None = None
    ca_file: FilePath | None = None
    """CA bundle that signs peer certificates (needed for mTLS)."""
    client_auth: bool = False
    """Require and verify client certificates (mTLS)."""
    allowed_callers: dict[ServiceName, list[Annotated[str, pydantic.AfterValidator(_method_pattern)]]] = pydantic.Field(
        default_factory=dict
    )
    """Caller service -> method patterns it may call; empty allows every authenticated caller."""
    public_reflection: bool = False
    """With ``service_auth_key`` set, also serve reflection (every method's full schema) to callers without the key."""

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
