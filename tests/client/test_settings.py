"""Per-dependency call settings: method patterns, default timeouts, config mapping."""

from __future__ import annotations

import pytest

from grpcmesh.client.settings import CallSettings, Keepalive, MethodPatterns, normalize_methods
from grpcmesh.config.models import MeshConfig
from grpcmesh.errors import ConfigError


def test_the_most_specific_method_pattern_wins() -> None:
    patterns = MethodPatterns({"*": 1, "/pkg.Orders/*": 2, "/pkg.Orders/Get": 3})
    assert patterns.get("/pkg.Orders/Get") == 3
    assert patterns.get("pkg.Orders/Get") == 3  # the leading slash is optional
    assert patterns.get("/pkg.Orders/List") == 2
    assert patterns.get("/pkg.Users/Get") == 1
    assert MethodPatterns({"/pkg.Orders/*": 2}).get("/pkg.Users/Get") is None
    assert not MethodPatterns({})


@pytest.mark.parametrize("bad", ["Get", "/pkg.Orders/Ge*", "/pkg.*/Get", "/has space/Get", ""])
def test_bad_method_patterns_are_config_errors(bad: str) -> None:
    with pytest.raises(ConfigError):
        normalize_methods([bad])


def test_default_timeouts_and_retry_methods() -> None:
    settings = CallSettings(timeout=2.0, method_timeouts={"/pkg.Orders/*": 0.5}, retry_methods=("/pkg.Orders/Get",))
    assert settings.default_timeout("/pkg.Orders/Create") == 0.5
    assert settings.default_timeout("/pkg.Users/Get") == 2.0
    assert CallSettings().default_timeout("/pkg.Users/Get") is None
    assert settings.may_retry_method("/pkg.Orders/Get")
    assert not settings.may_retry_method("/pkg.Orders/Create")
    with pytest.raises(ConfigError):
        CallSettings(timeout=0.0)
    with pytest.raises(ConfigError):
        CallSettings(method_timeouts={"/pkg.Orders/*": -1.0})


def test_settings_from_a_dependency_entry() -> None:
    config = MeshConfig.model_validate(
        {
            "client": {"keepalive": {"time": "0s"}, "context_propagation": ["x-request-id", "x-tenant"]},
            "dependencies": [
                {
                    "name": "orders",
                    "balancing": "p2c",
                    "hash_header": "x-user",
                    "outlier": {"success_rate": None, "latency_factor": None, "consecutive_failures": 7},
                    "throttle": {"enabled": False},
                    "retry_budget": {"ratio": 0.1},
                }
            ],
        }
    )
    settings = CallSettings.from_config(config.client_for("orders"))
    assert (settings.balancing, settings.hash_header) == ("p2c", "x-user")
    assert settings.outlier.consecutive_failures == 7
    assert settings.outlier.success_rate is None
    assert settings.outlier.latency_factor is None
    assert not settings.throttle.enabled
    assert settings.retry_budget.ratio == 0.1
    assert settings.keepalive is None  # time 0 turns keepalive off
    assert settings.propagation.keys == {"x-request-id", "x-tenant"}
    assert dict(Keepalive(5.0, 3.0).channel_options())["grpc.http2.ping_timeout_ms"] == 3000
