"""Wheel build hook: generate protobuf code so installed packages carry it."""

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
        finally:
            sys.path.pop(0)
