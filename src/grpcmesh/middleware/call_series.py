"""Per-call Prometheus series kept as plain numbers, turned into metric families at scrape time.

prometheus-client's ``Counter.inc`` and ``Histogram.observe`` take a lock and check the metric
on every call: four of them per call per side cost more than all the rest of the metrics
concern. The mesh's concerns run on the event loop thread, so a call's record here is a
few additions to slotted numbers (a histogram is a bisect and three of them), and
:class:`SeriesCollector` builds the same families (names, labels, buckets, ``_total``/``_bucket``/
``_sum``/``_count`` samples) when Prometheus scrapes. Reading while the loop writes can only see
a scrape a call early or late, as with any concurrent scrape.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable, Iterable, Sequence
from typing import cast

from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString as _untyped_go_float

_go_float = cast(Callable[[float], str], _untyped_go_float)
"""How prometheus-client writes ``le`` bounds (``0.005``, ``1.0``, ``+Inf``), so the samples match its own."""


class CounterValue:
    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value = 0.0

    def inc(self) -> None:
        self.value += 1.0


class HistogramValue:
    """Non-cumulative bucket counts (made cumulative at scrape time), sum and count."""

    __slots__ = ("bounds", "counts", "sum")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1  # ``le`` is inclusive
        self.sum += value


class CounterSeries:
    """A counter family: label values -> :class:`CounterValue`."""

    def __init__(self, name: str, documentation: str, labels: Sequence[str]) -> None:
        self.name, self.documentation, self.labels = name, documentation, tuple(labels)
        self.values: dict[tuple[str, ...], CounterValue] = {}

    def child(self, *label_values: str) -> CounterValue:
        found = self.values.get(label_values)
        if found is None:
            found = self.values[label_values] = CounterValue()
        return found

    def family(self) -> Metric:
        family = CounterMetricFamily(self.name, self.documentation, labels=self.labels)
        for label_values, counter in list(self.values.items()):
            family.add_metric(list(label_values), counter.value)
        return family


class HistogramSeries:
    """A histogram family: label values -> :class:`HistogramValue`."""

    def __init__(self, name: str, documentation: str, labels: Sequence[str], buckets: Sequence[float]) -> None:
        self.name, self.documentation, self.labels = name, documentation, tuple(labels)
        self.bounds = tuple(float(b) for b in buckets)
        self.values: dict[tuple[str, ...], HistogramValue] = {}

    def child(self, *label_values: str) -> HistogramValue:
        found = self.values.get(label_values)
        if found is None:
            found = self.values[label_values] = HistogramValue(self.bounds)
        return found

    def family(self) -> Metric:
        family = HistogramMetricFamily(self.name, self.documentation, labels=self.labels)
        edges = [_go_float(b) for b in self.bounds] + ["+Inf"]
        for label_values, histogram in list(self.values.items()):
            running, buckets = 0, []
            for edge, count in zip(edges, list(histogram.counts), strict=True):
                running += count
                buckets.append((edge, float(running)))
            family.add_metric(list(label_values), buckets, histogram.sum)
        return family


class SeriesCollector(Collector):
    """Exposes a fixed list of series to a ``CollectorRegistry``."""

    def __init__(self, series: Iterable[CounterSeries | HistogramSeries]) -> None:
        self.series = tuple(series)

    def describe(self) -> Iterable[Metric]:
        """Names without values, so the registry refuses a clash with another collector."""
        for one in self.series:
            family_type = CounterMetricFamily if isinstance(one, CounterSeries) else HistogramMetricFamily
            yield family_type(one.name, one.documentation, labels=one.labels)

    def collect(self) -> Iterable[Metric]:
        return [one.family() for one in self.series]
