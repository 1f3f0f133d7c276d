"""Metrics of the log sources and the pipeline's queues: is every source followed, and is
any stage falling behind?  Fed by the daemon (``set_source_up``, ``observe_queue*``)."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.metrics_core import Metric

from sipwatch.metrics import names
from sipwatch.metrics.families import CounterVec, GaugeVec, described
from sipwatch.metrics.labels import CappedLabel


class SourceCollector:
    """A prometheus-client collector for source state and queue fill."""

    def __init__(self, source: CappedLabel, stage: CappedLabel) -> None:
        self._source = source
        self._stage = stage
        self._state: dict[str, bool] = {}
        self.up = GaugeVec(
            names.SOURCE_UP, "1 when the log source is connected and followed.", ["source"]
        )
        self.reconnects = CounterVec(
            names.SOURCE_RECONNECTS, "Times a source came back after being down.", ["source"]
        )
        self.depth = GaugeVec(names.QUEUE_DEPTH, "Items waiting in a pipeline queue.", ["stage"])
        self.capacity = GaugeVec(names.QUEUE_CAPACITY, "Capacity of a pipeline queue.", ["stage"])
        self.drops = CounterVec(
            names.QUEUE_DROPS, "Items dropped because a pipeline queue was full.", ["stage"]
        )

    def set_source_up(self, source: str, up: bool) -> None:
        label = self._source(source)
        key = (label,)
        if up and self._state.get(label) is False:
            self.reconnects.inc(key)
        self._state[label] = up
        self.up.set(key, 1 if up else 0)
        self.reconnects.touch(key)

    def source_status(self) -> dict[str, bool]:
        """Current up/down state of every source reported so far (a ``readiness`` callable)."""
        return dict(self._state)

    def observe_queue(self, stage: str, depth: int, capacity: int) -> None:
        key = (self._stage(stage),)
        self.depth.set(key, depth)
        self.capacity.set(key, capacity)
        self.drops.touch(key)

    def observe_queue_drop(self, stage: str) -> None:
        self.drops.inc((self._stage(stage),))

    def describe(self) -> list[Metric]:
        return described(self._families())

    def collect(self) -> Iterator[Metric]:
        for vec in self._families():
            yield vec.family()

    def _families(self) -> tuple[CounterVec | GaugeVec, ...]:
        return (self.up, self.reconnects, self.depth, self.capacity, self.drops)
