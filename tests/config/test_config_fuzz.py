"""Property tests: whatever a configuration holds, loading it returns a config or raises ConfigError."""

from __future__ import annotations

from typing import Any

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from grpcmesh import ConfigError, MeshConfig
from grpcmesh.config import parse_config
from grpcmesh.config.models import (
    DependencyConfig,
    MetricsConfig,
    RegistryConfig,
    SecurityConfig,
    ServiceConfig,
    TracingConfig,
)

SECTIONS: dict[str, Any] = {
    "service": ServiceConfig,
    "registry": RegistryConfig,
    "security": SecurityConfig,
    "tracing": TracingConfig,
    "metrics": MetricsConfig,
}

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=30),
    st.sampled_from(["10s", "500ms", "${X}", "${X:-5}", "$${Y}", "${", "sqlite://", "consul://h:1", "v1", "a-b"]),
)
values = st.recursive(
    scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=3),
        st.dictionaries(st.one_of(st.text(max_size=10), st.integers()), children, max_size=3),
    ),
    max_leaves=8,
)


@st.composite
def section(draw: st.DrawFn, model: Any) -> dict[Any, Any]:
    keys = draw(st.lists(st.sampled_from(sorted(model.model_fields)), max_size=6, unique=True))
    data: dict[Any, Any] = {key: draw(values) for key in keys}
    if draw(st.booleans()):
        data[draw(st.text(max_size=8))] = draw(values)
    return data


@st.composite
def documents(draw: st.DrawFn) -> dict[Any, Any]:
    names = draw(st.lists(st.sampled_from(sorted(SECTIONS)), max_size=5, unique=True))
    doc: dict[Any, Any] = {name: draw(st.one_of(section(SECTIONS[name]), values)) for name in names}
    if draw(st.booleans()):
        doc["dependencies"] = draw(st.one_of(st.lists(section(DependencyConfig), max_size=3), values))
    return doc


environments = st.dictionaries(
    st.sampled_from(["X", "Y", "GRPCMESH_REGISTRY", "GRPCMESH_SERVICE_PORT", "GRPCMESH_SERVICE_NAME", "GRPCMESH_A"]),
    st.text(max_size=12),
    max_size=3,
)


def load_or_config_error(document: Any, env: dict[str, str]) -> None:
    try:
        result = parse_config(document, env=env)
    except ConfigError as exc:
        message = str(exc)
    else:
        assert isinstance(result, MeshConfig)
        return
    assert message


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(documents(), environments)
def test_fuzzed_values_raise_only_config_error(document: dict[Any, Any], env: dict[str, str]) -> None:
    load_or_config_error(document, env)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(documents(), environments)
def test_fuzzed_yaml_text_raises_only_config_error(document: dict[Any, Any], env: dict[str, str]) -> None:
    try:
        text = yaml.safe_dump(document)
    except yaml.YAMLError:
        return
    load_or_config_error(text, env)


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=200))
def test_fuzzed_raw_text_raises_only_config_error(text: str) -> None:
    load_or_config_error(text, {})
