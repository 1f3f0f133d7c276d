"""SipwatchMetrics: names, bounded labels, top-N per-user/IP series, expiry, memory."""

from __future__ import annotations

import dataclasses
import gc
import tracemalloc
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client import REGISTRY, CollectorRegistry, Histogram
from prometheus_client.parser import text_string_to_metric_families

from sipwatch import __version__
from sipwatch import metrics as m
from sipwatch.ingest.framing import LogParser
from sipwatch.ingest.speedups import IMPLEMENTATION
from sipwatch.ingest.transactions import RegisterTracker
from sipwatch.metrics import SipwatchMetrics, render_text
from sipwatch.metrics.cardinality import OTHER
from sipwatch.model import (
    AttemptOutcome,
    Direction,
    LogChunk,
    MessageBatch,
    ServiceEvent,
    ServiceOrigin,
    SipMessage,
    Stream,
)
from sipwatch.pipeline.core import Pipeline, PipelineSettings
from sipwatch.sip_meaning import scanner_tool
from tests.cli_support import run_cli
from tests.samples import SRC, FakeClock, attempt, message, transaction
from tools.synth import Device, Scenario


def value(metrics: SipwatchMetrics, name: str, **labels: str) -> float | None:
    return metrics.registry.get_sample_value(name, labels)


def series(metrics: SipwatchMetrics, prefix: str) -> list[tuple[str, dict[str, str]]]:
    out = []
    for family in metrics.registry.collect():
        for s in family.samples:
            if s.name.startswith(prefix):
                out.append((s.name, dict(s.labels)))
    return out


# ----------------------------------------------------------------------- vocabularies
@pytest.mark.parametrize(
    ("status", "label"),
    [
        (200, "200"),
        (401, "401"),
        (403, "403"),
        (503, "503"),
        (404, "404"),  # jambonz passes a registration webhook's HTTP status through
        (499, "4xx"),
        (299, "2xx"),
        (699, "6xx"),
        (0, "none"),
        (99, "invalid"),
        (1000, "invalid"),
        ("timeout", "timeout"),
        ("garbage", "invalid"),
    ],
)
def test_status_label_is_bounded(status: int | str, label: str) -> None:
    assert m.status_label(status) == label


def test_status_label_set_is_small_whatever_the_input() -> None:
    labels = {m.status_label(code) for code in range(-5, 5000)}
    assert len(labels) <= len(m.KNOWN_STATUS_CODES) + 6 + 2


@pytest.mark.parametrize(
    ("header", "label"),
    [
        ("Unknown or invalid realm", "unknown_realm"),
        ("Invalid credentials", "invalid_credentials"),
        ("invalid CREDENTIALS ", "invalid_credentials"),
        ("Account has been deactivated", "account_deactivated"),
        ("Invalid address of record", "invalid_aor"),
        ("detected potential spammer from 198.51.100.7:5060", "potential_spammer"),
        ("Contact header is required for REGISTER requests", "contact_required"),
        ("", "none"),
        ("   ", "none"),
        ("'; DROP TABLE accounts; --", OTHER),
    ],
)
def test_x_reason_label(header: str, label: str) -> None:
    assert m.x_reason_label(header) == label


@pytest.mark.parametrize(
    ("ua", "tool"),
    [
        ("friendly-scanner", "sipvicious"),
        ("SIPVicious 0.3.3", "sipvicious"),
        ("sipcli/v1.8", "sipcli"),
        ("VaxSIPUserAgent/3.1", "vaxsip"),
        ("Yealink SIP-T46S 66.86.0.15", None),
        ("", None),
    ],
)
def test_scanner_tool(ua: str, tool: str | None) -> None:
    assert scanner_tool(ua) == tool


def test_clean_label_neutralises_hostile_text() -> None:
    hostile = 'ev\u202eil"\\\n\x00\udcff' + "x" * 500
    cleaned = m.clean_label(hostile, 40)
    assert len(cleaned) == 40
    for bad in ("\u202e", "\n", "\x00", "\udcff", '"', "\\"):
        assert bad not in cleaned
    assert m.user_label("a" * 300, "example.com").__len__() == m.USER_LABEL_MAX
    assert m.user_label("other", "") != OTHER


# ----------------------------------------------------------------------- registry
def test_uses_injected_registry_not_the_global_one() -> None:
    reg = CollectorRegistry()
    metrics = SipwatchMetrics(reg)
    assert metrics.registry is reg
    # A second instance on its own registry must not clash (global REGISTRY would raise).
    other = SipwatchMetrics()
    assert other.registry is not reg
    assert REGISTRY.get_sample_value("sipwatch_build_info", {"version": __version__}) is None
    assert value(metrics, m.BUILD_INFO, version=__version__, implementation=IMPLEMENTATION) == 1.0


def test_no_created_series() -> None:
    """Counters and histograms expose no ``*_created`` gauges (one more series per child)."""
    metrics = SipwatchMetrics()
    metrics.observe_lines(SRC, 3)
    metrics.observe_transaction(transaction())
    text = render_text(metrics.registry)
    assert "sipwatch_log_lines_total" in text
    assert "_created" not in text


def test_process_metrics_optional() -> None:
    assert "process_resident_memory_bytes" in render_text(SipwatchMetrics().registry)
    assert "process_" not in render_text(SipwatchMetrics(process_metrics=False).registry)


def test_restricted_scrape_by_name_works_through_the_filter() -> None:
    metrics = SipwatchMetrics()
    metrics.observe_lines(SRC, 2)
    restricted = metrics.registry.restricted_registry([m.LOG_LINES])
    names = {s.name for f in restricted.collect() for s in f.samples}
    assert names == {m.LOG_LINES}


# ----------------------------------------------------------------------- pipeline
def test_pipeline_counters() -> None:
    metrics = SipwatchMetrics()
    metrics.observe_lines(SRC, 10)
    metrics.observe_lines(SRC, 0)
    metrics.observe_record(SRC, "sip")
    metrics.observe_record(SRC, "api")
    metrics.observe_record(SRC, "bogus-kind")
    metrics.observe_parse_error(SRC, "bad_start_line")
    assert value(metrics, m.LOG_LINES, source=SRC) == 10
    assert value(metrics, m.LOG_RECORDS, source=SRC, kind="sip") == 1
    assert value(metrics, m.LOG_RECORDS, source=SRC, kind="api") == 1
    assert value(metrics, m.LOG_RECORDS, source=SRC, kind=OTHER) == 1
    assert value(metrics, m.PARSE_ERRORS, source=SRC, kind="bad_start_line") == 1


def test_observe_message_feeds_sip_messages_total() -> None:
    metrics = SipwatchMetrics()
    metrics.observe_message(message())
    metrics.observe_message(message())  # a retransmission counts too
    metrics.observe_message(
        message(direction=Direction.SEND, is_request=False, status=401, truncated=True)
    )
    metrics.observe_message(message(method="XYZZY", ts=1767268900.0))
    assert (
        value(
            metrics, m.SIP_MESSAGES, source=SRC, direction="recv", type="request", method="REGISTER"
        )
        == 2
    )
    assert (
        value(
            metrics,
            m.SIP_MESSAGES,
            source=SRC,
            direction="send",
            type="response",
            method="REGISTER",
        )
        == 1
    )
    assert (
        value(metrics, m.SIP_MESSAGES, source=SRC, direction="recv", type="request", method=OTHER)
        == 1
    )
    assert value(metrics, m.SIP_TRUNCATED, source=SRC) == 1
    assert value(metrics, m.SOURCE_LAST_EVENT, source=SRC) == 1767268900.0


def test_service_events() -> None:
    metrics = SipwatchMetrics()
    ev = ServiceEvent(
        ts=1767268801.0,
        source="registrar",
        origin=ServiceOrigin.REGISTRAR,
        kind="auth_error",
        level=50,
        message="Error SyntaxError",
    )
    metrics.observe_event(ev)
    assert (
        value(
            metrics,
            m.SERVICE_EVENTS,
            source="registrar",
            origin="registrar",
            kind="auth_error",
            level="error",
        )
        == 1
    )
    assert value(metrics, m.SOURCE_LAST_EVENT, source="registrar") == 1767268801.0


def test_source_up_reconnects_and_status() -> None:
    metrics = SipwatchMetrics()
    metrics.set_source_up(SRC, True)
    metrics.set_source_up("registrar", False)
    assert value(metrics, m.SOURCE_UP, source=SRC) == 1
    assert value(metrics, m.SOURCE_UP, source="registrar") == 0
    assert value(metrics, m.SOURCE_RECONNECTS, source=SRC) == 0
    metrics.set_source_up(SRC, False)
    metrics.set_source_up(SRC, True)
    assert value(metrics, m.SOURCE_RECONNECTS, source=SRC) == 1
    assert metrics.source_status() == {SRC: True, "registrar": False}


def test_capped_labels_stop_growing() -> None:
    metrics = SipwatchMetrics()
    for i in range(500):
        metrics.observe_lines(f"/var/log/generated-{i}.log", 1)
    sources = {labels["source"] for name, labels in series(metrics, m.LOG_LINES)}
    assert len(sources) == 65  # 64 accepted + "other"
    assert value(metrics, m.LOG_LINES, source=OTHER) == 436


def test_queues() -> None:
    metrics = SipwatchMetrics()
    metrics.observe_queue("parse", 7, 1000)
    metrics.observe_queue_drop("parse")
    assert value(metrics, m.QUEUE_DEPTH, stage="parse") == 7
    assert value(metrics, m.QUEUE_CAPACITY, stage="parse") == 1000
    assert value(metrics, m.QUEUE_DROPS, stage="parse") == 1


def test_later_stage_counters_fold_unknown_results() -> None:
    metrics = SipwatchMetrics()
    metrics.observe_root_cause("wrong_password", "warning")
    metrics.observe_root_cause("wrong_password", "apocalyptic")
    metrics.observe_diagnosis_error("db_unavailable")
    metrics.observe_alert("slack", "sent")
    metrics.observe_alert("slack", "exploded")
    metrics.observe_remediation("flush_cached_registration", "dry_run")
    assert value(metrics, m.ROOT_CAUSES, cause="wrong_password", severity="warning") == 1
    assert value(metrics, m.ROOT_CAUSES, cause="wrong_password", severity=OTHER) == 1
    assert value(metrics, m.DIAGNOSIS_ERRORS, kind="db_unavailable") == 1
    assert value(metrics, m.DIAGNOSIS_ERRORS, kind="redis_unavailable") == 0  # pre-initialised
    assert value(metrics, m.ALERTS, target="slack", result="sent") == 1
    assert value(metrics, m.ALERTS, target="slack", result=OTHER) == 1
    assert value(metrics, m.REMEDIATIONS, action="flush_cached_registration", result="dry_run") == 1


# ----------------------------------------------------------------------- REGISTER
def test_transactions_latency_and_retransmissions() -> None:
    metrics = SipwatchMetrics()
    metrics.observe_transaction(transaction(requests=3))
    metrics.observe_transaction(transaction(status=401, x_reason="", finished=1767268800.002))
    metrics.observe_transaction(
        transaction(status=0, timed_out=True, x_reason="", finished=1767268832.0)
    )
    metrics.observe_transaction(transaction(status=200, x_reason="", saw_request=False))
    labels = {"source": SRC, "side": "inbound"}
    assert (
        value(
            metrics, m.REGISTER_TRANSACTIONS, **labels, status="403", x_reason="invalid_credentials"
        )
        == 1
    )
    assert value(metrics, m.REGISTER_TRANSACTIONS, **labels, status="timeout", x_reason="none") == 1
    assert value(metrics, m.REGISTER_RETRANSMISSIONS, **labels) == 2
    lat = m.REGISTER_LATENCY
    assert value(metrics, lat + "_count", **labels, result="failure") == 1
    assert value(metrics, lat + "_count", **labels, result="challenge") == 1
    # timeouts and orphan responses have no latency
    assert value(metrics, lat + "_count", **labels, result="success") is None
    assert value(metrics, lat + "_bucket", **labels, result="challenge", le="0.0025") == 1
    assert value(metrics, lat + "_bucket", **labels, result="failure", le="0.025") == 0


def test_attempts_scanner_and_per_user_series() -> None:
    metrics = SipwatchMetrics()
    metrics.observe_attempt(attempt())
    metrics.observe_attempt(attempt(user_agent="friendly-scanner", challenged=False))
    metrics.observe_attempt(
        attempt(outcome=AttemptOutcome.TIMEOUT, status=0, x_reason="", to_user="bob")
    )
    base = {"source": SRC, "side": "inbound"}
    assert (
        value(
            metrics,
            m.REGISTER_ATTEMPTS,
            **base,
            outcome="failure",
            status="403",
            x_reason="invalid_credentials",
            challenged="true",
        )
        == 1
    )
    assert (
        value(
            metrics,
            m.REGISTER_ATTEMPTS,
            **base,
            outcome="timeout",
            status="timeout",
            x_reason="none",
            challenged="true",
        )
        == 1
    )
    assert value(metrics, m.REGISTER_SCANNER_ATTEMPTS, **base, tool="sipvicious") == 1
    assert value(metrics, m.REGISTER_ATTEMPT_DURATION + "_count", **base, outcome="failure") == 2
    alice = {"side": "inbound", "user": "alice@acme.example.com"}
    assert value(metrics, m.USER_FAILURES, **alice, status="403") == 2
    assert value(metrics, m.USER_FAILING, **alice) == 1
    assert (
        value(
            metrics, m.USER_FAILURES, side="inbound", user="bob@acme.example.com", status="timeout"
        )
        == 1
    )
    ip = {"side": "inbound", "ip": "203.0.113.5"}
    assert value(metrics, m.IP_FAILURES, **ip, status="403") == 2
    assert value(metrics, m.IP_DISTINCT_USERS, **ip) == 2

    metrics.observe_attempt(attempt(outcome=AttemptOutcome.SUCCESS, status=200, x_reason=""))
    assert value(metrics, m.USER_FAILING, **alice) == 0
    assert value(metrics, m.USER_FAILURES, **alice, status="403") == 2


def test_success_of_untracked_user_creates_no_series() -> None:
    metrics = SipwatchMetrics()
    metrics.observe_attempt(attempt(outcome=AttemptOutcome.SUCCESS, status=200))
    assert series(metrics, m.USER_FAILING) == []
    assert series(metrics, m.USER_FAILURES) == []


def test_top_n_demotion_removes_series_and_folds_into_other() -> None:
    metrics = SipwatchMetrics(top_n=2)
    metrics.observe_attempt(attempt(to_user="a"))
    metrics.observe_attempt(attempt(to_user="b"))
    metrics.observe_attempt(attempt(to_user="c"))  # folded
    assert value(metrics, m.USER_FAILURES, side="inbound", user=OTHER, status="403") == 1
    metrics.observe_attempt(attempt(to_user="c"))  # guaranteed 2 > 1: promoted
    users = {labels["user"] for _, labels in series(metrics, m.USER_FAILURES)}
    assert "c@acme.example.com" in users
    assert len(users - {OTHER}) == 2
    demoted = ({"a@acme.example.com", "b@acme.example.com"} - users).pop()
    assert value(metrics, m.USER_FAILING, side="inbound", user=demoted) is None
    assert value(metrics, m.LABEL_TRACKER_EVICTIONS, dimension="user", reason="demoted") == 1
    assert value(metrics, m.LABEL_TRACKER_FOLDED, dimension="user") == 1
    assert value(metrics, m.LABEL_TRACKER_EXPOSED, dimension="user") == 2
    assert value(metrics, m.LABEL_TRACKER_LIMIT, dimension="user") == 2


def test_stale_series_expire_after_ttl() -> None:
    clock = FakeClock()
    metrics = SipwatchMetrics(top_n=5, series_ttl=900.0, clock=clock)
    metrics.observe_attempt(attempt(to_user="old", peer_ip="198.51.100.1"))
    clock.now += 600
    metrics.observe_attempt(attempt(to_user="new", peer_ip="198.51.100.2"))
    clock.now += 400  # old: 1000 s idle, new: 400 s idle
    metrics.expire()
    users = {labels["user"] for _, labels in series(metrics, m.USER_FAILURES)}
    ips = {labels["ip"] for _, labels in series(metrics, m.IP_FAILURES)}
    assert users == {"new@acme.example.com"}
    assert ips == {"198.51.100.2"}
    assert {lb["ip"] for _, lb in series(metrics, m.IP_DISTINCT_USERS)} == {"198.51.100.2"}
    assert value(metrics, m.LABEL_TRACKER_EVICTIONS, dimension="user", reason="expired") == 1
    assert value(metrics, m.LABEL_TRACKER_EVICTIONS, dimension="ip", reason="expired") == 1


def test_hostile_labels_render_to_a_parseable_exposition() -> None:
    metrics = SipwatchMetrics()
    metrics.observe_attempt(
        attempt(to_user='x"} evil_metric 1\n#', to_host="\u202eexample.com\\", peer_ip="::1\n")
    )
    text = render_text(metrics.registry)
    families = {f.name for f in text_string_to_metric_families(text)}
    assert "evil_metric" not in families
    users = {lb["user"] for _, lb in series(metrics, m.USER_FAILURES)}
    assert users == {"x?} evil_metric 1?#@?example.com?"}


# ----------------------------------------------------------------------- scanner bound
def _exposed_per_key_series(metrics: SipwatchMetrics) -> int:
    return sum(
        len(series(metrics, name))
        for name in (m.USER_FAILURES, m.USER_FAILING, m.IP_FAILURES, m.IP_DISTINCT_USERS)
    )


def _total_series(metrics: SipwatchMetrics) -> int:
    return sum(len(f.samples) for f in metrics.registry.collect())


def test_scanner_spraying_100k_usernames_stays_bounded() -> None:
    top_n = 20
    metrics = SipwatchMetrics(top_n=top_n, process_metrics=False)
    # Real users failing repeatedly before the scan starts.
    for i in range(5):
        for _ in range(3):
            metrics.observe_attempt(attempt(to_user=f"real{i}", peer_ip=f"203.0.113.{i}"))
    att = attempt(
        peer_ip="198.51.100.66",
        user_agent="friendly-scanner",
        challenged=False,
        x_reason="Unknown or invalid realm",
    )

    def spray(start: int, stop: int) -> None:
        for i in range(start, stop):
            att.to_user = f"{i:06d}"  # mutate one object: measure sipwatch, not the test
            metrics.observe_attempt(att)

    spray(0, 1000)
    series_after_warmup = _total_series(metrics)
    gc.collect()
    tracemalloc.start()
    try:
        spray(1000, 10_000)
        gc.collect()
        mem_10k, _ = tracemalloc.get_traced_memory()
        spray(10_000, 100_000)
        gc.collect()
        mem_100k, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()

    # Per-user series: <= top_n users x 1 status, + "other"; failing gauge <= top_n.
    user_series = series(metrics, m.USER_FAILURES)
    assert len(user_series) <= top_n + 1
    assert len(series(metrics, m.USER_FAILING)) <= top_n
    # Per-IP: the scanner IP plus the 5 real ones.
    assert len(series(metrics, m.IP_FAILURES)) <= top_n + 1
    assert _exposed_per_key_series(metrics) <= 4 * top_n + 2
    # The total exposition did not grow with the spray.
    assert _total_series(metrics) == series_after_warmup
    # The real offenders kept their series; the spray went to "other".
    users = {lb["user"] for _, lb in user_series}
    assert {f"real{i}@acme.example.com" for i in range(5)} <= users
    folded = value(metrics, m.USER_FAILURES, side="inbound", user=OTHER, status="403")
    assert folded is not None and folded >= 99_000
    assert value(metrics, m.IP_DISTINCT_USERS, side="inbound", ip="198.51.100.66") == (
        m.DISTINCT_USERS_CAP
    )
    # Memory: 90,000 more usernames cost (next to) nothing.
    assert mem_100k - mem_10k < 64 * 1024, (mem_10k, mem_100k)
    assert len(metrics.offenders.users) <= top_n + metrics.offenders.users.capacity


def test_scanner_from_100k_ips_stays_bounded() -> None:
    top_n = 10
    metrics = SipwatchMetrics(top_n=top_n, process_metrics=False)
    att = attempt(outcome=AttemptOutcome.ABANDONED, status=401, x_reason="")
    for i in range(100_000):
        att.peer_ip = f"10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}"
        metrics.observe_attempt(att)
    assert len(series(metrics, m.IP_FAILURES)) <= top_n + 1
    assert len(series(metrics, m.IP_DISTINCT_USERS)) <= top_n
    assert len(metrics.offenders.ips) <= top_n + metrics.offenders.ips.capacity
    assert value(metrics, m.LABEL_TRACKER_FOLDED, dimension="ip") == 100_000 - top_n


# ----------------------------------------------------------------------- attack vs devices
SPRAY_IP = "185.243.5.17"
DEVICE_IPS = [f"203.0.113.{10 + i}" for i in range(4)]


def _exchange(user: str, ip: str, ts: float, n: int, *, status: int = 403) -> list[SipMessage]:
    """One inbound REGISTER and its final answer, as a wire capture (HEP) delivers them."""
    request = message(
        ts=ts,
        source="hep/1",
        peer_ip=ip,
        call_id=f"{n}@{ip}",
        via_branch=f"z9hG4bK{n}",
        from_user=user,
        to_user=user,
        to_host="acme.sip.example.com",
        user_agent="pjsip",
    )
    answer = dataclasses.replace(
        request,
        ts=ts + 0.0004,
        direction=Direction.SEND,
        is_request=False,
        status=status,
        reason="Forbidden",
    )
    return [request, answer]


def _spray_batches(sprayed: int, start: float) -> Iterator[MessageBatch]:
    """Four devices failing all along (each five times), and one source spraying ``sprayed``
    usernames with no scanner User-Agent (recognised by its usernames alone); batches of
    1,000 exchanges, so memory stays flat."""
    batch: list[SipMessage] = []
    ts = start
    for n in range(sprayed):
        ts += 0.002
        if n % 20_000 == 0:
            for i, ip in enumerate(DEVICE_IPS):
                batch += _exchange(f"10{i}", ip, ts, -(n + i + 1))
        batch += _exchange(f"{n:06d}", SPRAY_IP, ts, n)
        if len(batch) >= 2000:
            yield MessageBatch("hep/1", batch)
            batch = []
    yield MessageBatch("hep/1", batch)


def test_a_100k_username_spray_never_pushes_real_devices_out_of_their_series() -> None:
    """Issue 12.1, through the pipeline (tracker, scanner classifier, metrics) as a wire capture
    feeds it:
    the four failing devices keep their own per-user series with their exact counts, the
    scanner has its own per-IP series, and the exposition does not grow with the spray."""
    top_n = 20
    metrics = SipwatchMetrics(top_n=top_n, process_metrics=False)
    pipeline = Pipeline(PipelineSettings(), observers=[metrics])
    sizes = []
    for i, batch in enumerate(_spray_batches(100_000, 1_790_000_000.0)):
        pipeline.feed(batch)
        if i in (10, 99):
            sizes.append(_total_series(metrics))
    pipeline.finish()

    users = {
        lb["user"]: value(metrics, m.USER_FAILURES, **lb)
        for _, lb in series(metrics, m.USER_FAILURES)
    }
    assert users == {f"10{i}@acme.sip.example.com": 5.0 for i in range(4)}
    ips = {
        lb["ip"]: value(metrics, m.IP_FAILURES, **lb) for _, lb in series(metrics, m.IP_FAILURES)
    }
    assert ips == {SPRAY_IP: 100_000.0} | {ip: 5.0 for ip in DEVICE_IPS}
    assert value(metrics, m.SCANNER_SOURCES, evidence="usernames") == 1
    # the names tried before the source was recognised were withdrawn, never left behind
    withdrawn = value(metrics, m.LABEL_TRACKER_EVICTIONS, dimension="user", reason="scanner")
    assert withdrawn == pipeline.settings.scanner_min_users - 1
    # bounded: the exposition has the same size after 10,000 and 100,000 sprayed names
    assert sizes[0] == sizes[1] == _total_series(metrics)
    assert len(metrics.offenders.users) <= top_n + metrics.offenders.users.capacity + 1


def test_replay_prometheus_gives_each_broken_device_its_own_series(tmp_path: Path) -> None:
    """Issue 12.1 as reported: `sipwatch replay --format prometheus` over a log with four
    broken devices and a 30-username scanner gives each of the four its own series (and the
    scanner its per-IP one), whichever comes first in the log."""
    sc = Scenario(1_790_000_000.0)
    devices = [Device(f"10{i}", "acme.sip.example.com", ip) for i, ip in enumerate(DEVICE_IPS)]
    for n in range(30):
        bot = Device(f"{n:04d}", "acme.sip.example.com", SPRAY_IP, 5070 + n)
        sc.register_rejected(bot, 403, "Forbidden", None, challenged=False)
    for _ in range(2):
        for dev in devices:
            sc.register_rejected(dev, 403, "Forbidden", "Invalid credentials", challenged=True)
        sc.tick(30.0)
    log = tmp_path / "drachtio.log"
    log.write_text("".join(sc.drachtio), encoding="utf-8")
    proc = run_cli("replay", "--format", "prometheus", str(log), check=True)
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for f in text_string_to_metric_families(proc.stdout)
        for s in f.samples
    }
    users = {
        dict(labels)["user"]: v for (name, labels), v in samples.items() if name == m.USER_FAILURES
    }
    assert users == {f"10{i}@acme.sip.example.com": 2.0 for i in range(4)}
    ips = {dict(labels)["ip"]: v for (name, labels), v in samples.items() if name == m.IP_FAILURES}
    assert ips == {SPRAY_IP: 30.0} | {ip: 2.0 for ip in DEVICE_IPS}


# ----------------------------------------------------------------------- stage collectors
def test_parser_counters_are_read_at_scrape_time() -> None:
    """observe_parse_stats only hands the parser over; later parsing shows without a call."""
    metrics = SipwatchMetrics(process_metrics=False)
    parser = LogParser()
    parser.feed(LogChunk("registrar", Stream.TEXT, '{"level":30,"time":1,"msg":"up"}\n'))
    metrics.observe_parse_stats(parser, "registrar")
    metrics.observe_parse_stats(parser, "registrar")  # the same parser is read once
    assert value(metrics, m.LOG_LINES, source="registrar") == 1
    parser.feed(LogChunk("registrar", Stream.TEXT, '{"level":30\n{"level":30,"msg":"x"}\n'))
    parser.flush()  # the last record is held until the input shows it is complete
    assert value(metrics, m.LOG_LINES, source="registrar") == 3
    assert value(metrics, m.LOG_RECORDS, source="registrar", kind="pino") == 2
    assert value(metrics, m.PARSE_ERRORS, source="registrar", kind="pino_json") == 1
    metrics.observe_parse_error("registrar", "pino_json")  # counted outside the parser
    assert value(metrics, m.PARSE_ERRORS, source="registrar", kind="pino_json") == 2


def test_tracker_state_is_read_at_scrape_time() -> None:
    metrics = SipwatchMetrics(process_metrics=False)
    tracker = RegisterTracker(max_pending=2)
    metrics.watch_tracker(tracker)
    for n in range(3):  # three open REGISTERs: one is dropped by the bound
        tracker.on_message(message(call_id=f"c{n}", via_branch=f"z9hG4bK{n}"))
    tracker.on_message(message(direction=Direction.SEND, is_request=False, status=200,
                               call_id="stray", via_branch="z9hG4bKstray"))  # fmt: skip
    assert value(metrics, m.REGISTER_INFLIGHT_TRANSACTIONS) == tracker.inflight_transactions == 2
    assert value(metrics, m.REGISTER_STATE_EVICTIONS, kind="transaction") == 1
    assert value(metrics, m.REGISTER_ORPHAN_RESPONSES) == 1


def test_scanner_sources_by_evidence() -> None:
    metrics = SipwatchMetrics(process_metrics=False)
    pipeline = Pipeline(PipelineSettings(scanner_min_users=3), observers=[metrics])
    ts = 1_790_000_000.0
    batch = [m for n in range(3) for m in _exchange(f"u{n}", "198.51.100.9", ts + n, n)]
    batch += _exchange("admin", "198.51.100.10", ts, 99)
    batch[-2].user_agent = "friendly-scanner"
    pipeline.feed(MessageBatch("hep/1", batch))
    assert value(metrics, m.SCANNER_SOURCES, evidence="usernames") == 1
    assert value(metrics, m.SCANNER_SOURCES, evidence="user_agent") == 1
    # the two names counted before the third gave the sprayer away were withdrawn
    assert value(metrics, m.LABEL_TRACKER_EVICTIONS, dimension="user", reason="scanner") == 2
    assert series(metrics, m.USER_FAILURES) == []


@pytest.mark.parametrize("latency", [0.0001, 0.00025, 0.001, 0.00010001, 32.0, 40.0])
def test_histogram_buckets_match_prometheus_client(latency: float) -> None:
    """Bucket bounds are inclusive (le) and spelled as the library spells them."""
    ours = SipwatchMetrics(process_metrics=False)
    ours.observe_transaction(transaction(started=100.0, finished=100.0 + latency))
    registry = CollectorRegistry()
    theirs = Histogram(
        "sipwatch_register_latency_seconds",
        "x",
        ["source", "side", "result"],
        buckets=m.LATENCY_BUCKETS,
        registry=registry,
    )
    theirs.labels(SRC, "inbound", "failure").observe(100.0 + latency - 100.0)

    def buckets(reg: CollectorRegistry) -> dict[str, float]:
        return {
            s.labels["le"]: s.value
            for f in reg.collect()
            for s in f.samples
            if s.name == m.REGISTER_LATENCY + "_bucket"
        }

    assert buckets(ours.registry) == buckets(registry)
