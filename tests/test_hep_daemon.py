"""End to end: `sipwatch run` with a HEP listener gets a scenario's packets over real UDP
and reports what `sipwatch replay` reports for the same scenario's drachtio log: the same
counts and statuses (/metrics, /api/failures) and the same causes; a forward target gets
every packet byte for byte."""

from __future__ import annotations

import asyncio
import json
import signal
import socket
import subprocess
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tests.cli_support import run_cli
from tests.daemon_runner import FileDaemon, free_port, popen_run, write_config
from tests.daemon_runner import http_get as get
from tests.hep_scenario import mixed_scenario
from tests.waiting import until, wait_for

# Families compared between the replay's exposition and the daemon's, summed over the
# source label (a log file there, hep/101 here).  Float sums (_sum) are left out.
COMPARED = (
    "sipwatch_sip_messages_total",
    "sipwatch_register_transactions_total",
    "sipwatch_register_attempts_total",
    "sipwatch_register_retransmissions_total",
    "sipwatch_register_latency_seconds_bucket",
    "sipwatch_register_latency_seconds_count",
    "sipwatch_register_attempt_duration_seconds_bucket",
    "sipwatch_register_attempt_duration_seconds_count",
    "sipwatch_register_scanner_attempts_total",
    "sipwatch_register_user_failures_total",
    "sipwatch_register_ip_failures_total",
)


def samples(exposition: str) -> Counter[tuple[str, tuple[tuple[str, str], ...]]]:
    """The compared samples, their ``source`` label dropped and values summed."""
    out: Counter[tuple[str, tuple[tuple[str, str], ...]]] = Counter()
    for line in exposition.splitlines():
        if line.startswith("#") or not line:
            continue
        series, value = line.rsplit(" ", 1)
        name, _, labels = series.partition("{")
        if name not in COMPARED:
            continue
        pairs = []
        for item in labels.rstrip("}").split('",'):
            if item:
                key, _, val = item.partition("=")
                if key != "source":
                    pairs.append((key, val.strip('"')))
        out[(name, tuple(sorted(pairs)))] += float(value)
    return out


def sipwatch(*args: str) -> str:
    return run_cli(*args, check=True).stdout


def iso_ms(ts: float) -> str:
    """The replay report's time format."""
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def failure_key(f: dict[str, Any]) -> tuple[Any, ...]:
    return (f["user"], f["domain"], f["source_ip"], f["status"])


def events(log_file: Path) -> list[dict[str, Any]]:
    out = []
    for line in log_file.read_text().splitlines():
        if line.startswith("{"):
            out.append(json.loads(line))
    return out


def test_run_with_hep_reports_what_replay_of_the_log_reports(tmp_path: Path) -> None:
    sc = mixed_scenario(start=float(int(time.time()) - 7200))  # capture times in the past
    packets = sc.packets()
    log = tmp_path / "drachtio.log"
    log.write_text(sc.log_text)
    expected_metrics = samples(sipwatch("replay", "--format", "prometheus", str(log)))
    report = json.loads(sipwatch("replay", "--format", "json", str(log)))
    expected_failures = (
        report["register_failures"]
        + report["register_timeouts"]
        + report["register_other_failures"]
    )
    expected_causes = {
        failure_key(f): (f["causes"][0]["id"] if f["causes"] else None) for f in expected_failures
    }
    # 7 devices and the scanner (its 8 usernames fold into one record per source IP)
    assert len(expected_failures) == 8 and expected_metrics  # the scenario is not trivial

    homer = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    homer.bind(("127.0.0.1", 0))
    homer.settimeout(5)
    hep_port = free_port(socket.SOCK_DGRAM)
    http_port = free_port()
    config = f"""
[sources.docker]
enabled = false
[sources.hep]
listen = "127.0.0.1:{hep_port}"
forward = ["udp://127.0.0.1:{homer.getsockname()[1]}"]
"""
    cfg = write_config(tmp_path / "sipwatch.toml", config, http_port)
    out = tmp_path / "sipwatch.out"
    with out.open("w") as stdout:
        proc = popen_run(cfg, stdout=stdout, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{http_port}"
    try:
        wait_for(lambda: any(e["event"] == "HEP source listening" for e in events(out)))
        status, body = get(base + "/readyz")
        assert status == 200 and json.loads(body)["sources"] == {"hep": True}, body
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as drachtio:
            for packet in packets:
                drachtio.sendto(packet, ("127.0.0.1", hep_port))

        # Homer gets every packet, byte for byte, in order
        assert [homer.recv(65535) for _ in packets] == packets

        # the same counts and statuses as the replay of the log
        def exposition_matches() -> bool:
            return samples(get(base + "/metrics")[1]) == expected_metrics

        wait_for(exposition_matches)
        exposition = get(base + "/metrics")[1]
        assert f'sipwatch_hep_packets_total{{agent="101"}} {float(len(packets))}' in exposition
        assert (
            'sipwatch_sip_messages_total{direction="recv",method="REGISTER",source="hep/101"'
            in exposition
        )

        def diagnosed() -> dict[tuple[Any, ...], Any]:
            got = {
                (e["user"], e["domain"], e["source_ip"], e["status"]): e["cause"]
                for e in events(out)
                if e["event"] == "registration failure diagnosed"
            }
            return got if set(got) == set(expected_causes) else {}

        # the same causes, failure by failure
        assert wait_for(diagnosed) == expected_causes

        status, body = get(base + "/api/failures?limit=1000")
        assert status == 200
        failures = json.loads(body)["failures"]
        got = sorted(
            (
                f["side"],
                f["user"],
                f["domain"],
                f["source_ip"],
                f["status"],
                f["x_reason"] or None,
                f["count"],
                f["challenged"],
                f["user_agent"],
                iso_ms(f["first_seen"]),
                iso_ms(f["last_seen"]),
            )
            for f in failures
        )
        want = sorted(
            (
                f["side"],
                f["user"],
                f["domain"],
                f["source_ip"],
                f["status"],
                f["x_reason"],
                f["count"],
                f["challenged"],
                f["user_agent"],
                f["first_seen"],
                f["last_seen"],
            )
            for f in expected_failures
        )
        assert got == want

        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
    finally:
        homer.close()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    names = [e["event"] for e in events(out)]
    assert "HEP capture agent seen" in names and "sipwatch stopped" in names
    learned = [e for e in events(out) if e["event"] == "HEP: learned an SBC address"]
    assert [e["address"] for e in learned] == ["10.0.0.5"]


async def test_logs_and_hep_of_one_node_count_each_message_once(tmp_path: Path) -> None:
    """The same node's drachtio log is followed and its HEP feed received: HEP is the one
    source of SIP truth (the default), said once at start, and nothing is counted twice."""
    sc = mixed_scenario(start=float(int(time.time()) - 7200))
    packets = sc.packets()
    (tmp_path / "replay.log").write_text(sc.log_text)
    expected = samples(sipwatch("replay", "--format", "prometheus", str(tmp_path / "replay.log")))
    hep_port = free_port(socket.SOCK_DGRAM)
    daemon = FileDaemon(tmp_path, f'[sources.hep]\nlisten = "127.0.0.1:{hep_port}"\n')
    async with daemon as d:
        [truth] = d.events("one source of SIP truth")
        assert truth["sip_messages_from"] == "HEP capture"
        assert truth["other_sources_give"] == "registrar and drachtio service lines"
        # the HTTP server answers before the sources start: a datagram sent to a port that is
        # not bound yet is lost
        await until(lambda: d.events("HEP source listening"))
        daemon.append(sc.log_text)  # the log first: its SIP dumps must not count
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as drachtio:
            for packet in packets:
                drachtio.sendto(packet, ("127.0.0.1", hep_port))
        total = sum(v for (name, _), v in expected.items() if name == "sipwatch_sip_messages_total")
        await d.wait_metric(total, "sipwatch_sip_messages_total")
        await d.wait_metric(lambda v: v > 0, "sipwatch_log_lines_total", source=str(d.drachtio))
        await asyncio.sleep(1.0)  # the file source has read everything; nothing more comes
        _, body = await d.get("/metrics")
        assert samples(body) == expected
        assert f'source="{d.drachtio}"' not in "\n".join(
            line for line in body.splitlines() if line.startswith("sipwatch_sip_messages_total")
        )
