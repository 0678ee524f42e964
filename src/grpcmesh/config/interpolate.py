"""``${VAR}`` and ``${VAR:-default}`` in configuration values, resolved from the environment.

Interpolation runs on the parsed YAML values (never on the raw text), so a variable's
value cannot change the document's structure. ``$$`` writes a literal ``$``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from grpcmesh.config.paths import format_path

_TOKEN_RE = re.compile(r"\$\$|\$\{([^}]*)\}")
_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class InterpolationError(ValueError):
    """A ``${...}`` reference could not be resolved; ``path`` is the key path it sits under."""

    def __init__(self, path: str, problem: str) -> None:
        self.path = path
        self.problem = problem
        super().__init__(f"{path}: {problem}")


def interpolate(data: Any, env: Mapping[str, str], path: tuple[str | int, ...] = ()) -> Any:
    """A copy of ``data`` with every string's ``${...}`` references replaced."""
    return _walk(data, env, path, set())


def _walk(data: Any, env: Mapping[str, str], path: tuple[str | int, ...], active: set[int]) -> Any:
    if isinstance(data, str):
        return _substitute(data, env, path)
    if isinstance(data, (dict, list)):
        if id(data) in active:
            raise InterpolationError(format_path(path), "refers to itself through a YAML alias; remove the cycle")
        active.add(id(data))
        try:
            if isinstance(data, dict):
                return {key: _walk(value, env, (*path, _key(key)), active) for key, value in data.items()}
            return [_walk(item, env, (*path, index), active) for index, item in enumerate(data)]
        finally:
            active.discard(id(data))
    return data


def _key(key: Any) -> str | int:
    return key if isinstance(key, (str, int)) else str(key)


def _substitute(text: str, env: Mapping[str, str], path: tuple[str | int, ...]) -> str:
    if "$" not in text:
        return text

    def replace(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        expression = match.group(1)
        name, has_default, default = expression.partition(":-")
        if not _NAME_RE.match(name):
            raise InterpolationError(
                format_path(path),
                f"'${{{expression}}}' is not a variable reference; write ${{NAME}} or ${{NAME:-default}} "
                "(use $$ for a literal $)",
            )
        value = env.get(name)
        if value is not None:
            return value
        if has_default:
            return default
        raise InterpolationError(
            format_path(path),
            f"environment variable {name} is not set; set it or give a default: ${{{name}:-default}}",
        )

    return _TOKEN_RE.sub(replace, text)
