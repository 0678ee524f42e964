"""Hostile configuration: alias bombs, oversize and deep documents, secrets in every error and rendering."""

from __future__ import annotations

import tracemalloc
from pathlib import Path

import pydantic
import pytest

from grpcmesh import ConfigError
from grpcmesh.config import load_config, parse_config
from grpcmesh.config.documents import MAX_BYTES, MAX_DEPTH, MAX_NODES
from grpcmesh.config.loader import MAX_PROBLEMS
from grpcmesh.config.secrets import is_secret_name, redact_address, redact_url

CANARY = "CANARY-7f3a9c-s3cr3t"


def alias_bomb(levels: int, fan_out: int = 10, value: str = "${X:-lol}") -> str:
    """A "billion laughs": level n lists level n-1 ``fan_out`` times, so it names fan_out**levels strings."""
    lines = [f'a0: &a0 ["{value}"]']
    for level in range(1, levels + 1):
        refs = ", ".join(f"*a{level - 1}" for _ in range(fan_out))
        lines.append(f"a{level}: &a{level} [{refs}]")
    return "service:\n  name: svc\n  metadata:\n" + "".join(f"    {line}\n" for line in lines)


def config_error(document: object, env: dict[str, str] | None = None) -> str:
    with pytest.raises(ConfigError) as info:
        parse_config(document, env=env or {})  # type: ignore[arg-type]
    return str(info.value)


# --- bounded parsing ------------------------------------------------------------------------------


@pytest.mark.timeout(60)
def test_billion_laughs_is_refused_before_expansion() -> None:
    text = alias_bomb(levels=9)
    assert len(text) < 700  # a few hundred bytes naming 10**9 strings
    tracemalloc.start()
    try:
        message = config_error(text)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert f"expands to more than {MAX_NODES} values" in message
    assert peak < 50 * 1024 * 1024  # the bomb is measured, never built


def test_moderate_alias_expansion_is_refused_too() -> None:
    # 10**6 strings: before the bound this was expanded by interpolation (and then failed validation).
    assert f"expands to more than {MAX_NODES} values" in config_error(alias_bomb(levels=6))


def test_merge_key_bomb_is_refused() -> None:
    lines = ["m0: &m0 {k0: v}"]
    for level in range(1, 30):
        lines.append(f"m{level}: &m{level} {{<<: [*m{level - 1}, *m{level - 1}], k{level}: v}}")
    text = "x:\n" + "".join(f"  {line}\n" for line in lines)
    assert "expands to more than" in config_error(text)


def test_plain_aliases_still_work() -> None:
    text = "service:\n  name: svc\n  metadata: &meta {zone: a}\nregistry:\n  options: *meta\n"
    config = parse_config(text, env={})
    assert config.service is not None
    assert config.service.metadata == {"zone": "a"}
    assert config.registry.options == {"zone": "a"}


def test_deep_nesting_is_refused() -> None:
    assert "nested more than" in config_error("x: " + "[" * (MAX_DEPTH + 5) + "]" * (MAX_DEPTH + 5) + "\n")
    assert "nested more than" in config_error("x: " + "[" * 100_000)  # refused before the parser recurses


def test_deep_block_nesting_is_refused_while_scanning() -> None:
    body = "".join(f"{'  ' * level}k{level}:\n" for level in range(300))
    assert "nested more than" in config_error(body)
    assert "nested more than" in config_error("x: " + "{a: " * 100_000)


def test_deep_python_mapping_is_refused() -> None:
    document: dict[str, object] = {}
    inner = document
    for _ in range(MAX_DEPTH + 5):
        child: dict[str, object] = {}
        inner["x"] = child
        inner = child
    assert "nested more than" in config_error(document)


def test_oversize_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "big.yaml"
    path.write_text("service:\n  name: svc\n# " + "x" * MAX_BYTES + "\n")
    with pytest.raises(ConfigError, match="larger than"):
        load_config(path, env={})
    assert "at most" in config_error("# " + "x" * MAX_BYTES)


@pytest.mark.parametrize(
    "text",
    [
        "x: [" + "1," * 400_000 + "]\n",
        "x:\n" + "- 1\n" * 200_000,
        "".join(f"k{i}: v\n" for i in range(120_000)),
    ],
)
def test_long_flat_documents_are_refused_while_composing(text: str) -> None:
    tracemalloc.start()
    try:
        message = config_error(text[:MAX_BYTES])
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert f"expands to more than {MAX_NODES} values" in message
    assert peak < 100 * 1024 * 1024  # at most MAX_NODES nodes are ever built


def test_thousands_of_bad_keys_are_summarised() -> None:
    document = {f"k{i}": "v" for i in range(15_000)}
    with pytest.raises(ConfigError) as info:
        parse_config(document, env={})
    assert len(info.value.problems) == MAX_PROBLEMS
    assert str(info.value).startswith("<config>: 15000 configuration problems:")
    assert str(info.value).endswith(f"... and {15_000 - MAX_PROBLEMS} more")


def test_interpolated_output_is_bounded() -> None:
    # 5,000 references to a 4 KiB variable would build 20 MB of strings.
    document = {"service": {"name": "svc", "metadata": {f"k{i}": "${BIG}" for i in range(5000)}}}
    assert "characters" in config_error(document, {"BIG": "x" * 4096})


# --- secrets --------------------------------------------------------------------------------------


def test_yaml_syntax_error_on_secret_line_does_not_quote_it() -> None:
    message = config_error(f"security:\n  service_auth_key: {CANARY}: oops\n")
    assert CANARY not in message
    assert "line 2" in message


def test_yaml_syntax_error_without_secrets_still_quotes_the_line() -> None:
    message = config_error("service:\n  name: a: b\n")
    assert "name: a: b" in message
    assert "line 2" in message


def test_yaml_tag_error_does_not_quote_a_secret() -> None:
    assert CANARY not in config_error(f"security:\n  service_auth_key: !!int {CANARY}\n")


def test_env_secret_starting_with_brace_is_a_plain_string() -> None:
    for key in ("{" + CANARY, "[" + CANARY, "{" + CANARY + "}"):
        config = parse_config({}, env={"GRPCMESH_SECURITY_SERVICE_AUTH_KEY": key})
        assert config.security.service_auth_key is not None
        assert config.security.service_auth_key.get_secret_value() == key
        assert CANARY not in repr(config)


def test_env_mapping_values_are_still_parsed_and_errors_do_not_quote_them() -> None:
    config = parse_config({"service": {"name": "svc"}}, env={"GRPCMESH_SERVICE_METADATA": '{"zone": "a"}'})
    assert config.service is not None
    assert config.service.metadata == {"zone": "a"}
    message = config_error({}, {"GRPCMESH_REGISTRY_OPTIONS": '{"password": "' + CANARY})
    assert "GRPCMESH_REGISTRY_OPTIONS" in message
    assert CANARY not in message


@pytest.mark.parametrize("option", ["password", "token", "consul_token", "secret", "apiKey"])
def test_secret_registry_options_are_hidden_in_every_rendering(option: str) -> None:
    config = parse_config({"registry": {"url": "etcd://h:2379", "options": {option: CANARY, "timeout": "5"}}}, env={})
    for text in (repr(config), str(config), config.model_dump_json(), repr(config.model_dump()), repr(config.registry)):
        assert CANARY not in text
    assert config.registry.backend_options() == {option: CANARY, "timeout": "5"}


def test_secret_option_type_errors_do_not_quote_the_value() -> None:
    for bad in ([CANARY], {"x": CANARY}, 12345):
        message = config_error({"registry": {"options": {"password": bad}}})
        assert "registry.options.password" in message
        assert CANARY not in message


def test_secret_type_errors_do_not_quote_the_value() -> None:
    assert CANARY not in config_error({"security": {"service_auth_key": [CANARY]}})
    assert CANARY not in config_error({"security": {"service_auth_key": {"k": CANARY}}})


def test_malformed_reference_in_a_secret_is_not_quoted() -> None:
    message = config_error({"security": {"service_auth_key": "ab${" + CANARY + "}"}})
    assert "security.service_auth_key" in message
    assert CANARY not in message
    message = config_error({"registry": {"url": "etcd://user:${" + CANARY + "}@h:2379"}})
    assert "registry.url" in message
    assert CANARY not in message
    assert "'${not a name}'" in config_error({"service": {"name": "${not a name}"}})


@pytest.mark.parametrize(
    "url",
    [
        f"nope://user:{CANARY}@host:1",
        f"nope://host:1/?password={CANARY}",
        f"user:{CANARY}@host:1",
        f"nope://host:1/?a=1&token={CANARY}",
    ],
)
def test_registry_url_errors_mask_credentials(url: str) -> None:
    message = config_error({"registry": {"url": url}})
    assert "registry.url" in message
    assert CANARY not in message


@pytest.mark.parametrize(
    ("registry", "problem"),
    [
        ({"url": "etcd://[::1"}, "registry.url: 'etcd://[::1' is not a valid URL"),
        ({"url": f"etcd://u:{CANARY}@[::1"}, "registry.url: 'etcd://***@[::1' is not a valid URL"),
        ({"url": "consul://host:99999"}, "registry.url: port '99999'"),
        ({"url": "etcd://a:2379,b:0"}, "registry.url: port '0'"),
        ({"url": "etcd://h:abc"}, "registry.url: port 'abc'"),
        ({"type": "consul", "address": "host:70000"}, "registry.address: port '70000'"),
    ],
)
def test_registry_url_hosts_and_ports_are_checked(registry: dict[str, str], problem: str) -> None:
    assert problem in config_error({"registry": registry})


def test_registry_url_forms_still_accepted() -> None:
    for url in (
        "etcd://a:2379,b:2379",
        "etcd://[::1]:2379",
        "consul://localhost:8500",
        "sqlite:///tmp/x.db",
        "memory://",
    ):
        assert parse_config({"registry": {"url": url}}, env={}).registry.resolved_url == url


def test_registry_url_and_address_credentials_are_masked_in_renderings() -> None:
    config = parse_config({"registry": {"url": f"etcd://user:{CANARY}@h:2379/?token={CANARY}"}}, env={})
    for text in (repr(config), str(config), config.model_dump_json()):
        assert CANARY not in text
    assert config.registry.resolved_url == f"etcd://user:{CANARY}@h:2379/?token={CANARY}"
    config = parse_config({"registry": {"type": "etcd", "address": f"user:{CANARY}@h:2379"}}, env={})
    assert CANARY not in repr(config)
    assert CANARY not in config.model_dump_json()


def test_secret_names_and_redaction_helpers() -> None:
    for name in ("service_auth_key", "password", "token", "X-Consul-Token", "apiKey", "db_passwd", "secret"):
        assert is_secret_name(name), name
    for name in ("name", "monkey", "keys", "username", "timeout", "options", "namespace"):
        assert not is_secret_name(name), name
    assert redact_url("etcd://u:p@h:1/?password=x&a=1") == "etcd://***@h:1/?password=***&a=1"
    assert redact_address("u:p@h:1") == "***@h:1"
    assert redact_url("sqlite:///tmp/x.db") == "sqlite:///tmp/x.db"


# --- coercion -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("section", "key"),
    [("service", "port"), ("service", "weight"), ("metrics", "prometheus_port"), ("tracing", "sample_rate")],
)
def test_booleans_are_not_numbers(section: str, key: str) -> None:
    document: dict[str, dict[str, object]] = {section: {key: True}}
    if section == "service":
        document[section]["name"] = "svc"
    assert f"{section}.{key}" in config_error(document)


def test_booleans_are_not_numbers_in_client_settings() -> None:
    message = config_error({"client": {"outlier": {"consecutive_failures": True}, "throttle": {"k": False}}})
    assert "client.outlier.consecutive_failures" in message
    assert "client.throttle.k" in message


def test_numbers_from_interpolation_and_env_still_parse() -> None:
    env = {"GRPCMESH_TRACING_SAMPLE_RATE": "0.5"}
    config = parse_config({"service": {"name": "svc", "port": "${PORT:-0}"}}, env=env)
    assert config.service is not None
    assert config.service.port == 0
    assert config.tracing.sample_rate == 0.5


@pytest.mark.parametrize("value", [10**400, "1e400", "nan", "inf", "-1s", -1, float("inf"), float("nan")])
def test_out_of_range_durations_are_config_errors(value: object) -> None:
    assert "registry.check_interval" in config_error({"registry": {"check_interval": value}})


@pytest.mark.parametrize("value", ["1_000", "1 0s", "1e3s", " ", ""])
def test_odd_duration_texts_are_refused(value: str) -> None:
    assert "registry.check_interval" in config_error({"registry": {"check_interval": value}})


def test_duration_parts_may_be_spaced_and_check_interval_must_be_positive() -> None:
    assert parse_config({"registry": {"check_interval": "1m 30s"}}, env={}).registry.check_interval == 90.0
    assert "must be more than 0s" in config_error({"registry": {"check_interval": 0}})


def test_empty_certificate_paths_are_refused() -> None:
    message = config_error({"security": {"tls_enabled": True, "cert_file": "", "key_file": " "}})
    assert "security.cert_file" in message
    assert "security.key_file" in message


@pytest.mark.parametrize(
    ("value", "env", "expected"),
    [
        ("${A:-${B}}", {"B": "bee"}, "bee"),
        ("${A:-${B}}", {"A": "ay", "B": "bee"}, "ay"),
        ("${A:-${B:-${C:-sea}}}", {}, "sea"),
        ("x-${A:-${B:-b}-y}-z", {}, "x-b-y-z"),
        ("${A:-$${B}}", {}, "${B}"),
        ("${A:-}", {}, ""),
    ],
)
def test_nested_default_interpolation(value: str, env: dict[str, str], expected: str) -> None:
    config = parse_config({"service": {"name": "svc", "metadata": {"v": value}}}, env=env)
    assert config.service is not None
    assert config.service.metadata["v"] == expected


def test_interpolation_nesting_and_unclosed_references_are_errors() -> None:
    deep = "${A:-" * 20 + "x" + "}" * 20
    assert "nested more than" in config_error({"service": {"name": "svc", "metadata": {"v": deep}}})
    assert "no closing" in config_error({"service": {"name": "svc", "metadata": {"v": "${A"}}})


def test_validation_errors_are_pydantic_free() -> None:
    # Every failure above is a ConfigError, never a raw pydantic/YAML/Python error.
    with pytest.raises(ConfigError):
        parse_config({"registry": {"options": {"password": object()}}}, env={})
    assert not issubclass(ConfigError, pydantic.ValidationError)
