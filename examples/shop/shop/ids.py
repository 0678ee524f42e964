"""Identifiers: a readable prefix per kind of record plus 16 random hex digits."""

from __future__ import annotations

import uuid


def new_id(prefix: str) -> str:
    """E.g. ``new_id("usr")`` -> ``usr_3f2a9c0d1b4e5f60``."""
    return f"{prefix}_{uuid.uuid4().hex[:16]}"
