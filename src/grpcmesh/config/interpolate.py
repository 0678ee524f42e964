"""``${VAR}`` and ``${VAR:-default}`` in configuration values, resolved from the environment.

Interpolation runs on the parsed YAML values (never on the raw text), so a variable's
value cannot change the document's structure. ``$$`` writes a literal ``$``; a default may
itself hold references (``${A:-${B:-x}}``), up to :data:`MAX_NESTING` levels. The walk is
bounded like the document (values, depth, characters produced), since values shared through
YAML aliases come out as copies.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from grpcmesh.config.documents import MAX_BYTES, MAX_DEPTH, MAX_NODES
from grpcmesh.config.paths import format_path
from grpcmesh.config.secrets import is_secret_path, may_hold_secret

MAX_NESTING = 8
"""Deepest ``${A:-${B:-...}}`` nesting accepted."""

MAX_OUTPUT_CHARS = 8 * MAX_BYTES
"""Most characters all interpolated strings together may produce."""

_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class InterpolationError(ValueError):
    """A ``${...}`` reference could not be resolved; ``path`` is the key path it sits under."""

    def __init__(self, path: str, problem: str) -> None:
        self.path = path
        self.problem = problem
        super().__init__(f"{path}: {problem}")


class _Budget:
    def __init__(self) -> None:
        self.nodes = 0
        self.chars = 0


def interpolate(data: Any, env: Mapping[str, str], path: tuple[str | int, ...] = ()) -> Any:
    """A copy of ``data`` with every string's ``${...}`` references replaced."""
    return _walk(data, env, path, set(), _Budget())


def _walk(data: Any, env: Mapping[str, str], path: tuple[str | int, ...], active: set[int], budget: _Budget) -> Any:
    budget.nodes += 1
    if budget.nodes > MAX_NODES:
        raise InterpolationError(
            format_path(path), f"the configuration holds more than {MAX_NODES} values (through YAML aliases?)"
        )
    if isinstance(data, str):
        result = _substitute(data, env, path, 0) if "$" in data else data
        budget.chars += len(result)
        if budget.chars > MAX_OUTPUT_CHARS:
            raise InterpolationError(format_path(path), f"values add up to more than {MAX_OUTPUT_CHARS} characters")
        return result
    if isinstance(data, (dict, list)):
        if id(data) in active:
            raise InterpolationError(format_path(path), "refers to itself through a YAML alias; remove the cycle")
        if len(path) > MAX_DEPTH:
            raise InterpolationError(format_path(path), f"nested more than {MAX_DEPTH} levels deep")
        active.add(id(data))
        try:
            if isinstance(data, dict):
                return {key: _walk(value, env, (*path, _key(key)), active, budget) for key, value in data.items()}
            return [_walk(item, env, (*path, index), active, budget) for index, item in enumerate(data)]
        finally:
            active.discard(id(data))
    return data


def _key(key: Any) -> str | int:
    return key if isinstance(key, (str, int)) else str(key)


def _substitute(text: str, env: Mapping[str, str], path: tuple[str | int, ...], nesting: int) -> str:
    out: list[str] = []
    position = 0
    while (dollar := text.find("$", position)) >= 0:
        out.append(text[position:dollar])
        if text.startswith("$$", dollar):
            out.append("$")
            position = dollar + 2
        elif text.startswith("${", dollar):
            end = _closing_brace(text, dollar + 2)
            if end < 0:
                raise InterpolationError(
                    format_path(path), "'${' has no closing '}'; write ${NAME} (use $$ for a literal $)"
                )
            out.append(_resolve(text[dollar + 2 : end], env, path, nesting, hide=_hides(text, path)))
            position = end + 1
        else:
            out.append("$")
            position = dollar + 1
    out.append(text[position:])
    return "".join(out)


def _closing_brace(text: str, start: int) -> int:
    """Index of the ``}`` closing a ``${`` whose body starts at ``start`` (inner ``${...}`` skipped), or -1."""
    depth = 1
    index = start
    while index < len(text):
        if text.startswith("$$", index):
            index += 2
            continue
        if text.startswith("${", index):
            depth += 1
            index += 2
            continue
        if text[index] == "}":
            depth -= 1
            if depth == 0:
                return index
        index += 1
    return -1


def _hides(text: str, path: tuple[str | int, ...]) -> bool:
    """A secret's text (or a URL's credentials) must not reach a message, even a malformed piece of it."""
    return is_secret_path(path) or may_hold_secret(text)


def _resolve(expression: str, env: Mapping[str, str], path: tuple[str | int, ...], nesting: int, hide: bool) -> str:
    name, has_default, default = expression.partition(":-")
    if not _NAME_RE.match(name):
        shown = "this reference" if hide else f"'${{{expression}}}'"
        raise InterpolationError(
            format_path(path),
            f"{shown} is not a variable reference; write ${{NAME}} or ${{NAME:-default}} (use $$ for a literal $)",
        )
    value = env.get(name)
    if value is not None:
        return value
    if has_default:
        if "$" not in default:
            return default
        if nesting + 1 >= MAX_NESTING:
            raise InterpolationError(format_path(path), f"defaults nested more than {MAX_NESTING} levels deep")
        return _substitute(default, env, path, nesting + 1)
    raise InterpolationError(
        format_path(path),
        f"environment variable {name} is not set; set it or give a default: ${{{name}:-default}}",
    )
