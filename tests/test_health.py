"""``/readyz`` and ``sipwatch_source_up`` tell the truth: a missing file, a path rotated away
and never recreated, and a busy SIP stream gone quiet are all reported down, with a reason."""

from __future__ import annotations

import json
from pathlib import Path

from sipwatch.daemon.health import SipActivity, SourceState, source_states
from sipwatch.model import Direction, SipMessage
from sipwatch.sources.file import ROTATION_GRACE, FileSource
from tests.daemon_runner import http_get, popen_run, write_config
from tests.waiting import wait_for
from tools.synth import Device, Scenario


def message(source: str) -> SipMessage:
    return SipMessage(
        0.0, source, Direction.RECV, "udp", "203.0.113.1", 5060, 400, True, "OPTIONS", 0, "",
        "sip:x", "c", 1, "b", "", "", "", "", "", None, "", "", "", False, "", "",
    )  # fmt: skip


def test_a_busy_stream_that_goes_quiet_is_silent_and_a_quiet_one_is_not() -> None:
    now = [10_000.0]
    activity = SipActivity(window=600.0, clock=lambda: now[0])
    for _ in range(600):  # drachtio: 60 messages a minute for 10 minutes
        activity.observe_message(message("drachtio"))
        now[0] += 1.0
    for _ in range(3):  # a registrar-like stream: rare lines
        activity.observe_message(message("registrar"))
        now[0] += 200.0
    verdict = activity.silent(silence_after=300.0, busy_per_minute=6.0)
    assert list(verdict) == ["drachtio"]
    assert "no SIP for" in verdict["drachtio"] and "60 messages/min" in verdict["drachtio"]
    assert activity.silent(silence_after=10_000.0, busy_per_minute=6.0) == {}


def test_states_combine_reports_health_and_silence(tmp_path: Path) -> None:
    missing = FileSource(tmp_path / "nope.log", follow=True)
    missing.last_error = "FileNotFoundError: No such file or directory"
    states = source_states(
        [("f", missing)],
        {"f": True, "drachtio-sbc": True, "registrar": False},
        {"drachtio-sbc/drachtio": "no SIP for 400 s"},
    )
    assert states["f"] == SourceState(False, "waiting for the file (FileNotFoundError: No "
                                             "such file or directory)")  # fmt: skip
    assert states["drachtio-sbc"] == SourceState(False, "no SIP for 400 s")
    assert states["registrar"] == SourceState(False)


def test_a_path_rotated_away_and_not_recreated_goes_down_after_the_grace(
    tmp_path: Path,
) -> None:
    path = tmp_path / "drachtio.log"
    path.write_text("x\n")
    source = FileSource(path, follow=True)
    source.following = True  # as after the first poll opened it
    now = [0.0]
    assert source.health(clock=lambda: now[0]) == (True, "")
    path.rename(tmp_path / "drachtio.log.1")  # rotated away; the old descriptor would still read
    assert source.health(clock=lambda: now[0]) == (True, "")  # a rotation takes a moment
    now[0] = ROTATION_GRACE + 1
    up, reason = source.health(clock=lambda: now[0])
    assert not up and "gone for 31 s" in reason
    path.write_text("")  # recreated
    assert source.health(clock=lambda: now[0]) == (True, "")


def get(url: str) -> tuple[int, dict[str, object]]:
    status, body = http_get(url)
    return status, json.loads(body)


def metric(url: str, name: str) -> list[str]:
    return [line for line in http_get(url)[1].splitlines() if line.startswith(name)]


def test_the_daemon_reports_a_missing_file_and_a_silent_sbc(
    tmp_path: Path, unused_tcp_port: int
) -> None:
    log = tmp_path / "drachtio.log"  # does not exist yet
    config = f"""
[sources]
idle_flush_seconds = 0.2
silence_seconds = 2
busy_messages_per_minute = 1
[sources.docker]
enabled = false
[[sources.files]]
path = "{log}"
"""
    proc = popen_run(write_config(tmp_path / "sipwatch.toml", config, unused_tcp_port))
    base = f"http://127.0.0.1:{unused_tcp_port}"
    try:
        _status, body = wait_for(lambda: (s := get(base + "/readyz"))[0] == 503 and s)
        assert "waiting for the file" in str(body["down"])
        up = f'sipwatch_source_up{{source="{log}"}}'
        assert wait_for(lambda: f"{up} 0.0" in metric(base + "/metrics", up))

        sc = Scenario(1772366400.0)
        for i in range(20):
            sc.register_ok(Device(f"10{i}", "acme.example.com", f"203.0.113.{i + 1}"))
        log.write_text("".join(sc.drachtio))
        wait_for(lambda: get(base + "/readyz")[0] == 200)
        assert f"{up} 1.0" in metric(base + "/metrics", up)

        # nothing more: the busy stream goes quiet, which a busy SBC's log never does
        _status, body = wait_for(lambda: (s := get(base + "/readyz"))[0] == 503 and s, 15)
        assert "no SIP for" in json.dumps(body["down"])
        assert f"{up} 0.0" in metric(base + "/metrics", up)
    finally:
        proc.terminate()
        out, _err = proc.communicate(timeout=10)
    events = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    down = [e for e in events if e["event"] == "log source down"]
    assert down and all(e["source"] == str(log) for e in down)
