"""Environment overrides: ``GRPCMESH_<SECTION>_<KEY>`` replaces ``<section>.<key>`` from the file.

The scheme, so deployments can change a setting without editing the file:

* ``GRPCMESH_REGISTRY`` — the registry URL (``open_registry`` syntax); replaces the file's
  ``registry.url``/``type``/``address`` (the same variable the ``grpcmesh`` CLI reads);
* ``GRPCMESH_<SECTION>_<KEY>`` for the mapping sections ``service``, ``registry``,
  ``security``, ``tracing``, ``metrics`` and any key of that section, e.g.
  ``GRPCMESH_SERVICE_PORT=50051``, ``GRPCMESH_REGISTRY_DEREGISTER_AFTER=15s``,
  ``GRPCMESH_TRACING_SAMPLE_RATE=0.5``, ``GRPCMESH_SECURITY_SERVICE_AUTH_KEY=...``.
  Values are strings, validated like file values; mapping/list keys take JSON
  (``GRPCMESH_SERVICE_METADATA='{"zone": "a"}'``). Every other key takes the text as it is
  (never parsed), so a secret beginning with ``{`` stays a string and is never quoted back.

A ``GRPCMESH_<SECTION>_...`` variable naming no key of its section is an error (a typo
must not be silently ignored); other ``GRPCMESH_*`` variables are left to their owners.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, get_args, get_origin

from grpcmesh.config.documents import load_yaml
from grpcmesh.config.models import model_for_section
from grpcmesh.errors import ConfigError

ENV_PREFIX = "GRPCMESH_"
REGISTRY_URL_VAR = "GRPCMESH_REGISTRY"
_SECTIONS = ("service", "registry", "security", "tracing", "metrics", "logging")
_REGISTRY_LOCATION = ("url", "type", "address")


def apply_env_overrides(data: dict[str, Any], env: Mapping[str, str], source: str) -> dict[str, str]:
    """Apply overrides to ``data`` in place; returns ``{key path: variable}`` for error messages."""
    applied: dict[str, str] = {}
    for variable in sorted(env):
        target = _target(variable, source)
        if target is None:
            continue
        section, key = target
        value = _value(env[variable], variable, section, key, source)
        current = data.get(section)
        if not isinstance(current, dict):
            current = {}
            data[section] = current
        if section == "registry" and key in _REGISTRY_LOCATION:
            # The location given by the environment replaces the file's, whichever form each uses.
            if key == "url":
                for other in _REGISTRY_LOCATION:
                    current.pop(other, None)
            else:
                current.pop("url", None)
        current[key] = value
        applied[f"{section}.{key}"] = variable
    return applied


def _target(variable: str, source: str) -> tuple[str, str] | None:
    if not variable.startswith(ENV_PREFIX):
        return None
    if variable == REGISTRY_URL_VAR:
        return ("registry", "url")
    rest = variable[len(ENV_PREFIX) :].lower()
    for section in _SECTIONS:
        if rest.startswith(section + "_"):
            key = rest[len(section) + 1 :]
            model = model_for_section(section)
            assert model is not None
            if key not in model.model_fields:
                known = ", ".join(f"{ENV_PREFIX}{section.upper()}_{k.upper()}" for k in model.model_fields)
                raise ConfigError(
                    f"{source}: environment variable {variable} names no key of '{section}'; use one of {known}",
                    file=source,
                    problems=((f"{section}.{key}", f"unknown key (from ${variable})"),),
                )
            return (section, key)
    return None


def _value(raw: str, variable: str, section: str, key: str, source: str) -> Any:
    text = raw.strip()
    if not text.startswith(("{", "[")) or not _takes_collection(section, key):
        return raw
    try:
        return load_yaml(text, f"${variable}")
    except ConfigError as exc:
        raise ConfigError(
            f"{source}: environment variable {variable} is not valid JSON/YAML: {exc}", file=source
        ) from None


def _takes_collection(section: str, key: str) -> bool:
    """True when ``section.key`` holds a mapping or list (so its variable is parsed as JSON/YAML)."""
    model = model_for_section(section)
    assert model is not None
    annotation = model.model_fields[key].annotation
    kinds = [annotation, *get_args(annotation)]
    return any(get_origin(kind) in (dict, list) or kind in (dict, list) for kind in kinds)
