"""Durations as written in configuration files: ``"10s"``, ``"500ms"``, ``"1m30s"``, or plain seconds.

Configuration keeps Go-style duration strings (as in the original Go design); in code every duration is a
``float`` of seconds, so nothing downstream needs to parse units again.
"""

from __future__ import annotations

import math
import re
from typing import Annotated, Any

import pydantic

_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
_PART_RE = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h)")
_WHOLE_RE = re.compile(r"^(?:\d+(?:\.\d+)?(?:ms|s|m|h))+$")

MAX_DURATION = 7 * 24 * 3600.0
"""A week: anything longer in a service config is a typo (``10h`` for ``10s``)."""


def parse_duration(value: Any) -> float:
    """Seconds in ``value``: a number of seconds or a string such as ``"1.5s"``, ``"500ms"``, ``"1m30s"``."""
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not a duration; write e.g. '10s' or '500ms'")
    if isinstance(value, (int, float)):
        try:
            seconds = float(value)
        except OverflowError:
            seconds = math.inf
    elif isinstance(value, str):
        # Spaces may separate parts ("1m 30s"), never digits ("1 0s"); no "1_000" either.
        text = re.sub(r"(?<=[a-z])\s+", "", value.strip())
        if not _WHOLE_RE.match(text):
            try:
                if "_" in text:
                    raise ValueError(text)
                seconds = float(text)
            except ValueError:
                raise ValueError(
                    f"{value!r} is not a duration; write a number with a unit (ms, s, m, h), e.g. '10s' or '500ms'"
                ) from None
        else:
            seconds = sum(float(number) * _UNITS[unit] for number, unit in _PART_RE.findall(text))
    else:
        raise ValueError(f"a duration must be a string such as '10s', not a {type(value).__name__}")
    if math.isnan(seconds) or not 0 <= seconds <= MAX_DURATION:
        shown = repr(value) if len(repr(value)) <= 40 else "the value"
        raise ValueError(f"{shown} is out of range; give a duration from 0s to {int(MAX_DURATION // 3600)}h")
    return seconds


Duration = Annotated[float, pydantic.BeforeValidator(parse_duration)]
"""A pydantic field type: accepts duration strings or seconds, holds seconds."""
