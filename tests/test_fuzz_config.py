"""Hostile configurations from hypothesis: alias bombs, deep and huge values, interpolation, env overrides.

Whatever the document and environment, loading returns a config or raises ``ConfigError``
(never another exception), finishes within a generous per-example bound (a hang would be a
"billion laughs"), stays within a memory bound, and never shows a secret (a canary string
planted in every secret position) in an error message or in the config's repr and dumps.
"""

from __future__ import annotations

import json
import signal
import tracemalloc
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from grpcmesh import ConfigError, MeshConfig
from grpcmesh.config import parse_config

CANARY = "CANARY-d41d8c-s3cr3t"

EXAMPLE_SECONDS = 30
"""Per-example bound: a parse takes milliseconds; only unbounded expansion comes near this on a loaded machine."""

PEAK_BYTES = 64 * 1024 * 1024
"""Memory one load may allocate at its peak (alias bombs once took gigabytes)."""

FUZZ = settings(
    max_examples=120,
    deadline=None,  # wall-clock per example is bounded by EXAMPLE_SECONDS instead, with margin for load
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
)


class _ExampleTooSlowError(AssertionError):
    pass


@contextmanager
def bounded_time(seconds: float) -> Iterator[None]:
    def expire(signum: int, frame: FrameType | None) -> None:
        raise _ExampleTooSlowError(f"a config load ran for more than {seconds}s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def check_load(document: str | dict[Any, Any], env: dict[str, str]) -> None:
    """Load under the time and memory bounds; only ConfigError; the canary never shows."""
    tracemalloc.start()
    try:
        with bounded_time(EXAMPLE_SECONDS):
            try:
                config = parse_config(document, env=env)
            except ConfigError as exc:
                rendered = [str(exc), repr(exc), *(f"{path} {problem}" for path, problem in exc.problems)]
            else:
                assert isinstance(config, MeshConfig)
                rendered = [repr(config), str(config), config.model_dump_json(), repr(config.model_dump())]
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < PEAK_BYTES, f"peak {peak} bytes"
    for text in rendered:
        assert CANARY not in text, text


# --- strategies -----------------------------------------------------------------------------------

hostile_text = st.text(alphabet=st.sampled_from(list("{}[]:,#&*!|>'\"\\$-?%@ \t\nAbz09_.")), max_size=12)

secret_strings = st.builds(lambda before, after: before + CANARY + after, hostile_text, hostile_text)
secret_values = st.one_of(
    secret_strings,
    st.lists(secret_strings, min_size=1, max_size=2),
    st.dictionaries(st.sampled_from(["a", "password"]), secret_strings, min_size=1, max_size=2),
)

interpolations = st.lists(
    st.sampled_from(["${", "}", "$$", "$", ":-", "A", "B", "X", "${A:-", "${B}", "${X:-${A:-", "-", "x"]), max_size=12
).map("".join)

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**80), max_value=2**80),
    st.floats(),
    hostile_text,
    interpolations,
    st.sampled_from(["10s", "1e400", "nan", "-1s", "inf", "0", "65536", "sqlite://", "etcd://[::1", "v1"]),
    st.integers(min_value=1, max_value=20_000).map(lambda n: "x" * n),
)
values = st.recursive(
    scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.dictionaries(st.one_of(hostile_text, st.integers()), children, max_size=4),
    ),
    max_leaves=12,
)

KEYS: dict[str, list[str]] = {
    "service": ["name", "version", "port", "host", "metadata", "weight", "reflection", "shutdown_grace"],
    "registry": ["type", "address", "url", "check_interval", "deregister_after", "options"],
    "security": ["tls_enabled", "cert_file", "key_file", "ca_file", "client_auth", "allowed_callers"],
    "tracing": ["enabled", "otlp_endpoint", "sample_rate"],
    "metrics": ["enabled", "prometheus_port", "host"],
    "logging": ["enabled", "format", "level"],
    "client": ["balancing", "timeout", "method_timeouts", "retry_methods", "outlier", "throttle", "keepalive"],
}


@st.composite
def documents(draw: st.DrawFn) -> dict[str, Any]:
    """A document with random sections and, in secret positions, values holding the canary."""
    doc: dict[str, Any] = {}
    for section in draw(st.lists(st.sampled_from(sorted(KEYS)), max_size=4, unique=True)):
        keys = draw(st.lists(st.sampled_from(KEYS[section]), max_size=4, unique=True))
        doc[section] = {key: draw(values) for key in keys} if draw(st.integers(0, 9)) else draw(values)
    if draw(st.booleans()):
        doc.setdefault("service", {}) if isinstance(doc.get("service"), dict) else None
        if isinstance(doc.get("service"), dict):
            doc["service"]["name"] = "svc"
    placement = draw(st.sampled_from(["auth_key", "option", "url", "address", "none"]))
    secret = draw(secret_values)
    if placement == "auth_key":
        doc["security"] = {**_mapping(doc.get("security")), "service_auth_key": secret}
    elif placement == "option":
        option = draw(st.sampled_from(["password", "token", "consul_token", "secret_key"]))
        doc["registry"] = {**_mapping(doc.get("registry")), "options": {option: secret}}
    elif placement == "url":
        template = draw(
            st.sampled_from(["etcd://u:{}@h:2379", "nope://h/?password={}", "u:{}@h", "consul://h?token={}"])
        )
        doc["registry"] = {"url": template.format(draw(st.text(alphabet="abc:?#", max_size=4)) + CANARY)}
    elif placement == "address":
        doc["registry"] = {"type": "etcd", "address": f"user:{CANARY}@h:2379"}
    return doc


def _mapping(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


environments = st.dictionaries(
    st.sampled_from(
        [
            "A",
            "B",
            "X",
            "GRPCMESH_REGISTRY",
            "GRPCMESH_SERVICE_PORT",
            "GRPCMESH_SERVICE_METADATA",
            "GRPCMESH_REGISTRY_OPTIONS",
            "GRPCMESH_SECURITY_ALLOWED_CALLERS",
            "GRPCMESH_TRACING_SAMPLE_RATE",
            "GRPCMESH_UNKNOWN_THING",
        ]
    ),
    st.one_of(hostile_text, interpolations, st.sampled_from(["[*a]", "{a: &a [1], b: [*a, *a]}", "&a [*a]"])),
    max_size=3,
)

secret_environments = st.one_of(
    st.just({}),
    st.builds(lambda s: {"GRPCMESH_SECURITY_SERVICE_AUTH_KEY": s}, secret_strings),
    st.builds(lambda s: {"GRPCMESH_REGISTRY_OPTIONS": json.dumps({"password": s})[: len(s)]}, secret_strings),
    st.builds(lambda s: {"GRPCMESH_REGISTRY": f"etcd://user:{CANARY}@h:2379/?x={s}"}, hostile_text),
)

LINE_DAMAGE = [": x", " [", "{", "'", '"', "\t", " &a", " *zz", " !!int", " !!float", "\\", " #", "- ", ": |"]


@st.composite
def damaged_yaml(draw: st.DrawFn) -> str:
    """A document written as YAML, with a few lines given a syntax-breaking tail."""
    text = yaml.safe_dump(draw(documents()), width=10_000)
    lines = text.splitlines()
    for _ in range(draw(st.integers(0, 2))):
        if lines:
            index = draw(st.integers(0, len(lines) - 1))
            lines[index] += draw(st.sampled_from(LINE_DAMAGE))
    return "\n".join(lines) + "\n"


@st.composite
def alias_bombs(draw: st.DrawFn) -> str:
    """Nested anchors (and merge keys) naming up to fan_out**levels values, placed in a random section."""
    levels = draw(st.integers(1, 14))
    fan_out = draw(st.integers(1, 12))
    leaf = draw(st.sampled_from(['"${X:-lol}"', "lol", '"' + CANARY + '"', "{k: v}"]))
    merge = draw(st.booleans())
    lines = [f"a0: &a0 [{leaf}]" if not merge else "a0: &a0 {k0: v}"]
    for level in range(1, levels + 1):
        refs = ", ".join(f"*a{level - 1}" for _ in range(fan_out))
        lines.append(f"a{level}: &a{level} {{<<: [{refs}], k{level}: v}}" if merge else f"a{level}: &a{level} [{refs}]")
    section = draw(st.sampled_from(["service", "registry", "security", "dependencies", "x"]))
    # The canary may only sit under a secret's key: elsewhere it is not a secret and may be quoted.
    key = (
        "password" if CANARY in leaf else draw(st.sampled_from(["metadata", "options", "password", "allowed_callers"]))
    )
    body = "".join(f"    {line}\n" for line in lines)
    return f"{section}:\n  {key}:\n{body}"


# --- properties -----------------------------------------------------------------------------------


@FUZZ
@given(documents(), st.one_of(environments, secret_environments))
def test_generated_mappings_load_or_raise_config_error(document: dict[str, Any], env: dict[str, str]) -> None:
    check_load(document, env)


@FUZZ
@given(damaged_yaml(), st.one_of(environments, secret_environments))
def test_generated_yaml_text_loads_or_raises_config_error(text: str, env: dict[str, str]) -> None:
    check_load(text, env)


@FUZZ
@given(alias_bombs(), environments)
def test_alias_bombs_are_bounded(text: str, env: dict[str, str]) -> None:
    check_load(text, env)


@FUZZ
@given(st.integers(1, 5000), st.sampled_from(["[", "{a: ", "- ", "  x:\n", "- a:\n  "]), st.booleans())
def test_deep_nesting_is_bounded(depth: int, opener: str, indented: bool) -> None:
    if indented:  # block nesting: each level one step further right
        body = "".join(f"{'  ' * level}k{level}:\n" for level in range(depth))
        check_load("service:\n  metadata:\n" + body, {})
    else:
        check_load("service:\n  metadata: " + opener * depth + "\n", {})


@FUZZ
@given(st.dictionaries(st.sampled_from(["A", "B", "X"]), interpolations, max_size=3), interpolations)
def test_interpolation_patterns_load_or_raise_config_error(env: dict[str, str], pattern: str) -> None:
    check_load(
        {"service": {"name": "svc", "metadata": {"v": pattern}}, "security": {"service_auth_key": pattern + CANARY}},
        env,
    )
