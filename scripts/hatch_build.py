"""Wheel build hook: generate protobuf code and the xDS descriptor set so installed packages carry them."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from hatchling.builders.hooks.plugin.interface import BuildHookInterface


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
