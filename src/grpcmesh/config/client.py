"""Client settings: the ``client:`` section and the per-dependency overrides of it."""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

import pydantic

from grpcmesh.config.durations import Duration
from grpcmesh.config.fields import KeyProblem, MethodPattern, Number, Whole
from grpcmesh.config.fields import Section as _Section

BALANCING_POLICIES = ("round_robin", "weighted_round_robin", "p2c", "consistent_hash")


class SuccessRateConfig(_Section):
    """``outlier.success_rate:`` — eject an endpoint whose success rate in an interval is below ``threshold``."""

    threshold: Annotated[Number, pydantic.Field(ge=0.0, le=1.0)] = 0.5
    request_volume: Annotated[Whole, pydantic.Field(ge=1)] = 10
    minimum_hosts: Annotated[Whole, pydantic.Field(ge=1)] = 2


class OutlierConfig(_Section):
    """``outlier:`` — when endpoints are ejected from balancing (gRFC A50's outlier detection)."""

    consecutive_failures: Annotated[Whole, pydantic.Field(ge=1)] = 3
    """UNAVAILABLE / DEADLINE_EXCEEDED / connection failures in a row that eject an endpoint."""
    interval: Duration = 1.0
    """How often success rates and latencies are compared."""
    base_ejection_time: Duration = 1.0
    max_ejection_time: Duration = 30.0
    max_ejection_percent: Annotated[Whole, pydantic.Field(ge=0, le=100)] = 50
    success_rate: SuccessRateConfig | None = pydantic.Field(default_factory=SuccessRateConfig)
    """null disables success-rate ejection."""
    latency_factor: Annotated[Number, pydantic.Field(gt=1.0)] | None = 5.0
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
    k: Annotated[Number, pydantic.Field(ge=1.0)] = 1.5
    window: Duration = 10.0
    minimum_requests: Annotated[Whole, pydantic.Field(ge=0)] = 20


class RetryBudgetConfig(_Section):
    """``retry_budget:`` — retries of ``retry_methods`` limited to a share of recent calls (Finagle's)."""

    ratio: Annotated[Number, pydantic.Field(ge=0.0, le=1.0)] = 0.2
    minimum_per_second: Annotated[Number, pydantic.Field(ge=0.0)] = 10.0
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
    """``service.load_shedding:`` — refuse calls with RESOURCE_EXHAUSTED in an overload (README, "Load shedding")."""

    enabled: bool = False
    queue_delay_factor: Annotated[Number, pydantic.Field(ge=0.0, le=10.0)] = 0.3
    """Queueing target as a fraction of the shortest recent handler time (0: fixed ``max_queue_delay``);
    a queueing delay above it, kept up for ``interval``, makes the server refuse calls."""
    min_queue_delay: Duration = 0.002
    """Floor of the relative queueing target."""
    max_queue_delay: Duration = 0.01
    """Queueing target until a handler time is known, or always with ``queue_delay_factor: 0``."""
    interval: Duration = 0.05
    """How long waits must stay above the target before calls are refused (at most; see ``interval_factor``)."""
    interval_factor: Annotated[Number, pydantic.Field(ge=0.0, le=100.0)] = 2.0
    """Persistence window as a multiple of the shortest recent handler time, within ``min_interval``..``interval``
    (0: always ``interval``)."""
    min_interval: Duration = 0.01
    max_lag: Duration = 0.05
    arrival_factor: Annotated[Number, pydantic.Field(ge=0.0, le=100.0)] = 2.0
    """A persistent queue sheds at once only while calls arrive this many times as fast as the server
    completes them (0: every persistent queue sheds, the fastest onset)."""
    sustained_interval: Duration = 0.2
    """A call that waited this long sheds whatever the arrival rate (a milder overload)."""
    cooldown: Duration = 1.0
    """Longest an episode outlives its last refusal when the server is never seen idle."""
    minimum_in_flight: Annotated[Whole, pydantic.Field(ge=1)] = 2
    window: Duration = 2.0
