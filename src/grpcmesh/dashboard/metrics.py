"""Rates from two scrapes of a service's Prometheus endpoint: calls/s, error ratio, p99.

Prometheus counters only ever grow, so what a dashboard shows is the *difference* between
two scrapes divided by the time between them (what PromQL's ``rate()`` does). A counter that
went down means the process restarted; like ``rate()`` we then count its new value as the
increase. The p99 is read from the histogram's bucket increases the way PromQL's
``histogram_quantile()`` does: find the bucket holding the 99th-percentile observation and
interpolate linearly inside it.

Client series (``grpc_client_*``, labelled ``caller``/``callee`` by the mesh) give the same
figures per caller→callee pair: the observed edges of the graph.

Everything here is pure (no I/O), so it is unit-tested directly. A scraped endpoint is not
trusted: a value that is not a finite non-negative number, or a bucket without a numeric
``le``, makes the whole exposition malformed (:class:`MalformedExposition`), never a crash later.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from prometheus_client.parser import text_string_to_metric_families

HANDLED_TOTAL = "grpc_server_handled_total"
HANDLING_SECONDS_BUCKET = "grpc_server_handling_seconds_bucket"
CLIENT_HANDLED_TOTAL = "grpc_client_handled_total"
CLIENT_HANDLING_SECONDS_BUCKET = "grpc_client_handling_seconds_bucket"
OK_CODE = "OK"
MAX_SERIES = 20_000
"""Series of the four families above kept from one exposition; more is treated as malformed."""
MAX_COUNT = float(2**53)
"""Larger than any real counter (and than a float counts exactly): rates stay finite numbers."""

EdgeKey = tuple[str, str]
"""(caller, callee) mesh service names, as the client series' labels give them."""


class MalformedExposition(ValueError):
    """A metrics response that cannot be read; the message never quotes the response."""

    def __init__(self, problem: str) -> None:
        super().__init__(f"malformed metrics exposition: {problem}")


DEFAULT_IGNORED_SERVICES: tuple[str, ...] = ("grpc.health.v1.", "grpc.reflection.")
"""gRPC services whose calls are infrastructure (health probes, reflection), not traffic."""

SeriesKey = tuple[tuple[str, str], ...]
"""A series' labels, sorted, as a hashable key."""


@dataclass(frozen=True)
class MetricsSample:
    """The counters of one scrape that the dashboard uses, with when it was taken."""

    at: float
    """Monotonic seconds (``time.monotonic()``) when the scrape completed."""
    handled: Mapping[SeriesKey, float] = field(default_factory=dict)
    """``grpc_server_handled_total`` per label set (the labels include ``grpc_code``)."""
    buckets: Mapping[SeriesKey, float] = field(default_factory=dict)
    """``grpc_server_handling_seconds_bucket`` per label set (the labels include ``le``)."""
    client_handled: Mapping[SeriesKey, float] = field(default_factory=dict)
    """``grpc_client_handled_total`` per label set (with ``caller``, ``callee``, ``grpc_code``)."""
    client_buckets: Mapping[SeriesKey, float] = field(default_factory=dict)
    """``grpc_client_handling_seconds_bucket`` per label set (with ``caller``, ``callee``, ``le``)."""


@dataclass(frozen=True)
class Window:
    """Per-second increases between two samples; windows of several instances add up."""

    calls_per_second: float = 0.0
    errors_per_second: float = 0.0
    bucket_rates: Mapping[float, float] = field(default_factory=dict)
    """Cumulative observations per second by bucket upper bound (``math.inf`` included)."""

    def __add__(self, other: Window) -> Window:
        merged = dict(self.bucket_rates)
        for bound, value in other.bucket_rates.items():
            merged[bound] = merged.get(bound, 0.0) + value
        return Window(
            self.calls_per_second + other.calls_per_second,
            self.errors_per_second + other.errors_per_second,
            merged,
        )


@dataclass(frozen=True)
class Rates:
    """What the page shows for an instance or a service."""

    calls_per_second: float
    error_ratio: float
    """Failed calls (any code but OK) as a fraction of all calls; 0 when there were none."""
    p99_seconds: float | None
    """``None`` when no call was observed in the window."""

    def to_json(self) -> dict[str, float | None]:
        return {
            "calls_per_second": round(self.calls_per_second, 3),
            "error_ratio": round(self.error_ratio, 4),
            "p99_seconds": None if self.p99_seconds is None else round(self.p99_seconds, 6),
        }


def _is_ignored(labels: Mapping[str, str], ignored_services: tuple[str, ...]) -> bool:
    service = labels.get("grpc_service", "")
    return any(service.startswith(prefix) for prefix in ignored_services)


def parse_sample(
    text: str, at: float, *, ignored_services: tuple[str, ...] = DEFAULT_IGNORED_SERVICES
) -> MetricsSample:
    """Pick the gRPC server and client counters out of a Prometheus text exposition.

    Raises :class:`MalformedExposition` (a ``ValueError``) when ``text`` is not valid exposition
    format or holds values no counter can have.
    """
    targets: dict[str, dict[SeriesKey, float]] = {name: {} for name in _FAMILIES}
    kept = 0
    try:
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                target = targets.get(sample.name)
                if target is None or _is_ignored(sample.labels, ignored_services):
                    continue
                value = float(sample.value)
                if not 0 <= value <= MAX_COUNT:  # also false for NaN
                    raise MalformedExposition(f"{sample.name} has a value that is not a finite count")
                if sample.name.endswith("_bucket"):
                    _parse_bound(sample.labels.get("le"), sample.name)
                kept += 1
                if kept > MAX_SERIES:
                    raise MalformedExposition(f"more than {MAX_SERIES} gRPC series in one exposition")
                target[tuple(sorted(sample.labels.items()))] = value
    except MalformedExposition:
        raise
    except Exception as exc:  # the parser raises several types on hostile input; none may escape
        raise MalformedExposition(f"not Prometheus text format ({type(exc).__name__})") from None
    return MetricsSample(
        at=at,
        handled=targets[HANDLED_TOTAL],
        buckets=targets[HANDLING_SECONDS_BUCKET],
        client_handled=targets[CLIENT_HANDLED_TOTAL],
        client_buckets=targets[CLIENT_HANDLING_SECONDS_BUCKET],
    )


_FAMILIES = (HANDLED_TOTAL, HANDLING_SECONDS_BUCKET, CLIENT_HANDLED_TOTAL, CLIENT_HANDLING_SECONDS_BUCKET)


def _parse_bound(le: str | None, name: str) -> float:
    try:
        bound = float(le) if le is not None else math.nan
    except ValueError:
        bound = math.nan
    if not bound >= 0:  # also true for NaN
        raise MalformedExposition(f"{name} has a bucket without a numeric, non-negative 'le' label")
    return bound


def _increase(previous: float | None, current: float) -> float:
    """A counter's increase; a decrease means it restarted from zero (as PromQL assumes)."""
    if previous is None or current < previous:
        return current
    return current - previous


def _bucket_bound(key: SeriesKey) -> float:
    return _parse_bound(dict(key).get("le"), "a histogram")  # "+Inf" parses to inf


def _check_order(previous: MetricsSample, current: MetricsSample) -> float:
    seconds = current.at - previous.at
    if seconds <= 0:
        raise ValueError(f"samples must be in time order; got {seconds:.3f}s between them")
    return seconds


def _window(
    seconds: float,
    handled: Iterable[tuple[SeriesKey, float, float | None]],
    buckets: Iterable[tuple[SeriesKey, float, float | None]],
) -> Window:
    """A window from (series, current value, previous value) triples."""
    calls = errors = 0.0
    for key, value, before in handled:
        increase = _increase(before, value)
        calls += increase
        if dict(key).get("grpc_code", OK_CODE) != OK_CODE:
            errors += increase
    bucket_totals: dict[float, float] = {}
    for key, value, before in buckets:
        bound = _bucket_bound(key)
        bucket_totals[bound] = bucket_totals.get(bound, 0.0) + _increase(before, value)
    return Window(
        calls_per_second=calls / seconds,
        errors_per_second=errors / seconds,
        bucket_rates={bound: total / seconds for bound, total in bucket_totals.items()},
    )


def window_between(previous: MetricsSample, current: MetricsSample) -> Window:
    """Per-second increases of the server series from ``previous`` to ``current`` (taken later)."""
    seconds = _check_order(previous, current)
    return _window(
        seconds,
        ((key, value, previous.handled.get(key)) for key, value in current.handled.items()),
        ((key, value, previous.buckets.get(key)) for key, value in current.buckets.items()),
    )


def _edge_of(key: SeriesKey) -> EdgeKey:
    labels = dict(key)
    return labels.get("caller", ""), labels.get("callee", "")


def edge_windows_between(previous: MetricsSample, current: MetricsSample) -> dict[EdgeKey, Window]:
    """Per-second increases of the client series, one window per (caller, callee) pair seen in
    ``current`` (a pair with no call in between gets a zero window: seen, but idle)."""
    seconds = _check_order(previous, current)
    handled: dict[EdgeKey, list[tuple[SeriesKey, float, float | None]]] = {}
    buckets: dict[EdgeKey, list[tuple[SeriesKey, float, float | None]]] = {}
    for key, value in current.client_handled.items():
        handled.setdefault(_edge_of(key), []).append((key, value, previous.client_handled.get(key)))
    for key, value in current.client_buckets.items():
        buckets.setdefault(_edge_of(key), []).append((key, value, previous.client_buckets.get(key)))
    return {edge: _window(seconds, handled.get(edge, ()), buckets.get(edge, ())) for edge in handled.keys() | buckets}


def histogram_quantile(quantile: float, cumulative: Mapping[float, float]) -> float | None:
    """The ``quantile`` (0..1) of a cumulative histogram ``{upper bound: count}``.

    Interpolates linearly inside the bucket that holds the rank, from the previous bound (0
    for the first bucket). When the rank falls in the ``+Inf`` bucket, returns the highest
    finite bound, since nothing better is known. ``None`` when the histogram is empty.
    """
    if not 0.0 <= quantile <= 1.0:
        raise ValueError(f"quantile must be between 0 and 1, got {quantile}")
    bounds = sorted(cumulative)
    if not bounds:
        return None
    counts: list[float] = []
    running = 0.0
    for bound in bounds:
        running = max(running, cumulative[bound])  # cumulative counts never decrease
        counts.append(running)
    total = counts[-1]
    if total <= 0:
        return None
    rank = quantile * total
    for i, bound in enumerate(bounds):
        if counts[i] >= rank:
            lower = bounds[i - 1] if i > 0 else 0.0
            below = counts[i - 1] if i > 0 else 0.0
            if math.isinf(bound):
                return lower if i > 0 else None
            in_bucket = counts[i] - below
            if in_bucket <= 0:
                return bound
            return lower + (bound - lower) * (rank - below) / in_bucket
    return None  # unreachable: the last count equals the total


def summarize(window: Window, quantile: float = 0.99) -> Rates:
    """The rates the page shows, from a window (or the sum of several)."""
    calls = window.calls_per_second
    return Rates(
        calls_per_second=calls,
        error_ratio=window.errors_per_second / calls if calls > 0 else 0.0,
        p99_seconds=histogram_quantile(quantile, window.bucket_rates) if calls > 0 else None,
    )


def combine(windows: Iterable[Window]) -> Window | None:
    """The sum of ``windows`` (a service's instances), or ``None`` if there are none."""
    total: Window | None = None
    for window in windows:
        total = window if total is None else total + window
    return total
