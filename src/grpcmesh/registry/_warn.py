"""Warn once per distinct problem, with a bounded memory of what was already said.

A registry full of bad records (or an attacker writing new ones in a loop) must neither flood
the log nor grow a "seen" set without bound: :class:`WarnOnce` remembers the most recent
``capacity`` keys (least recently seen are forgotten first, and may be warned about again).
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Hashable

__all__ = ["DEFAULT_CAPACITY", "WarnOnce"]

DEFAULT_CAPACITY = 4096


class WarnOnce:
    """An LRU-bounded set of keys already warned about."""

    def __init__(self, capacity: int = DEFAULT_CAPACITY) -> None:
        if capacity < 1:
            raise ValueError("WarnOnce capacity must be at least 1")
        self.capacity = capacity
        self._seen: OrderedDict[Hashable, None] = OrderedDict()

    def first(self, key: Hashable) -> bool:
        """True the first time ``key`` is seen (then remembered), False while it is remembered."""
        if key in self._seen:
            self._seen.move_to_end(key)
            return False
        self._seen[key] = None
        if len(self._seen) > self.capacity:
            self._seen.popitem(last=False)
        return True

    def warning(self, logger: logging.Logger, key: Hashable, message: str, *args: object) -> None:
        """``logger.warning(message, *args)`` unless ``key`` was warned about already.

        Exceptions among ``args`` are logged as their text: a log record keeps its arguments,
        and an exception would keep its traceback's frames (a RecursionError from a hostile
        record holds about a thousand) alive in any handler that stores records.
        """
        if self.first(key):
            logger.warning(message, *(str(a) if isinstance(a, BaseException) else a for a in args))

    def forget(self, key: Hashable) -> None:
        self._seen.pop(key, None)

    def __len__(self) -> int:
        return len(self._seen)
