"""Key paths as users read them: ``dependencies[1].name``."""

from __future__ import annotations

from collections.abc import Iterable


def format_path(parts: Iterable[str | int]) -> str:
    """``("dependencies", 1, "name")`` -> ``"dependencies[1].name"``."""
    text = ""
    for part in parts:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            text += f".{part}" if text else str(part)
    return text or "(top level)"
