"""Reading a configuration file: YAML -> ``${VAR}`` interpolation -> environment overrides -> validation.

Every failure along the way becomes one :class:`~grpcmesh.errors.ConfigError` whose message
names the file and the key path of each problem (``dependencies[1].name: is required``).
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pydantic

from grpcmesh.config.documents import MAX_BYTES, load_yaml
from grpcmesh.config.env import apply_env_overrides
from grpcmesh.config.fields import KeyProblem
from grpcmesh.config.interpolate import InterpolationError, interpolate
from grpcmesh.config.models import MeshConfig, known_keys
from grpcmesh.config.paths import format_path
from grpcmesh.config.secrets import is_secret_path, may_hold_secret
from grpcmesh.errors import ConfigError, InvalidInstanceError

_MAX_SHOWN_INPUT = 60


def load_config(path: str | os.PathLike[str], *, env: Mapping[str, str] | None = None) -> MeshConfig:
    """Load and validate a YAML configuration file (``env`` defaults to ``os.environ``)."""
    source = os.fspath(path)
    try:
        with Path(source).open("rb") as file:
            raw = file.read(MAX_BYTES + 1)
        if len(raw) > MAX_BYTES:
            raise ConfigError(f"{source}: the file is larger than {MAX_BYTES} bytes", file=source)
        text = raw.decode("utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{source}: configuration file not found", file=source) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{source}: cannot read configuration file: {exc}", file=source) from None
    return parse_config(text, source=source, env=env)


def parse_config(
    document: str | Mapping[str, Any], *, source: str = "<config>", env: Mapping[str, str] | None = None
) -> MeshConfig:
    """Validate a YAML document (or an already parsed mapping); ``source`` names it in errors."""
    env = os.environ if env is None else env
    data = load_yaml(document, source) if isinstance(document, str) else document
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise ConfigError(
            f"{source}: the top level must be a mapping of sections (service:, registry:, ...), "
            f"not a {type(data).__name__}",
            file=source,
        )
    try:
        resolved = interpolate(dict(data), env)
    except InterpolationError as exc:
        raise ConfigError(
            f"{source}: {exc.path}: {exc.problem}", file=source, problems=((exc.path, exc.problem),)
        ) from None
    overridden = apply_env_overrides(resolved, env, source)
    try:
        return MeshConfig.model_validate(resolved)
    except pydantic.ValidationError as exc:
        problems, more = _problems(exc, overridden)
        raise _config_error(source, problems, more) from None


MAX_PROBLEMS = 20
"""Problems described in one error; a document with thousands of bad keys gets a count of the rest."""


def _config_error(source: str, problems: list[tuple[str, str]], more: int = 0) -> ConfigError:
    if len(problems) == 1 and not more:
        path, problem = problems[0]
        message = f"{source}: {path}: {problem}"
    else:
        lines = "\n".join(f"  {path}: {problem}" for path, problem in problems)
        tail = f"\n  ... and {more} more" if more else ""
        message = f"{source}: {len(problems) + more} configuration problems:\n{lines}{tail}"
    return ConfigError(message, file=source, problems=tuple(problems))


def _problems(exc: pydantic.ValidationError, overridden: Mapping[str, str]) -> tuple[list[tuple[str, str]], int]:
    """The first :data:`MAX_PROBLEMS` distinct problems, and how many more errors there were."""
    problems: list[tuple[str, str]] = []
    seen: set[tuple[str, str]] = set()
    errors = exc.errors()
    for index, error in enumerate(errors):
        if len(problems) >= MAX_PROBLEMS:
            return problems, len(errors) - index
        loc = [part for part in error["loc"] if part != "[key]"]
        is_key = "[key]" in error["loc"]
        path = format_path(loc)
        secret = is_secret_path(loc)
        cause = (error.get("ctx") or {}).get("error")
        if isinstance(cause, KeyProblem):
            path = path + cause.key if cause.key.startswith("[") else f"{path}.{cause.key}"
            problem = cause.problem
        elif isinstance(cause, InvalidInstanceError):
            problem = cause.problem
        elif isinstance(cause, ValueError):
            problem = str(cause)
        else:
            problem = _describe(error, path, secret)
        if is_key:
            problem = f"bad key: {problem}"
        variable = overridden.get(path)
        if variable is not None:
            problem += f" (from ${variable})"
        if (path, problem) not in seen:
            seen.add((path, problem))
            problems.append((path, problem))
    return problems, 0


def _describe(error: Any, path: str, secret: bool) -> str:
    kind = error.get("type", "")
    if kind == "missing":
        return "is required"
    if kind == "extra_forbidden":
        name = path.rsplit(".", 1)[-1]
        close = difflib.get_close_matches(name, sorted(known_keys()), n=1)
        return "is not a known key" + (f"; did you mean '{close[0]}'?" if close else "")
    message = str(error.get("msg", "is invalid"))
    value = error.get("input")
    if kind == "string_type" and isinstance(value, (int, float)) and not isinstance(value, bool):
        return f"{message}; YAML read a number here, so write the value in quotes (e.g. '1.10')"
    shown = repr(value)
    if secret or may_hold_secret(shown):
        # A value under a secret's key, or one that names a secret or carries URL credentials
        # (e.g. a section given as 'service_auth_key ...' text), is never quoted back.
        return message
    if len(shown) > _MAX_SHOWN_INPUT:
        shown = shown[: _MAX_SHOWN_INPUT - 3] + "..."
    return f"{message} (got {shown})"
