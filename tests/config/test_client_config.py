"""The ``client:`` section, its per-dependency overrides and ``service.load_shedding``."""

from __future__ import annotations

from pathlib import Path

import pytest

from grpcmesh import ConfigError, load_config

YAML = """
service:
  name: user-service
  load_shedding:
    enabled: true
    max_lag: 80ms
    interval_factor: 1.5
    min_interval: 20ms
    arrival_factor: 0
    sustained_interval: 150ms
client:
  balancing: p2c
  timeout: 2s
  method_timeouts:
    /shop.order.v1.OrderService/*: 1s
  retry_methods: ["/shop.order.v1.OrderService/GetOrder"]
  outlier:
    consecutive_failures: 3
    base_ejection_time: 500ms
  context_propagation: [x-request-id, baggage, x-tenant]
  deadline_margin: 20ms
dependencies:
  - name: order-service
    required: false
    timeout: 300ms
    wait_for_ready: true
    outlier:
      max_ejection_percent: 34
  - name: payment-service
"""


def test_dependency_keys_override_the_client_defaults(tmp_path: Path) -> None:
    path = tmp_path / "user.yaml"
    path.write_text(YAML)
    config = load_config(path)
    order = config.client_for("order-service")
    assert (order.balancing, order.timeout, order.wait_for_ready) == ("p2c", 0.3, True)
    # Sub-sections merge key by key: the dependency's percent, the defaults' other keys.
    assert (order.outlier.max_ejection_percent, order.outlier.consecutive_failures) == (34, 3)
    assert order.outlier.base_ejection_time == 0.5
    payment = config.client_for("payment-service")
    assert (payment.timeout, payment.wait_for_ready, payment.outlier.max_ejection_percent) == (2.0, False, 50)
    assert config.client_for("not-listed") == config.client
    assert config.client.method_timeouts == {"/shop.order.v1.OrderService/*": 1.0}
    assert config.client.context_propagation == ["x-request-id", "baggage", "x-tenant"]
    assert config.client.deadline_margin == 0.02
    assert config.service is not None
    assert config.service.load_shedding.enabled
    assert config.service.load_shedding.max_lag == 0.08
    from grpcmesh.mesh import _shedding_policy

    policy = _shedding_policy(config.service.load_shedding)
    assert (policy.enabled, policy.max_lag, policy.interval_factor, policy.min_interval) == (True, 0.08, 1.5, 0.02)
    assert (policy.arrival_factor, policy.sustained_interval) == (0.0, 0.15)


@pytest.mark.parametrize(
    ("snippet", "key"),
    [
        ("client:\n  balancing: random\n", "balancing"),
        ("client:\n  outlier:\n    max_ejection_percent: 150\n", "max_ejection_percent"),
        ("client:\n  outlier:\n    base_ejection_time: 10s\n    max_ejection_time: 1s\n", "base_ejection_time"),
        ("client:\n  hash_header: 'Not A Header'\n", "hash_header"),
        ("client:\n  throttle:\n    k: 0.5\n", "k"),
        ("dependencies:\n  - name: a\n    retry_methods: ['has space']\n", "retry_methods"),
        ("dependencies:\n  - name: a\n    timeot: 1s\n", "timeot"),
    ],
)
def test_bad_client_settings_name_the_key(tmp_path: Path, snippet: str, key: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(snippet)
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert key in str(caught.value)
