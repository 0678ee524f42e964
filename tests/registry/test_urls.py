"""Registry URLs: malformed ones are clear ``ConfigError``s, and secrets in a URL are never echoed."""

from __future__ import annotations

import pytest

from grpcmesh import ConfigError, MeshError, open_registry
from grpcmesh.registry import redact_url

SECRET = "hunter2-secret"


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("etcd://[::1", "malformed"),
        (f"etcd://[::1?password={SECRET}", "malformed"),
        ("etcd://127.0.0.1:99999", "invalid port"),
        ("consul://127.0.0.1:99999", "invalid port"),
        (f"consul://127.0.0.1:0?token={SECRET}", "port 0"),
        (f"etcd://root:{SECRET}@127.0.0.1:2379", "username and password options"),
        (f"consul://root:{SECRET}@127.0.0.1:8500", "token option"),
        (f"sqlite://root:{SECRET}@host/x.db", "sqlite:///abs/path.db"),
        (f"nosuch://root:{SECRET}@host?password={SECRET}", "unknown registry scheme"),
        (f"etcd://127.0.0.1:2379?password={SECRET}&colour=blue", "colour"),
    ],
)
def test_bad_urls_are_clear_errors_without_secrets(url: str, problem: str) -> None:
    with pytest.raises(MeshError) as caught:
        open_registry(url)
    assert isinstance(caught.value, ValueError)  # ConfigError / UnknownSchemeError: MeshError and ValueError
    assert problem in str(caught.value)
    assert SECRET not in str(caught.value)
    assert SECRET not in repr(caught.value)
    assert caught.value.__cause__ is None or SECRET not in str(caught.value.__cause__)


def test_malformed_url_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match=r"registry URL 'etcd://\[::1' is malformed"):
        open_registry("etcd://[::1")


def test_redact_url() -> None:
    assert redact_url(f"etcd://u:{SECRET}@h:1/p?password={SECRET}&tls=1&token={SECRET}&auth_key={SECRET}") == (
        "etcd://***@h:1/p?password=***&tls=1&token=***&auth_key=***"
    )
    assert redact_url("memory://x") == "memory://x"
