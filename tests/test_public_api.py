"""The public surface: ``grpcmesh.__all__`` pinned, and every error the library exports is a ``MeshError``.

Changing what ``import grpcmesh`` offers is a decision, not a side effect of a refactor: this
test fails until the list below is updated with it.
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import subprocess
import sys

import pytest

import grpcmesh
from grpcmesh.errors import MeshError

EXPECTED_ALL = {
    "ChannelClosedError",
    "ClientManager",
    "ClosedError",
    "ConfigError",
    "Dependency",
    "HealthReport",
    "HealthStatus",
    "InvalidInstanceError",
    "InvalidRecordError",
    "Mesh",
    "MeshChannel",
    "MeshConfig",
    "MeshError",
    "MeshRpcError",
    "MeshServer",
    "MissingExtraError",
    "NoEndpointsError",
    "NoEndpointsRpcError",
    "Registry",
    "RegistryClosedError",
    "RegistryError",
    "RegistryUnavailableError",
    "ServerError",
    "ServerSettings",
    "ServiceInstance",
    "TlsFiles",
    "UnknownSchemeError",
    "__version__",
    "check_service_health",
    "decode_instance",
    "encode_instance",
    "load_config",
    "open_registry",
}


def test_all_is_pinned() -> None:
    assert set(grpcmesh.__all__) == EXPECTED_ALL
    assert len(grpcmesh.__all__) == len(EXPECTED_ALL), "a name is listed twice in grpcmesh.__all__"
    for name in grpcmesh.__all__:
        assert getattr(grpcmesh, name) is not None, name


def _public_modules() -> list[str]:
    names = ["grpcmesh"]
    for info in pkgutil.walk_packages(grpcmesh.__path__, "grpcmesh."):
        leaf = info.name.rsplit(".", 1)[-1]
        if leaf.startswith("_") or "_pb2" in leaf or leaf == "__main__":
            continue
        names.append(info.name)
    return names


def test_every_exported_error_is_a_mesh_error() -> None:
    checked = 0
    for module_name in _public_modules():
        module = importlib.import_module(module_name)
        for name in getattr(module, "__all__", ()):
            value = getattr(module, name)
            if inspect.isclass(value) and issubclass(value, BaseException):
                assert issubclass(value, MeshError), f"{module_name}.{name} is not a grpcmesh.MeshError"
                checked += 1
    assert checked >= 15  # the tree in grpcmesh.errors, at least


def test_every_error_in_the_tree_is_exported() -> None:
    from grpcmesh import errors

    tree = {
        name
        for name, value in vars(errors).items()
        if inspect.isclass(value) and issubclass(value, MeshError) and value.__module__ == errors.__name__
    }
    assert tree <= set(grpcmesh.__all__), tree - set(grpcmesh.__all__)


def test_import_grpcmesh_loads_no_optional_package() -> None:
    """The core install must work: nothing behind an extra is imported by ``import grpcmesh``."""
    optional = ["aiohttp", "aetcd", "opentelemetry", "typer", "cryptography", "xds_protos", "envoy"]
    code = (
        "import sys, grpcmesh, grpcmesh.client, grpcmesh.server, grpcmesh.security, grpcmesh.middleware\n"
        f"print(sorted({{m.split('.')[0] for m in sys.modules}} & set({optional!r})))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout


async def test_every_closed_object_raises_closed_error() -> None:
    """Registry, channel, client manager and mesh all say "closed" the same way."""
    from grpcmesh.client import ClientManager

    registry = grpcmesh.open_registry("memory://")
    await registry.close()
    with pytest.raises(grpcmesh.ClosedError):
        await registry.get_service("svc")

    live = grpcmesh.open_registry("memory://")
    manager = ClientManager(live)
    channel = manager.channel("svc")
    await manager.close()
    with pytest.raises(grpcmesh.ClosedError):
        manager.channel("svc")
    with pytest.raises(grpcmesh.ClosedError):
        await channel.channel_ready()

    mesh = grpcmesh.Mesh(live, config=grpcmesh.MeshConfig())
    await mesh.close()
    with pytest.raises(grpcmesh.ClosedError):
        mesh.channel("svc")
    await live.close()
