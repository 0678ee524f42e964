"""Discovery and client depend on the Registry protocol only, never on a backend module."""

from __future__ import annotations

import ast
from pathlib import Path

import grpcmesh

PACKAGE = Path(grpcmesh.__file__).parent
BACKENDS = (
    "grpcmesh.registry.memory",
    "grpcmesh.registry.sqlite",
    "grpcmesh.registry.etcd",
    "grpcmesh.registry.consul",
)


def imported_modules(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def test_discovery_and_client_import_no_registry_backend() -> None:
    files = sorted((PACKAGE / "discovery").rglob("*.py")) + sorted((PACKAGE / "client").rglob("*.py"))
    assert len(files) >= 8
    for path in files:
        bad = {m for m in imported_modules(path) if m.startswith(BACKENDS)}
        assert not bad, f"{path.relative_to(PACKAGE)} imports backend module(s) {bad}"
