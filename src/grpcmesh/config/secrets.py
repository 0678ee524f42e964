"""Recognising and hiding secrets in configuration, so none reaches an error, repr, log or dump.

A value is treated as secret when its key names one (``service_auth_key``, ``password``,
``token``, ``secret``, ``credentials``...), and the credentials part of a URL (``user:pass@``
and ``?password=...``-style query parameters) is masked wherever a URL is shown.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

MASK = "***"
"""What a hidden value is shown as."""

_SECRET_WORDS = r"pass(?:word|wd|phrase)?|pwd|secret|token|credentials?|auth|api[_-]?key|private[_-]?key|key"  # noqa: S105
_SECRET_NAME_RE = re.compile(rf"(?:^|[_\-.\s])(?:{_SECRET_WORDS})(?:$|[_\-.\s])")
_CAMEL_RE = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")
# Up to the last "@" before the path: a password may hold "?" or "#" (unencoded) and must still be masked.
_USERINFO_RE = re.compile(r"(?<=//)[^/\s]*@")
_BARE_USERINFO_RE = re.compile(r"^[^/\s]*@")
_SECRET_QUERY_RE = re.compile(rf"([?&;][^=&;#\s]*(?:{_SECRET_WORDS})[^=&;#\s]*=)[^&;\s]*", re.IGNORECASE)
_SECRET_LINE_RE = re.compile(rf"(?:{_SECRET_WORDS})|//[^/\s]*@|[^\s/@:]+:[^\s/@]*@", re.IGNORECASE)


def is_secret_name(name: object) -> bool:
    """True when a key called ``name`` holds a secret (``password``, ``service_auth_key``, ``api-token``...)."""
    if not isinstance(name, str):
        return False
    words = _CAMEL_RE.sub("_", name).lower()
    return _SECRET_NAME_RE.search(words) is not None


def is_secret_path(parts: Iterable[object]) -> bool:
    """True when any key along a key path names a secret (so its value must never be shown)."""
    return any(is_secret_name(part) for part in parts)


def redact_url(url: str) -> str:
    """``url`` with its password/userinfo and secret query parameters masked; other text unchanged."""
    text = _USERINFO_RE.sub(MASK + "@", url)
    return _SECRET_QUERY_RE.sub(lambda match: match.group(1) + MASK, text)


def redact_address(address: str) -> str:
    """A ``host:port`` or URL with any ``user:pass@`` part masked."""
    return redact_url(_BARE_USERINFO_RE.sub(MASK + "@", address))


def may_hold_secret(text: str) -> bool:
    """True when a line of a document names a secret key or carries URL credentials (never quote it)."""
    return _SECRET_LINE_RE.search(text) is not None
