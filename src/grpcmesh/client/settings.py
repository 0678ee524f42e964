"""How a channel calls one service: default timeouts, retries, outlier, throttle, budget, keepalive.

``CallSettings`` gathers, per dependency, what the ``client:`` section of the configuration
(and a ``dependencies:`` entry's overrides) says, so ``Mesh.channel(name)`` hands one object
to the channel. Method patterns are full method names (``/pkg.Service/Method``), a service
wildcard (``/pkg.Service/*``) or ``*``; for timeouts the most specific pattern wins.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from grpcmesh.client.outlier import OutlierPolicy, SuccessRatePolicy
from grpcmesh.client.retry_budget import RetryBudgetPolicy
from grpcmesh.client.throttle import ThrottlePolicy
from grpcmesh.context import Propagation
from grpcmesh.errors import ConfigError

if TYPE_CHECKING:
    from grpcmesh.config.models import ClientConfig


def _pattern(text: str) -> str:
    if not isinstance(text, str):
        raise ConfigError(f"method pattern {text!r} must be a string such as '/pkg.Service/Method'")
    if text == "*":
        return text
    stripped = text.strip().strip("/")
    service, _, method = stripped.rpartition("/")
    if not service or not method or " " in stripped or ("*" in method and method != "*") or "*" in service:
        raise ConfigError(f"method pattern {text!r} must be '/pkg.Service/Method', '/pkg.Service/*' or '*'")
    return "/" + stripped


class MethodPatterns:
    """Full method name → the value of the most specific matching pattern (exact, then service, then ``*``)."""

    __slots__ = ("_cache", "_exact", "_services", "_star")

    def __init__(self, patterns: Mapping[str, Any]) -> None:
        self._exact: dict[str, Any] = {}
        self._services: dict[str, Any] = {}
        self._star: Any = None
        for raw, value in patterns.items():
            pattern = _pattern(raw)
            if pattern == "*":
                self._star = value
            elif pattern.endswith("/*"):
                self._services[pattern[:-1]] = value
            else:
                self._exact[pattern] = value
        self._cache: dict[str, Any] = {}

    def __bool__(self) -> bool:
        return bool(self._exact or self._services or self._star is not None)

    def get(self, method: str) -> Any:
        found = self._cache.get(method, _MISSING)
        if found is _MISSING:
            name = "/" + method.strip("/")
            found = self._exact.get(name)
            if found is None:
                found = self._services.get(name[: name.rfind("/") + 1])
            if found is None:
                found = self._star
            if len(self._cache) < 4096:
                self._cache[method] = found
        return found


_MISSING: Any = object()


@dataclass(frozen=True)
class Keepalive:
    """HTTP/2 keepalive pings while calls run: a peer that does not answer within ``timeout`` is dropped."""

    time: float = 5.0
    timeout: float = 3.0

    def channel_options(self) -> tuple[tuple[str, int], ...]:
        timeout_ms = max(1, round(self.timeout * 1000))
        return (
            ("grpc.keepalive_time_ms", max(1, round(self.time * 1000))),
            ("grpc.keepalive_timeout_ms", timeout_ms),
            # grpc core times keepalive pings out with the general ping timeout (60 s by
            # default), not keepalive_timeout_ms alone: without this a frozen peer is
            # noticed only after a minute.
            ("grpc.http2.ping_timeout_ms", timeout_ms),
        )


@dataclass(frozen=True)
class CallSettings:
    """One dependency's call semantics (each field documented in the README's "Call semantics")."""

    timeout: float | None = None
    method_timeouts: Mapping[str, float] = field(default_factory=dict)
    wait_for_ready: bool = False
    retry_methods: tuple[str, ...] = ()
    outlier: OutlierPolicy = field(default_factory=OutlierPolicy)
    throttle: ThrottlePolicy = field(default_factory=ThrottlePolicy)
    retry_budget: RetryBudgetPolicy = field(default_factory=RetryBudgetPolicy)
    keepalive: Keepalive | None = field(default_factory=Keepalive)
    propagation: Propagation = field(default_factory=Propagation)
    balancing: str | None = None
    """The load-balancing policy (used by ``ClientManager`` when the caller names none)."""
    hash_header: str | None = None
    """The metadata key holding the consistent-hash key (used by ``ClientManager``)."""
    _timeouts: MethodPatterns = field(init=False, repr=False, compare=False)
    _retry: MethodPatterns = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.timeout is not None and self.timeout <= 0:
            raise ConfigError(f"timeout: {self.timeout!r} must be > 0 seconds")
        timeouts = dict(self.method_timeouts)
        for pattern, value in timeouts.items():
            if value <= 0:
                raise ConfigError(f"method_timeouts[{pattern!r}]: {value!r} must be > 0 seconds")
        patterns = dict(timeouts)
        if self.timeout is not None:
            patterns.setdefault("*", self.timeout)
        object.__setattr__(self, "_timeouts", MethodPatterns(patterns))
        object.__setattr__(self, "_retry", MethodPatterns(dict.fromkeys(self.retry_methods, True)))

    def default_timeout(self, method: str) -> float | None:
        """The deadline of a call to ``method`` that passes no timeout of its own."""
        found: float | None = self._timeouts.get(method)
        return found

    def may_retry_method(self, method: str) -> bool:
        return bool(self._retry.get(method))

    @classmethod
    def from_config(cls, client: ClientConfig) -> CallSettings:
        """Settings from a resolved ``client:`` section (see ``MeshConfig.client_for``)."""
        outlier = client.outlier
        rate = outlier.success_rate
        return cls(
            timeout=client.timeout,
            method_timeouts=dict(client.method_timeouts),
            wait_for_ready=client.wait_for_ready,
            retry_methods=tuple(client.retry_methods),
            outlier=OutlierPolicy(
                consecutive_failures=outlier.consecutive_failures,
                base_ejection=outlier.base_ejection_time,
                max_ejection=outlier.max_ejection_time,
                max_ejection_percent=outlier.max_ejection_percent,
                interval=outlier.interval,
                success_rate=None
                if rate is None
                else SuccessRatePolicy(rate.threshold, rate.request_volume, rate.minimum_hosts),
                latency_factor=outlier.latency_factor,
            ),
            throttle=ThrottlePolicy(**client.throttle.model_dump()),
            retry_budget=RetryBudgetPolicy(**client.retry_budget.model_dump()),
            keepalive=Keepalive(client.keepalive.time, client.keepalive.timeout) if client.keepalive.time > 0 else None,
            propagation=Propagation(client.context_propagation, margin=client.deadline_margin),
            balancing=client.balancing,
            hash_header=client.hash_header,
        )


def normalize_methods(methods: Iterable[str]) -> tuple[str, ...]:
    """Validated method patterns (a bad one is a ``ConfigError`` naming it)."""
    return tuple(_pattern(m) for m in methods)
