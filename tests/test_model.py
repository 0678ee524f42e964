"""ServiceInstance validation and the JSON wire encoding."""

from __future__ import annotations

import contextlib
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from grpcmesh import HealthStatus, InvalidInstanceError, InvalidRecordError, ServiceInstance
from grpcmesh.model import WIRE_FORMAT_VERSION, decode_instance, encode_instance

label = st.from_regex(r"[a-z0-9]([a-z0-9-]{0,20}[a-z0-9])?", fullmatch=True)
names = st.builds(lambda parts: ".".join(parts), st.lists(label, min_size=1, max_size=3))
text = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=30)

instances = st.builds(
    ServiceInstance,
    name=names,
    address=st.one_of(st.ip_addresses().map(str), st.just("localhost"), names),
    port=st.integers(1, 65535),
    version=st.from_regex(r"[A-Za-z0-9.+-]{0,20}", fullmatch=True),
    id=st.from_regex(r"[A-Za-z0-9._:@-]{1,40}", fullmatch=True),
    metadata=st.dictionaries(text, text, max_size=5),
    endpoints=st.lists(st.from_regex(r"[A-Za-z][A-Za-z0-9]{0,15}", fullmatch=True), unique=True, max_size=5).map(tuple),
    dependencies=st.lists(names, unique=True, max_size=4).map(tuple),
    weight=st.integers(1, 10_000),
    health=st.sampled_from(list(HealthStatus)),
)


@given(instances)
def test_json_round_trip(instance: ServiceInstance) -> None:
    assert decode_instance(encode_instance(instance)) == instance
    assert ServiceInstance.from_json(instance.to_json()) == instance


@given(instances)
def test_encoding_is_stable_and_versioned(instance: ServiceInstance) -> None:
    raw = encode_instance(instance)
    assert raw == encode_instance(decode_instance(raw))
    assert json.loads(raw)["v"] == WIRE_FORMAT_VERSION


def test_unknown_fields_ignored_and_missing_optionals_defaulted() -> None:
    raw = json.dumps({"v": 99, "name": "user-service", "id": "x", "address": "10.0.0.1", "port": 80, "zone": "future"})
    inst = decode_instance(raw)
    assert inst.name == "user-service"
    assert inst.weight == 100
    assert inst.health is HealthStatus.SERVING
    assert inst.metadata == {}
    assert inst.endpoints == ()


@given(st.binary(max_size=200))
def test_decoding_garbage_raises_only_invalid_record(raw: bytes) -> None:
    with contextlib.suppress(InvalidRecordError):
        decode_instance(raw)


@given(
    st.dictionaries(
        st.sampled_from(["name", "id", "address", "port", "weight", "endpoints", "metadata"]),
        st.one_of(st.none(), st.integers(), text, st.lists(text, max_size=3)),
        max_size=7,
    )
)
def test_decoding_any_object_raises_only_invalid_record(obj: dict[str, object]) -> None:
    with contextlib.suppress(InvalidRecordError):
        decode_instance(json.dumps(obj))


@pytest.mark.parametrize(
    ("changes", "field", "hint"),
    [
        ({"name": ""}, "name", "non-empty"),
        ({"name": "User_Service"}, "name", "lowercase"),
        ({"name": "-bad"}, "name", "DNS-label"),
        ({"port": 0}, "port", "1 to 65535"),
        ({"port": 70000}, "port", "1 to 65535"),
        ({"port": True}, "port", "1 to 65535"),
        ({"address": "not an address"}, "address", "IP address"),
        ({"address": ""}, "address", "IP address"),
        ({"endpoints": ("Get", "Get")}, "endpoints[1]", "listed twice"),
        ({"dependencies": ("Bad Name",)}, "dependencies[0]", "service name"),
        ({"id": "a/b"}, "id", "no '/'"),
        ({"weight": 0}, "weight", "1 to 10000"),
        ({"version": "v 1"}, "version", "no spaces"),
        ({"colour": "red"}, "colour", "not a ServiceInstance field"),
    ],
)
def test_invalid_fields_name_the_field_and_the_fix(changes: dict[str, object], field: str, hint: str) -> None:
    data: dict[str, object] = {"name": "user-service", "address": "127.0.0.1", "port": 50051}
    data.update(changes)
    with pytest.raises(InvalidInstanceError) as err:
        ServiceInstance(**data)
    assert err.value.field == field
    assert hint in str(err.value)


def test_missing_required_field() -> None:
    with pytest.raises(InvalidInstanceError, match="port: is required"):
        ServiceInstance(name="a", address="127.0.0.1")


def test_target_and_key() -> None:
    assert ServiceInstance(name="a", address="::1", port=5, id="i").target == "[::1]:5"
    inst = ServiceInstance(name="a", address="localhost", port=5, id="i")
    assert inst.target == "localhost:5"
    assert inst.key == ("a", "i")


def test_replace_validates_and_keeps_other_fields() -> None:
    inst = ServiceInstance(name="a", address="127.0.0.1", port=5, id="i", metadata={"k": "v"})
    moved = inst.replace(port=6)
    assert (moved.port, moved.id, moved.metadata) == (6, "i", {"k": "v"})
    with pytest.raises(InvalidInstanceError, match="port"):
        inst.replace(port=-1)


def test_instances_are_immutable() -> None:
    inst = ServiceInstance(name="a", address="127.0.0.1", port=5)
    with pytest.raises(Exception, match="frozen"):
        inst.port = 6  # type: ignore[misc]


def test_mesh_error_is_the_root() -> None:
    import grpcmesh

    for cls in (grpcmesh.InvalidInstanceError, grpcmesh.RegistryError, grpcmesh.ConfigError, grpcmesh.NoEndpointsError):
        assert issubclass(cls, grpcmesh.MeshError)


@pytest.mark.parametrize(
    "raw",
    [
        b"[" * 100_000,
        b'{"a":' * 5_000 + b"1" + b"}" * 5_000,
        b'{"name":"svc","address":"127.0.0.1","port":1,"metadata":' + b'{"a":' * 3_000 + b"1" + b"}" * 3_001,
        b'{"name":"svc","address":"127.0.0.1","port":1e400}',
        b'{"name":"svc","address":"127.0.0.1","port":NaN}',
        b'{"name":"svc","address":"127.0.0.1","port":1,"weight":' + b"9" * 5_000 + b"}",
        b'{"name":"svc","address":"127.0.0.1","port":1,"version":"' + b"v" * (1 << 20) + b'"}',
    ],
    ids=["deep-array", "deep-object", "deep-field", "huge-float", "nan", "huge-int", "over-1MiB"],
)
def test_hostile_records_raise_only_invalid_record(raw: bytes) -> None:
    with pytest.raises(InvalidRecordError) as caught:
        decode_instance(raw)
    assert len(str(caught.value)) < 500  # never echoes the record


@pytest.mark.parametrize("data", [None, 5, 1.5, ["a"], object(), b"\xff\xfe"])
def test_non_record_inputs_raise_only_invalid_record(data: object) -> None:
    with pytest.raises(InvalidRecordError):
        decode_instance(data)  # type: ignore[arg-type]
