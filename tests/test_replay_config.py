"""`sipwatch replay --config` honours the same settings as `sipwatch run`.

The one pipeline core reads ``PipelineSettings.from_config`` in both drivers; these tests
drive the replay CLI (a real subprocess) with a config file and show that each setting that
shapes the analysis changes the outcome: ``sip.timer_f_seconds``, ``sources.timezone``,
``sip.max_pending_attempts``, ``diagnosis.scanner_window_seconds`` and
``diagnosis.scanner_distinct_users``.  Each test runs the same log twice, once per value, so
a setting that is silently ignored fails.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from sipwatch.cli.exit_codes import ExitCode
from tests.cli_support import run_cli
from tests.jambonz_db import closed_port
from tools.synth import Device, Scenario, challenge_header

START = 1772366400.0  # 2026-03-01T12:00:00Z


def replay(
    log: Path, config: str | None, tmp_path: Path, *args: str
) -> subprocess.CompletedProcess[str]:
    cmd = ["replay", "--no-diagnose", *args]
    if config is not None:
        path = tmp_path / f"sipwatch-{abs(hash(config))}.toml"
        path.write_text(config)
        cmd += ["--config", str(path)]
    return run_cli(*cmd, str(log))


def report(log: Path, config: str | None, tmp_path: Path) -> dict[str, Any]:
    out = replay(log, config, tmp_path, "--format", "json")
    assert out.returncode == ExitCode.OK, out.stderr
    parsed: dict[str, Any] = json.loads(out.stdout)
    return parsed


def write(tmp_path: Path, sc: Scenario) -> Path:
    log = tmp_path / "drachtio.log"
    log.write_text("".join(sc.drachtio))
    return log


def test_timer_f_seconds_decides_when_an_unanswered_register_times_out(tmp_path: Path) -> None:
    """The 200 comes 10 s after the REGISTER: within the default Timer F (32 s), past 5 s."""
    sc = Scenario(START)
    dev = Device("1001", "acme.example.com", "203.0.113.10")
    req = dev.register()
    sc.recv(dev, req)
    sc.tick(10.0)
    sc.send(dev, dev.response(req, 200, "OK"))
    log = write(tmp_path, sc)

    default = report(log, None, tmp_path)
    assert default["register_transactions_by_status"] == {"200": 1}
    assert default["register_timeouts"] == []

    short = report(log, "[sip]\ntimer_f_seconds = 5\n", tmp_path)
    # the REGISTER timed out at 12:00:05; the late 200 matches nothing any more and, like
    # any response whose request is not (or no longer) held, counts as its own transaction
    assert short["register_transactions_by_status"] == {"200": 1, "timeout": 1}
    timeouts = short["register_timeouts"]
    assert [(t["user"], t["first_seen"]) for t in timeouts] == [
        ("1001", "2026-03-01T12:00:05.001Z")
    ]
    assert timeouts[0]["registered_later"] is True
    assert short["orphan_responses"] == 1


def test_sources_timezone_reads_drachtio_local_time(tmp_path: Path) -> None:
    """drachtio logs local time without an offset; the config says which zone that is."""
    sc = Scenario(START)
    sc.register_ok(Device("1001", "acme.example.com", "203.0.113.10"))
    log = write(tmp_path, sc)

    utc = report(log, None, tmp_path)["log"]["first_ts"]
    berlin = report(log, '[sources]\ntimezone = "Europe/Berlin"\n', tmp_path)["log"]["first_ts"]
    assert utc == "2026-03-01T12:00:00.001Z"
    assert berlin == "2026-03-01T11:00:00.001Z"  # CET is UTC+1 in March


def test_max_pending_attempts_bounds_open_attempts(tmp_path: Path) -> None:
    """150 devices challenged, none comes back: at most 100 attempts are held open."""
    sc = Scenario(START)
    for i in range(150):
        dev = Device(f"{2000 + i}", "acme.example.com", f"203.0.113.{i % 200 + 1}", port=5000 + i)
        req = dev.register()
        sc.recv(dev, req)
        sc.send(dev, dev.response(req, 401, "Unauthorized", [challenge_header(dev.domain)]))
    log = write(tmp_path, sc)

    def evicted_attempts(config: str | None) -> float:
        out = replay(log, config, tmp_path, "--format", "prometheus")
        assert out.returncode == ExitCode.OK, out.stderr
        for family in text_string_to_metric_families(out.stdout):
            if family.name == "sipwatch_register_state_evictions":
                return sum(
                    s.value
                    for s in family.samples
                    if s.name.endswith("_total") and s.labels.get("kind") == "attempt"
                )
        return 0.0

    assert evicted_attempts(None) == 0
    assert evicted_attempts("[sip]\nmax_pending_attempts = 100\n") == 50


def _spray(sc: Scenario, ip: str, users: int, gap: float) -> None:
    """One source IP rejected with ``users`` distinct usernames, ``gap`` seconds apart."""
    for i in range(users):
        sc.tick(gap)
        sc.register_rejected(
            Device(f"{3000 + i}", "acme.example.com", ip, port=5060),
            403,
            "Forbidden",
            None,
            challenged=False,
        )


def test_scanner_window_seconds_is_honoured(tmp_path: Path) -> None:
    """12 usernames from one IP, 10 s apart: at most 7 fall in any 60 s window (not a
    scanner at the default 10 distinct users), all 12 in a 300 s window (a scanner)."""
    sc = Scenario(START)
    _spray(sc, "198.51.100.7", 12, 10.0)
    log = write(tmp_path, sc)

    default = report(log, None, tmp_path)
    assert default["scanners"] == []
    assert len(default["register_failures"]) == 12  # each one a device failure

    wide = report(log, "[diagnosis]\nscanner_window_seconds = 300\n", tmp_path)
    assert [(s["source_ip"], s["usernames"], s["failures"]) for s in wide["scanners"]] == [
        ("198.51.100.7", 12, 12)
    ]
    folded = wide["register_failures"]
    assert [(f["user"], f["count"], f["scanner"]) for f in folded] == [("*", 12, True)]


def test_scanner_distinct_users_threshold(tmp_path: Path) -> None:
    sc = Scenario(START)
    _spray(sc, "198.51.100.8", 6, 0.5)
    log = write(tmp_path, sc)
    assert report(log, None, tmp_path)["scanners"] == []
    low = report(log, "[diagnosis]\nscanner_distinct_users = 5\n", tmp_path)
    assert [(s["source_ip"], s["usernames"]) for s in low["scanners"]] == [("198.51.100.8", 6)]


def test_users_that_registered_from_the_ip_weigh_against_scanner(tmp_path: Path) -> None:
    """An office behind one NAT address: 12 phones registered, then all fail together (a
    provisioning mistake).  Not an attack; 12 never-seen usernames from an IP are."""
    office, sprayer = "198.51.100.20", "198.51.100.21"
    sc = Scenario(START)
    phones = [Device(f"{4000 + i}", "acme.example.com", office, port=6000 + i) for i in range(12)]
    for phone in phones:
        sc.register_ok(phone)
    sc.tick(5.0)
    for phone in phones:
        sc.register_rejected(phone, 403, "Forbidden", None, challenged=False)
    _spray(sc, sprayer, 12, 0.1)
    log = write(tmp_path, sc)

    rep = report(log, None, tmp_path)
    assert [s["source_ip"] for s in rep["scanners"]] == [sprayer]
    office_failures = [f for f in rep["register_failures"] if f["source_ip"] == office]
    assert sorted(f["user"] for f in office_failures) == [p.user for p in phones]
    assert not any(f.get("scanner") for f in office_failures)


def test_replay_with_an_unreachable_database_says_so_and_exits_unavailable(
    tmp_path: Path,
) -> None:
    """A closed loopback port stands for an unreachable jambonz database."""
    port = closed_port()
    sc = Scenario(START)
    sc.register_rejected(
        Device("1001", "acme.example.com", "203.0.113.10"), 403, "Forbidden", None, challenged=True
    )
    log = write(tmp_path, sc)
    out = run_cli(
        "replay",
        "--format",
        "json",
        "--db-url",
        f"mysql://sipwatch:hunter2@127.0.0.1:{port}/jambones",
        str(log),
    )
    assert out.returncode == ExitCode.UNAVAILABLE, out.stderr
    assert f"127.0.0.1:{port}" in out.stderr
    assert "hunter2" not in out.stderr + out.stdout  # the password in the URL is never printed
    rep = json.loads(out.stdout)  # the log-only report is still printed
    assert rep["register_transactions_by_status"] == {"401": 1, "403": 1}
