"""Fan-out of server-sent messages to every open page, bounded per page.

A page that stops reading (a backgrounded tab, a dead connection) must not make the
dashboard buffer without limit: when its queue is full its connection is ended, and the
browser's ``EventSource`` reconnects and starts again from a fresh full state.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager

Message = tuple[str, str]
"""(SSE event name, JSON data)."""

CLOSE = None
"""Queued to tell a subscriber its stream is over."""


class Hub:
    def __init__(self, queue_size: int = 256) -> None:
        self._queue_size = queue_size
        self._subscribers: set[asyncio.Queue[Message | None]] = set()

    @property
    def subscriber_count(self) -> int:
        return len(self._subscribers)

    @contextmanager
    def subscribe(self) -> Iterator[asyncio.Queue[Message | None]]:
        """A queue of messages published while the ``with`` block is open; ``None`` means stop."""
        queue: asyncio.Queue[Message | None] = asyncio.Queue(self._queue_size + 1)
        self._subscribers.add(queue)
        try:
            yield queue
        finally:
            self._subscribers.discard(queue)

    def publish(self, event: str, data: str) -> None:
        for queue in list(self._subscribers):
            if queue.qsize() >= self._queue_size:
                self._end(queue)  # too slow: drop it; it reconnects with a fresh state
            else:
                queue.put_nowait((event, data))

    def close_all(self) -> None:
        for queue in list(self._subscribers):
            self._end(queue)

    def _end(self, queue: asyncio.Queue[Message | None]) -> None:
        while not queue.empty():
            queue.get_nowait()
        queue.put_nowait(CLOSE)
        self._subscribers.discard(queue)
