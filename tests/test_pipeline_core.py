"""The pipeline core itself: observers, dispatch order, the one source of SIP truth."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from sipwatch.ingest.sip import parse_sip_message
from sipwatch.model import (
    LogChunk,
    MessageBatch,
    RegisterAttempt,
    RegisterTransaction,
    ServiceEvent,
    SipMessage,
    Stream,
)
from sipwatch.pipeline.core import Pipeline, PipelineSettings
from tools.synth import Device, Scenario, pino

T0 = 1_790_000_000.0


@dataclass
class Recorder:
    """An observer that keeps what it was shown, in order."""

    seen: list[str] = field(default_factory=list)

    def observe_message(self, msg: SipMessage) -> None:
        self.seen.append(f"msg {msg.status or msg.method}")

    def observe_event(self, ev: ServiceEvent) -> None:
        self.seen.append(f"event {ev.kind}")

    def observe_transaction(self, tx: RegisterTransaction) -> None:
        self.seen.append(f"tx {tx.outcome_key}")

    def observe_attempt(self, att: RegisterAttempt) -> None:
        self.seen.append(f"attempt {att.outcome.value}")


def scenario() -> tuple[str, list[SipMessage]]:
    """A log with one rejected registration (4 SIP messages) and one registrar line, and the
    same 4 messages as a capture feed would deliver them."""
    sc = Scenario(T0)
    dev = Device("1001", "acme.example.com", "203.0.113.7")
    sc.register_rejected(dev, 403, "Forbidden", "Invalid credentials", challenged=True)
    text = "".join(sc.drachtio) + pino(T0 + 1, 30, "connected to drachtio listening on 9022") + "\n"
    wire = []
    for record in sc.drachtio:
        head, _, body = record.partition("\n")
        what, size = head.split()[2], int(head.split()[3])
        wire.append(parse_sip_message(T0, "hep/101", what, size, "udp", "203.0.113.7", 5060, body))
    return text, [m for m in wire if m is not None]


def test_observers_see_messages_then_completions_in_order() -> None:
    recorder = Recorder()
    pipeline = Pipeline(PipelineSettings(), [recorder])
    text, _ = scenario()
    pipeline.feed(LogChunk("drachtio", Stream.TEXT, text))
    pipeline.finish()
    assert recorder.seen == [
        "msg REGISTER",
        "msg 401",
        "tx 401",
        "msg REGISTER",
        "msg 403",
        "tx 403",
        "attempt failure",
        "event startup",
    ]
    # the pipeline's own stages saw it too: the failure table and log time
    assert [(r.user, r.status, r.count) for r in pipeline.failures.records()] == [("1001", 403, 1)]
    assert T0 < pipeline.first_ts <= pipeline.log_now < T0 + 1


@pytest.mark.parametrize(
    ("truth", "expect_sip_from"),
    [("all", {"drachtio", "hep/101"}), ("hep", {"hep/101"}), ("logs", {"drachtio"})],
)
def test_one_source_of_sip_truth(truth: str, expect_sip_from: set[str]) -> None:
    recorder = Recorder()
    sources: set[str] = set()

    class Sources:
        def observe_message(self, msg: SipMessage) -> None:
            sources.add(msg.source)

    pipeline = Pipeline(PipelineSettings(sip_truth=truth), [recorder, Sources()])
    text, wire = scenario()
    pipeline.feed(LogChunk("drachtio", Stream.TEXT, text))
    pipeline.feed(MessageBatch("hep/101", wire, node="101"))
    pipeline.finish()
    assert sources == expect_sip_from
    messages = sum(s.startswith("msg") for s in recorder.seen)
    assert messages == 4 * len(expect_sip_from)
    # the registrar's line only a log has is kept whichever carries the SIP messages
    assert recorder.seen.count("event startup") == 1


def test_a_source_that_knows_its_node_is_published_once_for_per_node_views() -> None:
    from sipwatch.metrics import SipwatchMetrics, render_text

    metrics = SipwatchMetrics(process_metrics=False)
    pipeline = Pipeline(PipelineSettings(), [metrics])
    text, wire = scenario()
    pipeline.feed(LogChunk("jambonz-sbc-sip-abcde", Stream.TEXT, text, node="sbc-node-1"))
    pipeline.feed(MessageBatch("hep/101", wire, node="101"))
    pipeline.feed(LogChunk("jambonz-sbc-sip-abcde", Stream.TEXT, "", node="sbc-node-1"))
    exposition = render_text(metrics.registry)
    info = sorted(
        line for line in exposition.splitlines() if line.startswith("sipwatch_source_node")
    )
    assert info == [
        'sipwatch_source_node_info{node="101",source="hep/101"} 1.0',
        'sipwatch_source_node_info{node="sbc-node-1",source="jambonz-sbc-sip-abcde"} 1.0',
    ]
