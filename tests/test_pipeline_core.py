"""The pipeline core itself: observers, dispatch order, the one source of SIP truth."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from sipwatch.config import parse_config
from sipwatch.ingest.framing import LogParser
from sipwatch.ingest.sip import parse_sip_message
from sipwatch.ingest.transactions import RegisterTracker
from sipwatch.model import (
    LogChunk,
    MessageBatch,
    RegisterAttempt,
    RegisterTransaction,
    ServiceEvent,
    SipMessage,
    Stream,
)
from sipwatch.pipeline.core import Pipeline, PipelineSettings, tz_offset_of
from sipwatch.pipeline.interest import only_failed, only_succeeded
from sipwatch.pipeline.scanners import ScannerClassifier
from sipwatch.sip_meaning import TIMER_F
from tools.synth import Device, Scenario, pino, sip_dump

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


def test_hooks_that_want_only_failures_or_successes_are_called_for_those_alone_in_order() -> None:
    """``@only_failed`` / ``@only_succeeded`` hooks are skipped for routine completions; every
    call that happens keeps the order the observers were added in."""
    calls: list[str] = []

    class Picky:
        def __init__(self, name: str) -> None:
            self.name = name

        @only_failed
        def observe_transaction(self, tx: RegisterTransaction) -> None:
            calls.append(f"{self.name} failed tx {tx.outcome_key}")

        @only_succeeded
        def observe_attempt(self, att: RegisterAttempt) -> None:
            calls.append(f"{self.name} success {att.to_user}")

    class Everything:
        def observe_transaction(self, tx: RegisterTransaction) -> None:
            calls.append(f"all tx {tx.outcome_key}")

        def observe_attempt(self, att: RegisterAttempt) -> None:
            calls.append(f"all attempt {att.outcome.value}")

    sc = Scenario(T0)
    sc.register_ok(Device("1001", "acme.example.com", "203.0.113.7"))
    sc.register_rejected(
        Device("1002", "acme.example.com", "203.0.113.8"), 403, "Forbidden", "x", challenged=True
    )
    pipeline = Pipeline(PipelineSettings(), [Picky("first"), Everything(), Picky("last")])
    pipeline.feed(LogChunk("drachtio", Stream.TEXT, "".join(sc.drachtio)))
    pipeline.finish()
    assert calls == [
        "all tx 401",
        "all tx 200",
        "first success 1001",
        "all attempt success",
        "last success 1001",
        "all tx 401",
        "first failed tx 403",
        "all tx 403",
        "last failed tx 403",
        "all attempt failure",
    ]


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
    pipeline.feed(LogChunk("drachtio", Stream.TEXT, ""))  # idle: the held line is complete
    assert recorder.seen[-1] == "event startup"
    pipeline.feed(MessageBatch("hep/101", wire, node="101"))
    pipeline.finish()
    assert sources == expect_sip_from
    messages = sum(s.startswith("msg") for s in recorder.seen)
    assert messages == 4 * len(expect_sip_from)
    # the registrar's line only a log has is kept whichever carries the SIP messages
    assert recorder.seen.count("event startup") == 1


def test_a_sip_record_held_to_the_end_of_a_log_is_not_counted_when_hep_is_the_truth() -> None:
    sources: list[str] = []

    class Sources:
        def observe_message(self, msg: SipMessage) -> None:
            sources.append(msg.source)

    text, _ = scenario()
    sip_only = text[: text.rindex("{")]  # the four SIP records, without the registrar line
    for truth, expected in (("hep", []), ("all", ["drachtio"] * 4)):
        sources.clear()
        pipeline = Pipeline(PipelineSettings(sip_truth=truth), [Sources()])
        pipeline.feed(LogChunk("drachtio", Stream.TEXT, sip_only))
        assert sources == expected[:3]  # the last record is held until the end
        pipeline.finish()
        assert sources == expected


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


# ----------------------------------------------------------------------------- settings
def test_default_settings() -> None:
    assert PipelineSettings() == PipelineSettings(
        tz_offset=0.0,
        timer_f=TIMER_F,
        max_pending_transactions=100_000,
        max_pending_attempts=100_000,
        scanner_min_users=10,
        scanner_window=60.0,
        failure_table_size=10_000,
        sip_truth="all",
    )


SETTINGS_CONFIG = """
[sources]
timezone = "Asia/Kolkata"
[sip]
timer_f_seconds = 16
max_pending_transactions = 500
max_pending_attempts = 600
[diagnosis]
scanner_distinct_users = 7
scanner_window_seconds = 30
"""


def test_settings_from_config() -> None:
    config = parse_config(SETTINGS_CONFIG)
    expected = PipelineSettings(
        tz_offset=19800.0,  # +05:30, no daylight saving
        timer_f=16.0,
        max_pending_transactions=500,
        max_pending_attempts=600,
        scanner_min_users=7,
        scanner_window=30.0,
        sip_truth="all",  # no HEP listener: the logs are all there is
    )
    assert PipelineSettings.from_config(config) == expected
    # an explicit offset wins, also zero (the replay's --tz-offset 0)
    assert PipelineSettings.from_config(config, tz_offset=0.0) == expected.replace(tz_offset=0.0)
    assert PipelineSettings.from_config(config, tz_offset=-3600.0).tz_offset == -3600.0
    hep = parse_config(
        SETTINGS_CONFIG + '[sources.hep]\nlisten = "127.0.0.1:9060"\nsip_truth = "logs"\n'
    )
    assert PipelineSettings.from_config(hep).sip_truth == "logs"


def test_replace_changes_only_what_it_names() -> None:
    base = PipelineSettings(timer_f=8.0, scanner_min_users=4)
    changed = base.replace(tz_offset=3600.0, sip_truth="hep")
    assert changed == PipelineSettings(
        tz_offset=3600.0, timer_f=8.0, scanner_min_users=4, sip_truth="hep"
    )
    assert base.tz_offset == 0.0  # frozen: the original is untouched


@pytest.mark.parametrize(
    ("name", "offset"),
    [
        ("UTC", 0.0),
        ("utc", 0.0),
        ("Z", 0.0),
        ("gmt", 0.0),
        ("Etc/UTC", 0.0),
        ("Asia/Kolkata", 19800.0),
        ("Etc/GMT+5", -18000.0),  # POSIX sign: five hours west
    ],
)
def test_tz_offset_of(name: str, offset: float) -> None:
    assert tz_offset_of(name) == offset


def test_the_stages_are_built_from_the_settings() -> None:
    settings = PipelineSettings(
        timer_f=16.0,
        max_pending_transactions=500,
        max_pending_attempts=600,
        scanner_min_users=7,
        scanner_window=30.0,
        failure_table_size=50,
    )
    pipeline = Pipeline(settings)
    tracker = pipeline.tracker
    assert (tracker.timer_f, tracker.max_pending, tracker.max_pending_attempts) == (16.0, 500, 600)
    assert (pipeline.scanners.min_users, pipeline.scanners.window) == (7, 30.0)
    assert pipeline.failures.max_entries == 50
    assert pipeline.settings is settings


def test_drachtio_local_time_is_shifted_by_the_offset() -> None:
    recorder = Recorder()
    seen: list[float] = []

    class Times:
        def observe_message(self, msg: SipMessage) -> None:
            seen.append(msg.ts)

    pipeline = Pipeline(PipelineSettings(tz_offset=3600.0), [recorder, Times()])
    text, _ = scenario()
    pipeline.feed(LogChunk("drachtio", Stream.TEXT, text))
    pipeline.finish()
    assert seen == pytest.approx([T0 - 3600 + 0.001 * i for i in range(1, 5)], abs=1e-6)


# ----------------------------------------------------------------------------- log time
def wire_message(ts: float, dev: Device, lines: list[str], what: str = "recv") -> SipMessage:
    record = sip_dump(ts, what, "udp", dev.ip, 5060, lines)
    head, _, body = record.partition("\n")
    msg = parse_sip_message(ts, "hep/7", what, int(head.split()[3]), "udp", dev.ip, 5060, body)
    assert msg is not None
    return msg


def test_log_time_spans_the_oldest_and_newest_message_whatever_the_order() -> None:
    dev = Device("2001", "acme.example.com", "203.0.113.8")
    pipeline = Pipeline(PipelineSettings())
    assert (pipeline.first_ts, pipeline.log_now) == (0.0, 0.0)
    stamps = [0.0, T0 + 5, T0 + 1, T0 + 9, 0.0, T0 + 3]  # 0: a message without a time
    pipeline.feed(MessageBatch("hep/7", [wire_message(ts, dev, dev.register()) for ts in stamps]))
    assert (pipeline.first_ts, pipeline.log_now) == (T0 + 1, T0 + 9)


# ----------------------------------------------------------------------------- observers
def test_observers_added_later_run_after_and_see_the_stages() -> None:
    calls: list[str] = []

    class Watcher:
        def __init__(self, name: str) -> None:
            self.name = name
            self.scanners: ScannerClassifier | None = None
            self.tracker: RegisterTracker | None = None

        def observe_transaction(self, tx: RegisterTransaction) -> None:
            calls.append(f"{self.name} {tx.status}")

        def watch_scanners(self, scanners: ScannerClassifier) -> None:
            self.scanners = scanners

        def watch_tracker(self, tracker: RegisterTracker) -> None:
            self.tracker = tracker

    first, second = Watcher("first"), Watcher("second")
    pipeline = Pipeline(PipelineSettings(), [first])
    pipeline.add_observer(second)
    assert (first.scanners, first.tracker) == (pipeline.scanners, pipeline.tracker)
    assert (second.scanners, second.tracker) == (pipeline.scanners, pipeline.tracker)
    text, _ = scenario()
    pipeline.feed(LogChunk("drachtio", Stream.TEXT, text))
    pipeline.finish()
    assert calls == ["first 401", "second 401", "first 403", "second 403"]


def test_parse_stats_are_published_per_chunk_and_for_every_source_at_the_end() -> None:
    published: list[tuple[str, int]] = []

    class Stats:
        def observe_parse_stats(self, parser: LogParser, source: str) -> None:
            published.append((source, dict(parser.stats_by_source[source].records)))

    pipeline = Pipeline(PipelineSettings(), [Stats()])
    text, wire = scenario()
    first = text.partition(" \n2")[0]  # cut after the first record
    pipeline.feed(LogChunk("a", Stream.TEXT, first + " \n"))
    pipeline.feed(LogChunk("b", Stream.TEXT, text))
    pipeline.feed(MessageBatch("hep/101", wire))  # no log text: nothing parsed to publish
    assert published == [("a", {}), ("b", {"sip": 4})]  # the last record is held back
    pipeline.finish()
    assert published[2:] == [("a", {"sip": 1}), ("b", {"sip": 4, "pino": 1})]


def test_nodes_are_published_on_change_and_bounded() -> None:
    nodes: list[tuple[str, str]] = []

    class Nodes:
        def observe_source_node(self, source: str, node: str) -> None:
            nodes.append((source, node))

    pipeline = Pipeline(PipelineSettings(), [Nodes()])
    pipeline.feed(LogChunk("s0", Stream.TEXT, "", node="n1"))
    pipeline.feed(LogChunk("s0", Stream.TEXT, "", node="n1"))
    pipeline.feed(LogChunk("s0", Stream.TEXT, "", node=""))  # says nothing: no change
    pipeline.feed(LogChunk("s0", Stream.TEXT, "", node="n2"))
    assert nodes == [("s0", "n1"), ("s0", "n2")]
    for i in range(1, 1024):
        pipeline.feed(MessageBatch(f"s{i}", [], node="n"))
    assert len(nodes) == 2 + 1023
    pipeline.feed(MessageBatch("s1024", [], node="n"))  # a 1025th source: not remembered
    pipeline.feed(MessageBatch("s5", [], node="moved"))  # a known one still moves
    assert nodes[-1] == ("s5", "moved")
    assert len(nodes) == 2 + 1023 + 1


# ----------------------------------------------------------------------------- time
def test_advance_times_out_what_is_still_open() -> None:
    recorder = Recorder()
    dev = Device("3001", "acme.example.com", "203.0.113.9")
    pipeline = Pipeline(PipelineSettings(timer_f=32.0), [recorder])
    pipeline.feed(MessageBatch("hep/7", [wire_message(T0, dev, dev.register())]))
    pipeline.advance(T0 + 31)
    assert recorder.seen == ["msg REGISTER"]
    pipeline.advance(T0 + 33)
    assert recorder.seen == ["msg REGISTER", "tx timeout", "attempt timeout"]
    pipeline.advance(T0 + 99)
    pipeline.finish()
    assert recorder.seen == ["msg REGISTER", "tx timeout", "attempt timeout"]
    (record,) = pipeline.failures.records()
    assert (record.user, record.status) == ("3001", "timeout")


def test_symptom_of_a_failure_group() -> None:
    pipeline = Pipeline(PipelineSettings())
    text, _ = scenario()
    pipeline.feed(LogChunk("drachtio", Stream.TEXT, text))
    pipeline.finish()
    (record,) = pipeline.failures.records()
    symptom = pipeline.symptom(record)
    assert (symptom.user, symptom.domain, symptom.source_ip) == (
        "1001",
        "acme.example.com",
        "203.0.113.7",
    )
    assert (symptom.status, symptom.x_reason, symptom.challenged) == (
        403,
        "Invalid credentials",
        True,
    )


def test_a_username_that_registered_is_no_guess_for_the_scanner_threshold() -> None:
    """Behind one NAT, a phone that registered fine and then fails is not part of a spray."""
    sc = Scenario(T0)
    ip = "198.51.100.20"
    sc.register_ok(Device("100", "acme.example.com", ip))
    for user in ("100", "101", "102"):  # port 5062: not the registered phone's dialog
        sc.register_rejected(
            Device(user, "acme.example.com", ip, port=5062),
            403,
            "Forbidden",
            None,
            challenged=False,
        )
    pipeline = Pipeline(PipelineSettings(scanner_min_users=3))
    pipeline.feed(LogChunk("drachtio", Stream.TEXT, "".join(sc.drachtio)))
    pipeline.finish()
    assert pipeline.scanners.scanner_state(ip) is None
    assert sorted(r.user for r in pipeline.failures.records()) == ["100", "101", "102"]
    sc.register_rejected(
        Device("103", "acme.example.com", ip, port=5062), 403, "Forbidden", None, challenged=False
    )
    pipeline = Pipeline(PipelineSettings(scanner_min_users=3))
    pipeline.feed(LogChunk("drachtio", Stream.TEXT, "".join(sc.drachtio)))
    pipeline.finish()
    assert pipeline.scanners.scanner_state(ip) is not None
    # the two guesses moved into the IP's record and the third folded into it; the phone
    # that worked keeps its own record
    assert [(r.user, r.source_ip, r.count) for r in pipeline.failures.records()] == [
        ("*", ip, 3),
        ("100", ip, 1),
    ]
