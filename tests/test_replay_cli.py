"""`sipwatch replay` end to end, as a user runs it (real subprocess, bundled example)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from tests.cli_support import ROOT, modules_loaded_by, run_cli

EXAMPLE = [
    str(ROOT / "examples" / "drachtio-sbc.log"),
    str(ROOT / "examples" / "sbc-sip-sidecar.log"),
]


def sipwatch(*args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess[str]:
    return run_cli(*args, stdin=stdin.decode() if stdin is not None else None)


def test_json_report_of_the_bundled_example() -> None:
    out = sipwatch("replay", "--format", "json", *EXAMPLE)
    assert out.returncode == 0, out.stderr
    rep = json.loads(out.stdout)
    assert rep["sip_messages"] == 62
    assert rep["register_transactions_by_status"] == {
        "200": 3,
        "401": 8,
        "403": 17,
        "500": 1,
        "503": 1,
        "timeout": 1,
    }
    by_user = {(f["user"], f["status"]): f for f in rep["register_failures"]}
    assert by_user[("3003", 403)]["count"] == 4
    assert by_user[("3003", 403)]["x_reason"] == "Invalid credentials"
    assert by_user[("3003", 403)]["challenged"] is True
    assert by_user[("5001", 403)]["source_ip"] == "203.0.113.45"
    assert by_user[("5001", 403)]["x_reason"] is None
    assert by_user[("6006", 500)]["domain"] == "acme.sip.example.com"
    assert [t["user"] for t in rep["register_timeouts"]] == ["8008"]
    # the healthy device and the retransmitting one are not failures
    assert not any(f["user"] in ("1001", "1002") for f in rep["register_failures"])
    assert rep["retransmitted_requests"] == 1
    assert rep["log"]["records"]["api"] == 1  # Client::read_handler traffic not counted as SIP


def test_text_report_lists_failures_and_escapes_control_characters(tmp_path: Path) -> None:
    from tools.synth import Device, Scenario

    sc = Scenario(1772366400.0)
    sc.register_rejected(
        Device("evil\x1b[31m", "acme.example.com", "203.0.113.9"),
        403,
        "Forbidden",
        "Invalid credentials",
        challenged=True,
    )
    log = tmp_path / "d.log"
    log.write_text("".join(sc.drachtio))
    out = sipwatch("replay", str(log))
    assert out.returncode == 0, out.stderr
    assert "\x1b" not in out.stdout
    assert "evil\\x1b[31m@acme.example.com" in out.stdout
    assert "Invalid credentials" in out.stdout


def test_stdin_and_prometheus_format() -> None:
    data = Path(EXAMPLE[0]).read_bytes()
    out = sipwatch("replay", "--format", "prometheus", "-", stdin=data)
    assert out.returncode == 0, out.stderr
    total = sum(
        float(line.rsplit(" ", 1)[1])
        for line in out.stdout.splitlines()
        if line.startswith("sipwatch_sip_messages_total{")
    )
    assert total == 62


def test_missing_file_is_a_clear_error() -> None:
    out = sipwatch("replay", "/nonexistent/drachtio.log")
    assert out.returncode == 3
    assert "cannot read" in out.stderr and "Traceback" not in out.stderr


def test_help_and_version() -> None:
    out = sipwatch("--version")
    assert out.returncode == 0 and out.stdout.startswith("sipwatch ")
    out = sipwatch("replay", "--help")
    assert out.returncode == 0 and "examples:" in out.stdout


def test_a_replay_loads_no_event_loop_follower_or_metrics_library() -> None:
    """A replay's start-up is part of every replay's cost (``bench/bench_replay.py``): the
    daemon's machinery - asyncio (with ssl), the file follower, the metrics library - is
    imported by the commands that use it, not by every command's parser."""
    code = (
        "from sipwatch.cli.main import main\n"
        f"assert main(['replay', '--no-diagnose', '--format', 'json', {EXAMPLE[0]!r}]) == 0"
    )
    heavy = ("asyncio", "ssl", "sipwatch.sources.file", "sipwatch.daemon", "prometheus_client")
    assert modules_loaded_by(code, heavy) == []


def test_a_diagnosing_replay_without_a_database_loads_no_network_client() -> None:
    """Diagnosis from the log alone needs no database, Redis or HTTP client: importing
    them cost every replay 0.2 s and 22 MB of peak memory."""
    code = (
        "from sipwatch.cli.main import main\n"
        f"assert main(['replay', '--format', 'json', {EXAMPLE[0]!r}]) == 0"
    )
    clients = ("aiohttp", "redis", "asyncmy", "prometheus_client")
    assert modules_loaded_by(code, clients) == []
