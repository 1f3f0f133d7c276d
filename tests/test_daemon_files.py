"""`sipwatch run` as operators start it on a VM: file sources, real HTTP, real signals."""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path

from tests.daemon_runner import (
    free_port,
    metric_total,
    popen_run,
    write_config,
)
from tests.daemon_runner import http_get as get
from tests.waiting import wait_for
from tools.synth import Device, Scenario


def test_run_follows_a_rotating_file_and_exits_on_sigterm(tmp_path: Path) -> None:
    log = tmp_path / "drachtio.log"
    log.write_text("")
    port = free_port()
    config = f"""
[sources]
idle_flush_seconds = 0.2
[sources.docker]
enabled = false
[[sources.files]]
path = "{log}"
follow = true
"""
    cfg = write_config(tmp_path / "sipwatch.toml", config, port)
    proc = popen_run(cfg)
    try:
        base = f"http://127.0.0.1:{port}"
        wait_for(lambda: get(base + "/healthz")[0] == 200)
        sc = Scenario(1772366400.0)
        sc.register_ok(Device("1001", "acme.example.com", "203.0.113.1"))
        bad = Device("2002", "acme.example.com", "203.0.113.2")
        for _ in range(3):
            sc.register_rejected(bad, 403, "Forbidden", "Invalid credentials", challenged=True)
        first = "".join(sc.drachtio)
        with open(log, "a") as f:
            f.write(first)
        wait_for(
            lambda: metric_total(get(base + "/metrics")[1], "sipwatch_sip_messages_total") == 16
        )
        # logrotate (create mode): rename, new file, more messages
        log.rename(tmp_path / "drachtio.log.1")
        sc2 = Scenario(1772366500.0)
        sc2.register_rejected(
            Device("3003", "acme.example.com", "203.0.113.3"),
            403,
            "Forbidden",
            "Unknown or invalid realm",
            challenged=False,
        )
        log.write_text("".join(sc2.drachtio))
        wait_for(
            lambda: metric_total(get(base + "/metrics")[1], "sipwatch_sip_messages_total") == 18
        )
        status, body = get(base + "/api/failures")
        assert status == 200
        users = {(f["user"], f["status"]): f["count"] for f in json.loads(body)["failures"]}
        assert users[("2002", 403)] == 3 and users[("3003", 403)] == 1
        assert ("1001", 403) not in users
        status, body = get(base + "/readyz")
        assert status == 200, body
        # SIGHUP: a broken file is refused (the daemon keeps running), a good one is loaded
        good = cfg.read_text()
        cfg.write_text(good + "\n[metrics]\nbogus = 1\n")
        proc.send_signal(signal.SIGHUP)
        time.sleep(1.5)  # reloading reads the file and the rules: well under a second
        # a broken rule file is refused as well (rules are reloaded with the config)
        rules = tmp_path / "rules"
        rules.mkdir()
        (rules / "bad.yaml").write_text("id: Not-A-Valid-Id\ntitle: x\n")
        cfg.write_text(good + f'\n[diagnosis]\nrules_dir = "{rules}"\n')
        proc.send_signal(signal.SIGHUP)
        time.sleep(1.5)
        cfg.write_text(good)
        proc.send_signal(signal.SIGHUP)
        time.sleep(1.5)
        assert get(base + "/healthz")[0] == 200
        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=10)
        assert time.monotonic() - started < 6
        assert proc.returncode == 0
        out = proc.stdout.read() if proc.stdout else ""
        events = [json.loads(line)["event"] for line in out.splitlines() if line.startswith("{")]
        assert "sipwatch stopped" in events
        assert events.count("reload failed; keeping the running configuration") == 2
        assert "configuration reloaded" in events
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
