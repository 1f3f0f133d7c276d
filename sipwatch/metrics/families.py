"""Plain-state metric vectors that the stage collectors render at scrape time.

Each stage of sipwatch keeps its numbers in plain dicts keyed by label values and turns them
into prometheus-client metric families only when scraped - the custom-collector pattern that
client_python's own ``ProcessCollector`` and ``GCCollector`` use.  Why not the library's
``Counter``/``Gauge``/``Histogram`` objects:

* a stage that already keeps counters (the parser's ``ParseStats``, the tracker's
  ``TrackerStats``) is read where it is, instead of copying every increment;
* the hot path is one dict update, without ``labels()`` validation and a lock per message
  (the event loop is the only writer and the only reader);
* per-user series are removed by popping a key, and no ``*_created`` series is emitted (in
  the text format each would be one more series per counter child, doubling the per-user
  ones; ``disable_created_metrics()`` is a process-wide switch that would change other
  libraries' metrics too).

Rendering uses the library's ``CounterMetricFamily``, ``GaugeMetricFamily`` and
``HistogramMetricFamily``, so the exposition (text and OpenMetrics) is the library's.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable, Iterable, Iterator, Sequence

from prometheus_client import utils
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)

LabelValues = tuple[str, ...]

# The library's rendering of a bucket bound ("0.0001", "1.0", "+Inf"), so ``le`` values are
# spelled exactly as prometheus-client's own histograms spell them.
_le: Callable[[float], str] = utils.floatToGoString


class _ValueVec:
    """What a counter and a gauge family share: the family's name, help, label names and
    unit, and one value per label set."""

    __slots__ = ("doc", "labelnames", "name", "unit", "values")

    def __init__(self, name: str, doc: str, labelnames: Sequence[str], unit: str = "") -> None:
        self.name = name
        self.doc = doc
        self.labelnames = tuple(labelnames)
        self.unit = unit
        self.values: dict[LabelValues, float] = {}

    def remove(self, key: LabelValues) -> None:
        self.values.pop(key, None)


class CounterVec(_ValueVec):
    """A counter family: label values -> monotonically increasing value."""

    __slots__ = ()

    def inc(self, key: LabelValues, amount: float = 1.0) -> None:
        values = self.values
        values[key] = values.get(key, 0.0) + amount

    def touch(self, key: LabelValues) -> None:
        """Expose ``key`` at 0 before its first increment (a known label set)."""
        self.values.setdefault(key, 0.0)

    def get(self, key: LabelValues) -> float | None:
        return self.values.get(key)

    def family(self, values: dict[LabelValues, float] | None = None) -> CounterMetricFamily:
        fam = self.describe()
        for key, value in (self.values if values is None else values).items():
            fam.add_metric(key, value)
        return fam

    def describe(self) -> CounterMetricFamily:
        return CounterMetricFamily(self.name, self.doc, labels=self.labelnames, unit=self.unit)


class GaugeVec(_ValueVec):
    """A gauge family: label values -> current value (or a callable read at scrape time)."""

    __slots__ = ("functions",)

    def __init__(self, name: str, doc: str, labelnames: Sequence[str], unit: str = "") -> None:
        super().__init__(name, doc, labelnames, unit)
        self.functions: dict[LabelValues, Callable[[], float]] = {}

    def set(self, key: LabelValues, value: float) -> None:
        self.values[key] = value

    def set_function(self, key: LabelValues, read: Callable[[], float]) -> None:
        self.functions[key] = read

    def remove(self, key: LabelValues) -> None:
        super().remove(key)
        self.functions.pop(key, None)

    def get(self, key: LabelValues) -> float | None:
        read = self.functions.get(key)
        return read() if read is not None else self.values.get(key)

    def family(self) -> GaugeMetricFamily:
        fam = self.describe()
        for key, value in self.values.items():
            if key not in self.functions:
                fam.add_metric(key, value)
        for key, read in self.functions.items():
            fam.add_metric(key, read())
        return fam

    def describe(self) -> GaugeMetricFamily:
        return GaugeMetricFamily(self.name, self.doc, labels=self.labelnames, unit=self.unit)


class HistogramVec:
    """A histogram family with fixed buckets: label values -> bucket counts and sum."""

    __slots__ = ("bounds", "doc", "labelnames", "les", "name", "series", "unit")

    def __init__(
        self,
        name: str,
        doc: str,
        labelnames: Sequence[str],
        buckets: Iterable[float],
        unit: str = "",
    ) -> None:
        self.name = name
        self.doc = doc
        self.labelnames = tuple(labelnames)
        self.unit = unit
        self.bounds = tuple(sorted(buckets))
        self.les = (*(_le(b) for b in self.bounds), "+Inf")
        # per label set: counts per bucket (not cumulative; last = above every bound), sum
        self.series: dict[LabelValues, tuple[list[int], list[float]]] = {}

    def observe(self, key: LabelValues, value: float) -> None:
        series = self.series.get(key)
        if series is None:
            series = self.series[key] = ([0] * (len(self.bounds) + 1), [0.0])
        series[0][bisect_left(self.bounds, value)] += 1  # the bucket with value <= le
        series[1][0] += value

    def family(self) -> HistogramMetricFamily:
        fam = self.describe()
        for key, (counts, total) in self.series.items():
            running = 0
            buckets: list[tuple[str, float]] = []
            for le, n in zip(self.les, counts, strict=True):
                running += n
                buckets.append((le, float(running)))
            fam.add_metric(list(key), buckets, total[0])
        return fam

    def describe(self) -> HistogramMetricFamily:
        return HistogramMetricFamily(self.name, self.doc, labels=self.labelnames, unit=self.unit)


Vec = CounterVec | GaugeVec | HistogramVec


def described(families: Iterable[Vec]) -> list[Metric]:
    """``Collector.describe()`` for a stage: the families without samples."""
    return [f.describe() for f in families]


class VecCollector:
    """A stage collector that renders its vectors as they are: ``describe()`` and
    ``collect()`` from the one list of its families (``_families``)."""

    def _families(self) -> Sequence[Vec]:
        raise NotImplementedError

    def describe(self) -> list[Metric]:
        return described(self._families())

    def collect(self) -> Iterator[Metric]:
        for vec in self._families():
            yield vec.family()
