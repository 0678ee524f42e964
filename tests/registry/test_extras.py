"""A backend used without its extra says which ``pip install`` to run."""

from __future__ import annotations

import sys

import pytest

from grpcmesh import MeshError, MissingExtraError, open_registry


@pytest.mark.parametrize(
    ("url", "package", "extra"),
    [("etcd://127.0.0.1:2379", "aetcd", "etcd"), ("consul://127.0.0.1:8500", "aiohttp", "consul")],
)
def test_a_backend_without_its_extra_names_the_pip_command(
    monkeypatch: pytest.MonkeyPatch, url: str, package: str, extra: str
) -> None:
    for name in list(sys.modules):
        if name == package or name.startswith(f"{package}.") or name.startswith(f"grpcmesh.registry.{extra}"):
            monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, package, None)  # "not installed"
    with pytest.raises(MissingExtraError, match=rf"pip install 'grpcmesh\[{extra}\]'") as caught:
        open_registry(url)  # etcd imports aetcd with the module, Consul aiohttp when the registry is built
    assert isinstance(caught.value, MeshError)
