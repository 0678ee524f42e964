"""Wheel build hook: generate protobuf code and the xDS descriptor set, and ship the example shop.

The example shop (``examples/shop`` with its generated code) goes into the wheel as data under
``grpcmesh/demo/shop``, so ``grpcmesh demo`` runs from a plain ``pip install 'grpcmesh[all]'``
exactly as ``make demo`` runs it from a checkout.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from hatchling.builders.hooks.plugin.interface import BuildHookInterface

SHOP_SOURCE = Path("examples/shop")
SHOP_IN_WHEEL = "grpcmesh/demo/shop"
"""Where the shop lives inside an installed grpcmesh (see ``grpcmesh.demo.system.default_shop_dir``)."""


def shop_files(root: Path) -> dict[str, str]:
    """Source path -> path in the wheel for every file of the shop (caches and bytecode left out)."""
    shop = root / SHOP_SOURCE
    files: dict[str, str] = {}
    for path in sorted(shop.rglob("*")):
        if path.is_file() and "__pycache__" not in path.parts and path.suffix not in (".pyc", ".db"):
            files[str(path)] = f"{SHOP_IN_WHEEL}/{path.relative_to(shop).as_posix()}"
    return files


class CustomBuildHook(BuildHookInterface):  # type: ignore[type-arg]
    def initialize(self, version: str, build_data: dict[str, Any]) -> None:
        if version == "editable":
            return  # `make` generates into the source tree for editable installs
        root = Path(self.root)
        sys.path.insert(0, str(root / "scripts"))
        try:
            import gen_protos

            gen_protos.generate(root)
            gen_protos.generate_xds_descriptors(root)
        finally:
            sys.path.pop(0)
        if self.target_name == "wheel":
            build_data["force_include"].update(shop_files(root))
