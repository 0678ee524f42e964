"""One watch per service name, shared by every watcher of a registry object.

Every backend watches the same way: the first watcher of a name reads the current state
(errors go to that watcher), a *producer* task then follows the store and publishes full
snapshots into a :class:`SnapshotFeed` that every watcher of the name reads, and when the last
watcher leaves, the producer is stopped and everything kept for the name is dropped. A
:class:`WatchHub` does that bookkeeping once, so a backend only supplies what is specific to
its store:

* ``load(name) -> (snapshot, state)``: read the name now; ``state`` is whatever the
  producer needs to continue from there (a revision, an index, the decoded records);
* ``follow(topic)``: run until cancelled, publishing into ``topic.feed``; call
  ``topic.healthy()`` once the store confirmed the stream. Returning means "the stream ended
  cleanly, read afresh" (at once if it had been confirmed, else after a backoff pause, so a
  producer that keeps ending at once cannot spin); raising means "failed".

The hub keeps producers alive: *any* exception is logged once per failing streak with the
backend and the name, the last snapshot stays with the watchers, and after a backoff
(:class:`grpcmesh._backoff.Backoff`) the name is read afresh and followed again. A backend
that pushes changes itself (memory) passes no ``follow`` and calls :meth:`WatchHub.publish`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncGenerator, Awaitable, Callable
from typing import Generic, TypeVar

from grpcmesh._backoff import Backoff
from grpcmesh._tasks import cancel_and_wait
from grpcmesh.errors import MeshError, RegistryClosedError
from grpcmesh.registry.base import Snapshot, SnapshotFeed

__all__ = ["Topic", "WatchHub"]

log = logging.getLogger("grpcmesh.registry")

S = TypeVar("S")


class Topic(Generic[S]):
    """The per-name state of a hub: feed, watcher count, producer task and producer state."""

    def __init__(self, hub: WatchHub[S], name: str) -> None:
        self.name = name
        self.feed = SnapshotFeed()
        self.watchers = 0
        self.task: asyncio.Task[None] | None = None
        self.backoff = Backoff(hub.backoff_initial, hub.backoff_maximum)
        self._state: S | None = None
        self._has_state = False
        self._settled = asyncio.Event()
        self._failed = False
        self._confirmed = False
        self._hub = hub

    @property
    def state(self) -> S:
        if not self._has_state:
            raise LookupError(f"watch of {self.name} has no state yet")
        return self._state  # type: ignore[return-value]  # set together with _has_state

    @state.setter
    def state(self, value: S) -> None:
        self._state = value
        self._has_state = True

    async def publish(self, snapshot: Snapshot) -> None:
        await self.feed.publish(snapshot)

    def healthy(self) -> None:
        """The producer's stream works: reset its backoff, and say so if it had been failing."""
        self._confirmed = True
        if self.backoff.attempts:
            log.info(
                "%s watch of %s works again after %d failed attempt(s)",
                self._hub.backend,
                self.name,
                self.backoff.attempts,
            )
        self.backoff.reset()


Loader = Callable[[str], Awaitable[tuple[Snapshot, S]]]
Follower = Callable[[Topic[S]], Awaitable[None]]


class WatchHub(Generic[S]):
    """The watches of one registry object, one :class:`Topic` per watched name."""

    def __init__(
        self,
        backend: str,
        load: Loader[S],
        follow: Follower[S] | None = None,
        *,
        guard: Callable[[str], None] | None = None,
        on_idle: Callable[[], Awaitable[None]] | None = None,
        backoff_initial: float = 0.1,
        backoff_maximum: float = 5.0,
    ) -> None:
        self.backend = backend
        self.backoff_initial = backoff_initial
        self.backoff_maximum = backoff_maximum
        self._load = load
        self._follow = follow
        self._guard = guard
        self._on_idle = on_idle
        self._topics: dict[str, Topic[S]] = {}
        self._closed = False

    def __len__(self) -> int:
        return len(self._topics)

    def names(self) -> list[str]:
        """Names with live watch state, sorted."""
        return sorted(self._topics)

    def topic(self, name: str) -> Topic[S] | None:
        """The live state of ``name``, if it has watchers."""
        return self._topics.get(name)

    def topics(self) -> list[Topic[S]]:
        """Topics whose first snapshot is published (those a poller should keep current)."""
        return [t for t in self._topics.values() if t._settled.is_set() and not t._failed]

    def producers(self) -> int:
        """Producer tasks still running."""
        return sum(1 for t in self._topics.values() if t.task is not None and not t.task.done())

    async def publish(self, name: str, snapshot: Snapshot) -> None:
        """Publish ``snapshot`` to the watchers of ``name``, if it has any (push-style backends)."""
        topic = self._topics.get(name)
        if topic is not None and topic._settled.is_set() and not topic._failed:
            await topic.feed.publish(snapshot)

    async def watch(self, name: str) -> AsyncGenerator[Snapshot, None]:
        """Full snapshots of ``name``: the current state first, then one per change."""
        if self._guard is not None:
            self._guard(name)
        topic = await self._join(name)
        try:
            async for snapshot in topic.feed.subscribe():
                yield snapshot
        finally:
            await self._leave(topic)

    async def _join(self, name: str) -> Topic[S]:
        while True:
            if self._closed:
                raise RegistryClosedError(f"the {self.backend} registry is closed; open a new registry")
            topic = self._topics.get(name)
            if topic is None:
                return await self._open(name)
            if not topic._settled.is_set():
                await topic._settled.wait()  # another watcher is reading the name: share its result
                continue
            topic.watchers += 1
            return topic

    async def _open(self, name: str) -> Topic[S]:
        topic = self._topics[name] = Topic(self, name)
        topic.watchers = 1
        try:
            snapshot, topic.state = await self._load(name)
            await topic.feed.publish(snapshot)
        except BaseException:
            topic._failed = True
            if self._topics.get(name) is topic:
                del self._topics[name]
            topic._settled.set()
            raise
        if self._follow is not None and not self._closed:
            task_name = f"grpcmesh-{self.backend}-watch-{name}"
            topic.task = asyncio.get_running_loop().create_task(self._keep_following(topic), name=task_name)
        topic._settled.set()
        return topic

    async def _leave(self, topic: Topic[S]) -> None:
        topic.watchers -= 1
        if topic.watchers > 0 or self._topics.get(topic.name) is not topic:
            return
        del self._topics[topic.name]  # last watcher gone: stop the producer, drop the name
        await cancel_and_wait((topic.task,))
        if not self._topics and self._on_idle is not None:
            await self._on_idle()

    async def _keep_following(self, topic: Topic[S]) -> None:
        assert self._follow is not None
        fresh = True  # the state in topic was just loaded
        while not self._closed:
            try:
                if not fresh:
                    snapshot, topic.state = await self._load(topic.name)
                    await topic.feed.publish(snapshot)
                fresh = False
                topic._confirmed = False
                await self._follow(topic)
                if topic._confirmed:
                    continue  # a confirmed stream ended cleanly: read afresh at once
                # Ended cleanly before the store confirmed it (compacted, reset, moved member):
                # read afresh too, but after a (growing) pause, so it can never spin.
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # any failure: keep the last snapshot, log once per streak, retry
                if topic.backoff.attempts == 0:
                    self._report(topic.name, exc)
            fresh = False
            await topic.backoff.sleep()

    def _report(self, name: str, exc: Exception) -> None:
        if isinstance(exc, MeshError):
            log.warning(
                "%s watch of %s failed; watchers keep the last snapshot, retrying with backoff: %s",
                self.backend,
                name,
                exc,
            )
        else:  # not a store failure we anticipated: keep the traceback, once
            log.error(
                "%s watch of %s failed unexpectedly; watchers keep the last snapshot, retrying with backoff",
                self.backend,
                name,
                exc_info=exc,
            )

    async def close(self) -> None:
        """Stop every producer and end every watch (watchers' loops finish normally)."""
        self._closed = True
        topics = list(self._topics.values())
        self._topics.clear()
        await cancel_and_wait(t.task for t in topics)
        for topic in topics:
            await topic.feed.close()
