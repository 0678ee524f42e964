"""Adaptive load shedding for an asyncio server: refuse work early instead of queueing it.

An overloaded grpc.aio server does not pile calls up in Python: grpc's core holds them until
the event loop gets round to them, so the handlers see a steady trickle and a growing wait.
The main signal is therefore each call's *queueing delay*: mesh channels send the timeout
they gave a call (``x-mesh-timeout-ms``); the server's ``time_remaining()`` when the handler
starts tells how much of it was spent waiting. The target for it is relative to the handler's
own service time: ``queue_delay_factor`` (0.3) times the shortest time an admitted call took in
the last ``window``, at least ``min_queue_delay`` (``max_queue_delay`` until a call has
finished, or always with a factor of 0). As CoDel does for packets, the server starts an
*episode* of shedding once that delay stays above the target for the persistence window (or
one call alone waited that long) and the queue is an overload, not a random burst: calls came
in at least ``arrival_factor`` (2) times as fast as the server completed them at its best in
the last ``window`` (counted over two persistence windows), or one call waited
``sustained_interval`` (0.2 s). A random burst below capacity looks just like the start of an
overload for many service times (at 0.8x load busy periods are long-tailed), which is why the
persistence test alone refused a third of such calls. In an episode a call that already waited
longer than the target is refused at once — serving it late helps nobody. The episode ends when
the server is seen idle (nothing in flight for the persistence window: no standing queue), or
``cooldown`` after its last refusal for a server that never looks idle (long-lived streams keep
calls in flight). The window is relative too: ``interval_factor`` (2) times the same shortest
service time, within ``min_interval`` (10 ms) and ``interval`` (50 ms; the fixed value whenever
the target is fixed).

The onset of an overload costs the default policy its p99: grpc hands the loop one call per
handler burst, oldest first, so until an episode starts the server sees calls only as fast as
it serves them, and the arrival rate shows only once shedding makes the loop fast; before
that, a call must have waited ``sustained_interval``. The late calls served in that time (about
0.2 s) were the benchmark's p99 tail at 3x capacity (10.6x the unloaded p99, against 1.6x with
``arrival_factor=0``, which starts an episode on every persistent queue — and then refused a
quarter of the calls at 0.8x with random arrivals). Telling a burst from an overload takes
evidence from a dozen or so calls, and at one call per handler burst nothing quicker is to be had.

In an episode, prompt calls are admitted up to how many calls the server has shown it can hold at
once, estimated as Kratos' BBR limiter does from the last ``window``: ``max completions per
second * min latency`` (Little's law), at least ``minimum_in_flight``. A prompt call that
finds every slot taken waits for one, but only for what is left of its target: the loop
always has the next call ready (no idle CPU between calls), and no admitted call has queued
longer than that in all. The same limit applies while the event loop lags more than
``max_lag`` (a probe task samples how late a timer fires), for handlers that pile up in Python.
A server whose calls do not queue and whose loop does not lag never sheds. A late call that
finds every slot taken before an episode waits for one (up to the persistence window in all)
instead of adding to the load, and is then served late unless its wait proved an overload.

Part of a call's wait is invisible to the server: while the loop is busy, the deadline grpc
derives from ``grpc-timeout`` starts about 10 ms after the client sent the call (measured with
grpcio 1.85, see BENCHMARKS.md), so the target bounds what the server can see, not all of it.
A server whose methods differ widely in duration gets its target from the fastest; give it a
fixed ``max_queue_delay`` (``queue_delay_factor=0``) above the longest time one handler holds
the loop.

Also: handlers that never ``await`` run one at a time, so their in-flight count stays
near zero; the queueing delay still sees them. Sync handlers (run on a thread pool) are not
admission-controlled. grpc.aio's own ``maximum_concurrent_rpcs`` is no substitute: calls
still wait in grpc's core before it counts them (admitted calls waited about 0.5 s at 3x load
in the benchmark), and health checks count against it and get refused.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass

from grpcmesh._tasks import cancel_and_wait
from grpcmesh.errors import ConfigError

log = logging.getLogger("grpcmesh.server")

NEVER_SHED_PREFIXES = ("/grpc.health.v1.Health/", "/grpc.reflection.")
"""Health checks and reflection must answer even when the server is overloaded."""


def never_shed(full_method: str) -> bool:
    return full_method.startswith(NEVER_SHED_PREFIXES)


@dataclass(frozen=True)
class SheddingPolicy:
    """When a server refuses calls (see the module docstring)."""

    enabled: bool = False
    queue_delay_factor: float = 0.3
    """The queueing target, as a fraction of the shortest time an admitted call took in the last
    ``window`` (the handler's own service time): a call may have waited that long before its handler
    starts; while shedding, a call that waited longer is refused, and a prompt one waits for a slot
    at most that long in all. 0: the fixed ``max_queue_delay`` instead."""
    min_queue_delay: float = 0.002
    """Floor of the relative target (below it, timer and loop jitter look like queueing)."""
    max_queue_delay: float = 0.01
    """The queueing target (seconds) while no admitted call has finished in the ``window`` yet,
    and always when ``queue_delay_factor`` is 0."""
    interval: float = 0.05
    """How long the queueing delay must stay above its target before calls are refused: at most
    this (seconds); with ``interval_factor``, ``interval_factor`` times the shortest time an
    admitted call took in the last ``window``, at least ``min_interval``."""
    interval_factor: float = 2.0
    """The persistence window relative to the handler's own service time: a queue that outlasts
    two of the fastest calls is not a burst the slots absorb. 0: always the fixed ``interval``
    (also while no admitted call has finished, and with ``queue_delay_factor`` 0)."""
    min_interval: float = 0.01
    """Floor of the relative persistence window (below it, a pause of the loop would start shedding)."""
    max_lag: float = 0.05
    """Event-loop lag (seconds) above which the server counts as overloaded."""
    arrival_factor: float = 2.0
    """A queue that persists for the window sheds only while calls arrive at least this many times
    as fast as the server has shown it can complete them (over two windows): a random burst below
    capacity queues calls as long as the onset of an overload does, but does not bring calls in
    at twice the rate. 0: every persistent queue sheds."""
    sustained_interval: float = 0.2
    """A call that waited this long (seconds) before its handler started proves an overload
    whatever the arrival rate: one too mild for ``arrival_factor`` (a random burst at 0.8x
    capacity keeps calls late for longer than this, but rarely makes one wait this long)."""
    cooldown: float = 1.0
    """Once the server sheds, it does so until it is seen idle (no call in flight for the
    persistence window), or at most until this long (seconds) after its last refusal (for servers
    whose long-lived streams keep calls in flight)."""
    minimum_in_flight: int = 2
    window: float = 2.0
    probe_interval: float = 0.05

    def __post_init__(self) -> None:
        for key in (
            "min_queue_delay",
            "max_queue_delay",
            "interval",
            "min_interval",
            "max_lag",
            "sustained_interval",
            "cooldown",
            "window",
            "probe_interval",
        ):
            value = getattr(self, key)
            if not value > 0:
                raise ConfigError(f"shedding.{key}: {value!r} must be > 0 seconds")
        if not 0 <= self.interval_factor <= 100:
            raise ConfigError(f"shedding.interval_factor: {self.interval_factor!r} must be within 0..100")
        if not 0 <= self.queue_delay_factor <= 10:
            raise ConfigError(f"shedding.queue_delay_factor: {self.queue_delay_factor!r} must be within 0..10")
        if not 0 <= self.arrival_factor <= 100:
            raise ConfigError(f"shedding.arrival_factor: {self.arrival_factor!r} must be within 0..100")
        if self.minimum_in_flight < 1:
            raise ConfigError(f"shedding.minimum_in_flight: {self.minimum_in_flight!r} must be >= 1")


_BUCKETS = 10
_ADMIT, _LATE, _FULL = 0, 1, 2


class LoadShedder:
    """Admission control for one server: :meth:`admit`, then :meth:`finished` when an admitted call ends."""

    def __init__(self, policy: SheddingPolicy | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        self.policy = policy or SheddingPolicy()
        self._clock = clock
        self._bucket_width = self.policy.window / _BUCKETS
        self._passed = [0] * _BUCKETS
        self._min_latency = [math.inf] * _BUCKETS
        self._current = math.floor(clock() / self._bucket_width)
        self.in_flight = 0
        self.lag = 0.0
        self.shed = 0
        self._renewed = -math.inf
        """When the episode started or last refused a call: ``cooldown`` runs from here."""
        self._shedding = False
        """In an episode: late calls are refused, prompt ones limited (see ``SheddingPolicy.cooldown``)."""
        self._empty_since = -math.inf
        """When the last call in flight ended, or the server refused one with none in flight."""
        self._above_since: float | None = None
        """When the queueing delay went above its target (None: it is below)."""
        self._arrivals: collections.deque[float] = collections.deque()
        """When the calls of the last two persistence windows came to admission."""
        self._probe: asyncio.Task[None] | None = None
        self._waiters: collections.deque[tuple[float, float, asyncio.Future[bool]]] = collections.deque()
        """Calls waiting for a slot, oldest first, each with when its wait budget ends and when its
        wait began (its queueing delay before it came to wait included)."""

    # -- the lag probe -------------------------------------------------------------------

    def start(self) -> None:
        """Start sampling the event loop's lag (needs a running loop)."""
        if self.policy.enabled and self._probe is None:
            self._probe = asyncio.get_running_loop().create_task(self._sample_lag(), name="grpcmesh-shedding-probe")

    async def stop(self) -> None:
        await cancel_and_wait((self._probe,))
        self._probe = None

    async def _sample_lag(self) -> None:
        interval = self.policy.probe_interval
        loop = asyncio.get_running_loop()
        while True:
            try:
                before = loop.time()
                await asyncio.sleep(interval)
                self.observe_lag(max(0.0, loop.time() - before - interval))
            except asyncio.CancelledError:
                raise
            except Exception:  # the probe must never die
                log.exception("load-shedding lag probe failed; continuing")
                with contextlib.suppress(Exception):
                    await asyncio.sleep(interval)

    def observe_lag(self, lag: float) -> None:
        """One lag sample: rises at once, decays over a few samples."""
        self.lag = lag if lag > self.lag else self.lag + 0.3 * (lag - self.lag)

    # -- the window of achieved throughput and latency -------------------------------------

    def _slot(self) -> int:
        index = math.floor(self._clock() / self._bucket_width)
        if index != self._current:
            for step in range(1, min(index - self._current, _BUCKETS) + 1):
                slot = (self._current + step) % _BUCKETS
                self._passed[slot] = 0
                self._min_latency[slot] = math.inf
            self._current = index
        return index % _BUCKETS

    def limit(self) -> int:
        """In-flight calls the server has shown it can hold: max rate * min latency, at least the floor."""
        self._slot()
        max_rate = max(self._passed) / self._bucket_width
        min_latency = min(self._min_latency)
        estimate = 0 if math.isinf(min_latency) else math.ceil(max_rate * min_latency)
        return max(self.policy.minimum_in_flight, estimate)

    def queue_target(self) -> float:
        """The queueing delay a call may have had before its handler starts (see ``SheddingPolicy``)."""
        return self._bounds()[0]

    def persistence_window(self) -> float:
        """How long calls must arrive late before the server sheds (see ``SheddingPolicy.interval``)."""
        return self._bounds()[1]

    def _bounds(self) -> tuple[float, float]:
        """(queueing target, persistence window), from one look at the shortest recent service time."""
        policy = self.policy
        if policy.queue_delay_factor:
            self._slot()
            service = min(self._min_latency)
            if not math.isinf(service):
                target = max(policy.min_queue_delay, policy.queue_delay_factor * service)
                if not policy.interval_factor:
                    return target, policy.interval
                return target, min(policy.interval, max(policy.min_interval, policy.interval_factor * service))
        return policy.max_queue_delay, policy.interval

    # -- per call ------------------------------------------------------------------------

    def admit(self, queued: float | None = None) -> bool:
        """True (and the call counted in flight) if the server should take the call.

        ``queued`` is how long the call waited before its handler started, when known.
        """
        if not self.policy.enabled:
            return True
        verdict = self._decide(queued, *self._bounds(), may_wait=False)
        if verdict is _ADMIT:
            self.in_flight += 1
            return True
        return self._refuse(self._clock())

    async def enter(self, queued: float | None = None) -> bool:
        """:meth:`admit`, except that a call refused only because every slot is taken waits for
        one: a prompt call for what is left of its queueing target (the CPU is then never idle
        for want of a call, and no admitted call has waited longer than that in all); a late call
        before the server sheds for up to ``interval`` in all, and is then served late unless that
        wait proved an overload (see :meth:`_overload_proven`), so a burst below capacity is not
        refused. A freed slot goes to the newest waiter (see :meth:`_release`)."""
        if not self.policy.enabled:
            return True
        target, window = self._bounds()
        verdict = self._decide(queued, target, window, may_wait=True)
        if verdict is _ADMIT:
            self.in_flight += 1
            return True
        waited = queued or 0.0
        now = self._clock()
        began = now - waited
        budget = (window if waited > target else target) - waited
        if verdict is _FULL and budget > 0:
            loop = asyncio.get_running_loop()
            waiter: asyncio.Future[bool] = loop.create_future()
            waiters = self._waiters
            while waiters and waiters[0][2].done():  # slots go to the newest: drop the old that are over
                waiters.popleft()
            waiters.append((now + budget, began, waiter))
            timer = loop.call_later(budget, _expire, waiter)
            try:
                if await waiter:
                    return True  # handed a slot by finished(): already counted in flight
            except asyncio.CancelledError:
                if waiter.done() and not waiter.cancelled() and waiter.result():
                    self._release()  # handed a slot just as the call was cancelled: give it on
                raise
            finally:
                timer.cancel()
        now = self._clock()
        if verdict is _FULL and not self._overloaded(now - began, window):
            self.in_flight += 1  # a late call that waited out its budget below capacity: served late
            return True
        return self._refuse(now)

    def _decide(self, queued: float | None, target: float, window: float, may_wait: bool) -> int:
        """``may_wait``: the call can wait for a slot (:meth:`enter`), so a late one finding every
        slot taken waits, even before the server sheds, instead of adding to the CPU's load."""
        now = self._clock()
        arrivals = self._arrivals
        arrivals.append(now)
        horizon = now - 2 * window
        while arrivals[0] < horizon:
            arrivals.popleft()
        if self._shedding and self._episode_over(now, window):
            self._shedding = False
        late = queued is not None and queued > target
        waited = queued or 0.0
        persists = self._queue_persists(late, now, waited, window)
        if persists and not self._shedding and self._overload_proven(waited, window):
            self._shedding = True
            self._renewed = now
        if late and self._shedding:
            return _LATE  # it already waited: serving it late helps nobody
        overloaded = self._shedding or self.lag > self.policy.max_lag or (late and may_wait)
        if overloaded and self.in_flight >= self.limit():
            return _FULL
        return _ADMIT

    def _queue_persists(self, late: bool, now: float, queued: float, window: float) -> bool:
        """CoDel's test: calls have been arriving late for at least ``window`` (a call that
        itself waited that long proves it)."""
        if not late:
            self._above_since = None
            return False
        if queued >= window:
            return True
        if self._above_since is None:
            self._above_since = now
            return False
        return now - self._above_since >= window

    def _overload_proven(self, waited: float, window: float) -> bool:
        """Whether a queue that persisted for ``window`` is an overload rather than a random
        burst below capacity: calls arrived at least ``arrival_factor`` times as fast as the
        server completed them at its best in the last ``window`` (any rate while nothing has
        completed), or one call waited ``sustained_interval`` (a random burst at 0.8x capacity keeps
        calls late for longer than that, as busy periods there are long-tailed, but rarely queues
        one call that long)."""
        policy = self.policy
        if waited >= policy.sustained_interval:
            return True
        if not policy.arrival_factor:
            return True
        self._slot()
        capacity = max(self._passed) / self._bucket_width
        return not capacity or len(self._arrivals) >= policy.arrival_factor * capacity * 2 * window

    def _overloaded(self, waited: float, window: float) -> bool:
        """Whether a call that found every slot taken and waited ``waited`` in all is to be refused."""
        if self._shedding or self.lag > self.policy.max_lag:
            return True
        return waited >= window and self._overload_proven(waited, window)

    def _episode_over(self, now: float, window: float) -> bool:
        """The server was idle (nothing in flight for the persistence window: no standing queue),
        or nothing was refused for ``cooldown``. A shorter idle proves nothing: refusing every late
        call empties the server now and then even at 3x capacity, until the next calls arrive."""
        if self.in_flight == 0 and now - self._empty_since >= window:
            return True
        return now - self._renewed >= self.policy.cooldown

    def _refuse(self, now: float) -> bool:
        self._renewed = now
        self._shedding = True
        if self.in_flight == 0:
            self._empty_since = now  # refusing is work: the server was not idle
        self.shed += 1
        return False

    def finished(self, latency: float) -> None:
        """An admitted call ended after ``latency`` seconds."""
        if not self.policy.enabled:
            return
        self._release()
        slot = self._slot()
        self._passed[slot] += 1
        if latency < self._min_latency[slot]:
            self._min_latency[slot] = latency

    def _release(self) -> None:
        """A slot is free: hand it to the newest call still waiting for one within its budget, or
        count it free. Newest first (adaptive LIFO, as in Facebook's "Fail at scale"): under a
        persistent queue the admitted call is the one that waited least, and the old ones run
        out of budget and are refused instead of every admitted call waiting as long as the
        queue is deep; with one waiter (the usual case below capacity) it is plain FIFO. A waiter
        whose budget ran out while the loop was busy (its timer has not fired yet) is refused
        here, so no admitted call has queued longer than its budget; once the server sheds, neither
        is one that has waited longer than the target (a late call that came to wait before the
        queue had persisted)."""
        waiters = self._waiters
        now = self._clock()
        target = self.queue_target() if self._shedding else math.inf
        while waiters:
            expires, since, waiter = waiters.pop()
            if waiter.done():
                continue
            if now > expires or now - since > target:
                waiter.set_result(False)
                continue
            waiter.set_result(True)
            return
        self.in_flight = max(0, self.in_flight - 1)
        if not self.in_flight:
            self._empty_since = now


def _expire(waiter: asyncio.Future[bool]) -> None:
    if not waiter.done():
        waiter.set_result(False)
