"""Replay and the daemon run one pipeline core: over the same logs they must agree exactly.

The drivers differ in everything around the core (files read in one go vs sources followed
from asyncio tasks, end of input vs a wall clock), so this test feeds the bundled example
and a scanner-heavy synthetic log through both and requires identical failure records and
identical metric samples - the guarantee fail2ban gives by running the daemon's own Filter in
``fail2ban-regex``.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from sipwatch.config import parse_config
from sipwatch.daemon.driver import Daemon
from sipwatch.metrics import SipwatchMetrics
from sipwatch.pipeline.core import PipelineSettings
from sipwatch.replay.driver import replay_paths
from sipwatch.sources.file import FileSource
from tools.synth import Device, Scenario

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = [ROOT / "examples" / "drachtio-sbc.log", ROOT / "examples" / "sbc-sip-sidecar.log"]

# Families only a daemon has: they describe the process and its live sources, not the log.
DAEMON_ONLY = (
    "sipwatch_source_up",
    "sipwatch_source_reconnects_total",
    "sipwatch_queue_",
    "sipwatch_register_inflight_",
    "process_",
    "python_",
)

CONFIG = """
[metrics]
listen = "127.0.0.1:{port}"
[sources.docker]
enabled = false
[diagnosis]
enabled = false
"""


def samples(registry: CollectorRegistry) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in registry.collect():
        for s in family.samples:
            if s.name.startswith(DAEMON_ONLY):
                continue
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


async def run_daemon_over(paths: list[Path], port: int) -> Daemon:
    config = parse_config(CONFIG.format(port=port))
    sources = [(str(p), FileSource(p, follow=False)) for p in paths]
    daemon = Daemon(config, sources=sources)  # type: ignore[arg-type]
    task = asyncio.create_task(daemon.run())
    async with asyncio.timeout(30):
        await daemon.input_done.wait()
    daemon.stop_event.set()
    assert await task == 0
    return daemon


def scanner_heavy_log(tmp_path: Path) -> Path:
    """Four devices failing for real, and a scanner spraying 300 usernames from one IP."""
    sc = Scenario(start=1_790_000_000.0)
    devices = [
        Device(user=f"10{i}", domain="acme.sip.example.com", ip=f"203.0.113.{10 + i}")
        for i in range(4)
    ]
    for round_ in range(3):
        for dev in devices:
            sc.register_rejected(dev, 403, "Forbidden", "Invalid credentials", challenged=True)
        if round_ == 1:
            for n in range(300):  # no scanner User-Agent: recognised by its usernames alone
                bot = Device(
                    user=f"{n:04d}", domain="acme.sip.example.com", ip="185.243.5.17", port=5070
                )
                sc.register_rejected(bot, 403, "Forbidden", "Invalid credentials", challenged=True)
        sc.tick(20.0)
    path = tmp_path / "drachtio.log"
    path.write_text("".join(sc.drachtio), encoding="utf-8")
    return path


@pytest.mark.parametrize("logs", ["examples", "scanner"])
async def test_replay_and_daemon_agree(logs: str, tmp_path: Path, unused_tcp_port: int) -> None:
    paths = EXAMPLES if logs == "examples" else [scanner_heavy_log(tmp_path)]
    replay_metrics = SipwatchMetrics(process_metrics=False)
    config = parse_config(CONFIG.format(port=unused_tcp_port))
    result = replay_paths(
        [str(p) for p in paths],
        settings=PipelineSettings.from_config(config),
        metrics=replay_metrics,
    )
    daemon = await run_daemon_over(paths, unused_tcp_port)

    replayed = [r.to_dict() for r in result.failure_records()]
    live = [r.to_dict() for r in daemon.pipeline.failures.records()]
    assert replayed == live
    assert replayed  # the logs do fail: an empty comparison would prove nothing

    replay_samples = samples(replay_metrics.registry)
    daemon_samples = samples(daemon.metrics.registry)
    assert replay_samples == daemon_samples
    messages = sum(v for (n, _), v in replay_samples.items() if n == "sipwatch_sip_messages_total")
    assert messages == result.sip_messages > 0


async def test_a_username_spray_folds_into_one_record_per_source(tmp_path: Path) -> None:
    """The 300 sprayed usernames become one scanner record; the 4 devices keep their own."""
    metrics = SipwatchMetrics(process_metrics=False)
    result = replay_paths([str(scanner_heavy_log(tmp_path))], metrics=metrics)
    records = result.failure_records()
    scanner = [r for r in records if r.scanner]
    devices = [r for r in records if not r.scanner]
    assert [(r.source_ip, r.count) for r in scanner] == [("185.243.5.17", 300)]
    assert 285 <= scanner[0].distinct_users <= 315  # an estimate beyond 64 names
    assert sorted((r.user, r.count) for r in devices) == [(f"10{i}", 3) for i in range(4)]
    users = {
        s.labels["user"]
        for f in metrics.registry.collect()
        for s in f.samples
        if s.name == "sipwatch_register_user_failures_total"
    }
    assert users == {f"10{i}@acme.sip.example.com" for i in range(4)}
