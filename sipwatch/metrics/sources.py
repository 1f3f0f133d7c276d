"""Metrics of the log sources and the pipeline's queues: is every source followed, and is
any stage falling behind?  Fed by the daemon (``set_source_up``, ``observe_queue*``) and the
pipeline (``observe_source_node``).

Per-node views: a source that knows its SBC node (a Kubernetes pod's node, a HEP capture
agent) is published once as ``sipwatch_source_node_info{source, node} 1``.  Every per-source
metric then splits by node with a join, without a node label multiplying its series::

    sum by (node) (rate(sipwatch_sip_messages_total[5m])
      * on (source) group_left (node) sipwatch_source_node_info)
"""

from __future__ import annotations

from sipwatch.metrics import names
from sipwatch.metrics.families import CounterVec, GaugeVec, VecCollector
from sipwatch.metrics.labels import CappedLabel


class SourceCollector(VecCollector):
    """A prometheus-client collector for source state and queue fill."""

    def __init__(self, source: CappedLabel, stage: CappedLabel, node: CappedLabel) -> None:
        self._source = source
        self._stage = stage
        self._node = node
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
        self.node = GaugeVec(
            names.SOURCE_NODE,
            "1 for each log source and the SBC node it describes (join on source).",
            ["source", "node"],
        )
        self._nodes: dict[str, str] = {}  # source label -> node label

    def set_source_up(self, source: str, up: bool) -> None:
        label = self._source(source)
        key = (label,)
        if up and self._state.get(label) is False:
            self.reconnects.inc(key)
        self._state[label] = up
        self.up.set(key, 1 if up else 0)
        self.reconnects.touch(key)

    def observe_source_node(self, source: str, node: str) -> None:
        """``source`` carries the logs or captures of SBC node ``node`` (bounded: both labels
        are capped, and a source has one node at a time)."""
        label = self._source(source)
        node_label = self._node(node)
        old = self._nodes.get(label)
        if old == node_label:
            return
        if old is not None:
            self.node.remove((label, old))
        self._nodes[label] = node_label
        self.node.set((label, node_label), 1)

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

    def _families(self) -> tuple[CounterVec | GaugeVec, ...]:
        return (self.up, self.reconnects, self.depth, self.capacity, self.drops, self.node)
