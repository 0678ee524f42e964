"""The building blocks of the configuration models: the section base, checked field types, key problems.

Every section is frozen and forbids unknown keys; strings that may carry credentials (URLs,
addresses) are masked in every ``repr`` and dump; numbers refuse ``true``/``false``.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any

import pydantic

from grpcmesh.config.secrets import redact_address, redact_url
from grpcmesh.model import check_address, check_service_name

_VERSION_RE = re.compile(r"^\S{0,64}$")
_PATTERN_RE = re.compile(r"^\S{1,256}$")


class KeyProblem(ValueError):
    """A cross-field check failed on ``key`` (a child of the model being validated)."""

    def __init__(self, key: str, problem: str) -> None:
        self.key = key
        self.problem = problem
        super().__init__(problem)


class Section(pydantic.BaseModel):
    """A configuration section: frozen, unknown keys refused, credentials masked when shown."""

    model_config = pydantic.ConfigDict(frozen=True, extra="forbid")

    def __repr_args__(self) -> Any:
        # URLs and addresses may carry credentials (user:pass@, ?token=): masked in repr and str.
        for name, value in super().__repr_args__():
            yield name, _redacted(name, value)

    @pydantic.model_serializer(mode="wrap")
    def _redacted_dump(self, handler: pydantic.SerializerFunctionWrapHandler) -> Any:
        # ...and in every dump, like the SecretStr fields.
        data = handler(self)
        if isinstance(data, dict):
            return {key: _redacted(key, value) for key, value in data.items()}
        return data


def _redacted(name: str | None, value: Any) -> Any:
    if not isinstance(value, str):
        return value
    return redact_address(value) if name is not None and name.endswith("address") else redact_url(value)


def not_bool(value: Any) -> Any:
    # pydantic reads true/false as 1/0 for numbers; in a config that is always a mistake.
    if isinstance(value, bool):
        raise ValueError(f"{str(value).lower()} is not a number")
    return value


def _file_path(value: Any) -> Any:
    if isinstance(value, str) and (not value.strip() or "\0" in value):
        raise ValueError("must be a file path (not empty, no NUL character)")
    return value


def _service_name(value: str) -> str:
    check_service_name(value)
    return value


def _version(value: str) -> str:
    if not _VERSION_RE.match(value):
        raise ValueError(f"{value!r} must be at most 64 characters with no spaces, e.g. 'v1'")
    return value


def _port(value: int) -> int:
    if not 0 <= value <= 65535:
        raise ValueError(f"{value} is not a TCP port; use 1-65535, or 0 to pick a free port")
    return value


def _host(value: str) -> str:
    check_address(value)
    return value


ServiceName = Annotated[str, pydantic.AfterValidator(_service_name)]
Version = Annotated[str, pydantic.AfterValidator(_version)]
Port = Annotated[int, pydantic.BeforeValidator(not_bool), pydantic.AfterValidator(_port)]
Number = Annotated[float, pydantic.BeforeValidator(not_bool)]
FilePath = Annotated[Path, pydantic.BeforeValidator(_file_path)]


def _option_value(value: Any) -> str | pydantic.SecretStr:
    if not isinstance(value, (str, pydantic.SecretStr)):
        raise ValueError("must be a string; write numbers and booleans in quotes")
    return value


OptionValue = Annotated[str | pydantic.SecretStr, pydantic.PlainValidator(_option_value)]
"""A registry option: text, held as ``SecretStr`` when its name says it is a secret."""
Host = Annotated[str, pydantic.AfterValidator(_host)]
Whole = Annotated[int, pydantic.BeforeValidator(not_bool)]
"""An integer that refuses ``true``/``false``."""


def method_pattern(value: str) -> str:
    if not _PATTERN_RE.match(value):
        raise ValueError(f"{value!r} must be a method pattern without spaces, e.g. '/pkg.Service/*'")
    return value


MethodPattern = Annotated[str, pydantic.AfterValidator(method_pattern)]
