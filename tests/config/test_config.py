"""Configuration: the seed's YAML loads; every kind of bad input is one ConfigError naming file and key path."""

from __future__ import annotations

from pathlib import Path

import pytest

from grpcmesh import ConfigError, MeshConfig, load_config
from grpcmesh.config import parse_config, parse_duration

FIXTURES = Path(__file__).parent / "fixtures"
SEED = FIXTURES / "user-service.yaml"


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "service.yaml"
    path.write_text(text)
    return path


def test_seed_example_loads() -> None:
    config = load_config(SEED, env={"SERVICE_AUTH_KEY": "s3cret-key"})
    assert isinstance(config, MeshConfig)
    assert config.service is not None
    assert (config.service.name, config.service.version, config.service.port) == ("user-service", "v1.0.0", 50051)
    assert config.registry.resolved_url == "consul://localhost:8500"
    assert (config.registry.check_interval, config.registry.deregister_after) == (10.0, 30.0)
    assert [(d.name, d.version, d.required) for d in config.dependencies] == [
        ("order-service", "v1", True),
        ("payment-service", "v1", False),
    ]
    assert config.security.service_auth_key is not None
    assert config.security.service_auth_key.get_secret_value() == "s3cret-key"
    assert config.security.tls_enabled
    assert config.security.cert_file == Path("/etc/certs/service.crt")
    assert config.tracing.enabled
    assert config.tracing.sample_rate == 0.1
    assert config.tracing.endpoint == "http://jaeger:14268/api/traces"
    assert config.metrics.enabled
    assert config.metrics.prometheus_port == 9090
    assert "s3cret-key" not in repr(config)


def test_seed_example_without_its_variable_names_variable_key_and_file() -> None:
    with pytest.raises(ConfigError) as info:
        load_config(SEED, env={})
    message = str(info.value)
    assert "SERVICE_AUTH_KEY" in message
    assert "security.service_auth_key" in message
    assert str(SEED) in message
    assert info.value.file == str(SEED)


BAD_INPUTS = {
    "missing key": (
        "dependencies:\n  - name: order-service\n  - version: v1\n",
        "dependencies[1].name",
        "is required",
    ),
    "wrong type": ("service:\n  name: user-service\n  port: fifty\n", "service.port", "valid integer"),
    "bad port": ("service:\n  name: user-service\n  port: 70000\n", "service.port", "not a TCP port"),
    "negative port": ("metrics:\n  prometheus_port: -1\n", "metrics.prometheus_port", "not a TCP port"),
    "unset variable": ("service:\n  name: ${MISSING_NAME}\n", "service.name", "MISSING_NAME is not set"),
    "unknown registry scheme": ("registry:\n  url: zookeeper://zk:2181\n", "registry.url", "unknown registry scheme"),
    "unknown registry type": ("registry:\n  type: zookeeper\n  address: zk:2181\n", "registry.type", "'consul'"),
    "registry url and type": ("registry:\n  url: memory://\n  type: memory\n", "registry.url", "not both"),
    "etcd without address": ("registry:\n  type: etcd\n", "registry.address", "required for type etcd"),
    "bad duration": ("registry:\n  check_interval: 10 parsecs\n", "registry.check_interval", "not a duration"),
    "unknown key": ("service:\n  name: user-service\n  prot: 1\n", "service.prot", "did you mean 'port'"),
    "unknown section": ("servise:\n  name: a\n", "servise", "did you mean 'service'"),
    "bad service name": ("service:\n  name: User_Service\n", "service.name", "not a valid service name"),
    "tls without cert": ("security:\n  tls_enabled: true\n  key_file: k.pem\n", "security.cert_file", "tls_enabled"),
    "mtls without ca": (
        "security:\n  tls_enabled: true\n  cert_file: c\n  key_file: k\n  client_auth: true\n",
        "security.ca_file",
        "client_auth",
    ),
    "sample rate": ("tracing:\n  sample_rate: 1.5\n", "tracing.sample_rate", "0.0 to 1.0"),
    "duplicate dependency": (
        "dependencies:\n  - name: a\n  - name: a\n",
        "dependencies[1].name",
        "listed twice",
    ),
    "unquoted version": ("service:\n  name: a\n  version: 1.10\n", "service.version", "quotes"),
    "bad caller": ("security:\n  allowed_callers:\n    Bad_Caller: ['/x']\n", "allowed_callers.Bad_Caller", "bad key"),
    "bad reference": ("service:\n  name: ${1X}\n", "service.name", "not a variable reference"),
}


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_input_is_one_clear_error(tmp_path: Path, case: str) -> None:
    text, path, fragment = BAD_INPUTS[case]
    file = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_config(file, env={})
    message = str(info.value)
    assert message.startswith(f"{file}: "), message
    assert path in message, message
    assert fragment in message, message
    assert len(info.value.problems) <= 1, message
    assert "\n" not in message, message


def test_several_problems_are_listed_in_one_error(tmp_path: Path) -> None:
    file = write(tmp_path, "service:\n  name: ok-name\n  port: 99999\ndependencies:\n  - {}\n")
    with pytest.raises(ConfigError) as info:
        load_config(file, env={})
    assert [path for path, _ in info.value.problems] == ["service.port", "dependencies[0].name"]
    assert "2 configuration problems" in str(info.value)


def test_structural_errors_name_the_file(tmp_path: Path) -> None:
    for text, fragment in [
        ("service: [unclosed", "not valid YAML"),
        ("- a\n- b\n", "must be a mapping"),
        ("service:\n  name: a\n  name: b\n", "appears twice"),
        ("a: &x [*x]\n", "refers to a node that contains it"),
    ]:
        file = write(tmp_path, text)
        with pytest.raises(ConfigError, match=fragment) as info:
            load_config(file, env={})
        assert str(file) in str(info.value)
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "absent.yaml")


def test_secret_values_never_appear_in_errors(tmp_path: Path) -> None:
    file = write(tmp_path, "security:\n  service_auth_key: [hunter2-secret]\n")
    with pytest.raises(ConfigError) as info:
        load_config(file, env={})
    assert "security.service_auth_key" in str(info.value)
    assert "hunter2" not in str(info.value)


def test_interpolation(tmp_path: Path) -> None:
    file = write(
        tmp_path,
        "service:\n  name: ${NAME}\n  version: ${VERSION:-v9}\n  port: ${PORT:-0}\n"
        "  metadata:\n    price: '$$5 ${ZONE:-}'\n"
        "dependencies:\n  - name: ${DEP}\n",
    )
    config = load_config(file, env={"NAME": "orders", "PORT": "5000", "DEP": "payments"})
    assert config.service is not None
    assert (config.service.name, config.service.version, config.service.port) == ("orders", "v9", 5000)
    assert config.service.metadata == {"price": "$5 "}
    assert config.dependencies[0].name == "payments"


@pytest.mark.parametrize(
    ("registry", "url"),
    [
        ({"type": "consul", "address": "localhost:8500"}, "consul://localhost:8500"),
        ({"type": "etcd", "address": "a:2379,b:2379"}, "etcd://a:2379,b:2379"),
        ({"type": "sqlite", "address": "/var/lib/mesh.db"}, "sqlite:///var/lib/mesh.db"),
        ({"type": "sqlite", "address": "mesh.db"}, "sqlite:mesh.db"),
        ({"type": "sqlite"}, "sqlite://"),
        ({"type": "memory", "address": "shop"}, "memory://shop"),
        ({"url": "etcd://127.0.0.1:2379/mesh"}, "etcd://127.0.0.1:2379/mesh"),
        ({}, "sqlite://"),
    ],
)
def test_registry_url_mapping(registry: dict[str, str], url: str) -> None:
    assert parse_config({"registry": registry}, env={}).registry.resolved_url == url


def test_environment_overrides(tmp_path: Path) -> None:
    file = write(tmp_path, SEED.read_text())
    env = {
        "SERVICE_AUTH_KEY": "k",
        "GRPCMESH_REGISTRY": "sqlite:///tmp/x.db",
        "GRPCMESH_SERVICE_PORT": "6000",
        "GRPCMESH_SERVICE_METADATA": '{"zone": "eu-1"}',
        "GRPCMESH_TRACING_SAMPLE_RATE": "0.5",
        "GRPCMESH_METRICS_ENABLED": "false",
        "GRPCMESH_REGISTRY_DEREGISTER_AFTER": "15s",
        "GRPCMESH_LOG_LEVEL": "debug",  # another component's variable: ignored here
    }
    config = load_config(file, env=env)
    assert config.registry.resolved_url == "sqlite:///tmp/x.db"
    assert config.registry.type is None
    assert config.registry.address is None
    assert config.registry.deregister_after == 15.0
    assert config.service is not None
    assert config.service.port == 6000
    assert config.service.metadata == {"zone": "eu-1"}
    assert config.tracing.sample_rate == 0.5
    assert not config.metrics.enabled


def test_environment_override_errors_name_the_variable(tmp_path: Path) -> None:
    file = write(tmp_path, "service:\n  name: a\n")
    with pytest.raises(ConfigError, match=r"service\.port: .*\(from \$GRPCMESH_SERVICE_PORT\)"):
        load_config(file, env={"GRPCMESH_SERVICE_PORT": "http"})
    with pytest.raises(ConfigError, match="GRPCMESH_SERVICE_PROT names no key of 'service'"):
        load_config(file, env={"GRPCMESH_SERVICE_PROT": "1"})


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("10s", 10.0), ("500ms", 0.5), ("1m30s", 90.0), ("1.5h", 5400.0), ("2", 2.0), (3, 3.0), ("0s", 0.0)],
)
def test_durations(text: str | int, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["s", "-1s", "10 sec", "1e400s", "nan", "9999h", True, None])
def test_bad_durations(text: object) -> None:
    with pytest.raises(ValueError, match=r"duration|range"):
        parse_duration(text)


def test_readme_example_loads() -> None:
    readme = (Path(__file__).parents[2] / "README.md").read_text()
    example = readme.split("### Configuration", 1)[1].split("```yaml\n", 1)[1].split("```", 1)[0]
    config = parse_config(example, source="README.md", env={"SERVICE_AUTH_KEY": "k"})
    assert config.registry.resolved_url == "consul://localhost:8500"
    assert config.security.allowed_callers == {"order-service": ["/user.v1.UserService/*"]}
