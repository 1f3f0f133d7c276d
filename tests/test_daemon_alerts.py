"""`sipwatch run` end to end: fake Docker Engine in, alerts out to a real local HTTP receiver
(Slack-style JSON through apprise) and a real SMTP server (aiosmtpd).  No database: the
log-only rules name the cause."""

from __future__ import annotations

import json
from pathlib import Path

from tests.alert_receivers import HttpReceiver, SmtpReceiver
from tests.daemon_runner import docker_daemon, write_sip
from tests.fake_docker import FakeDockerEngine
from tools.synth import Device, Scenario

T0 = 1772366400.0


async def test_alerts_reach_slack_and_email_grouped_escaped_and_resolved(
    docker_engine: FakeDockerEngine,
    tmp_path: Path,
) -> None:
    sbc = docker_engine.add_container("drachtio-sbc", image="drachtio/drachtio-server:0.9.2")
    docker_engine.add_container("sbc-sip-sidecar", image="jambonz/sbc-sip-sidecar:0.9.6")
    async with HttpReceiver() as slack, SmtpReceiver() as smtp:
        extra = f"""
[alerts]
group_window_seconds = 0.5
throttle_seconds = 600
[[alerts.targets]]
name = "oncall-slack"
url = "{slack.url("/slack")}"
kind = "registration"
[[alerts.targets]]
name = "security-mail"
url = "{smtp.url()}"
kind = "security"
"""
        async with docker_daemon(tmp_path, docker_engine, extra) as d:
            sc = Scenario(T0)
            phone = Device("5001", "198.51.100.10", "203.0.113.45", user_agent="Grandstream HT801")
            for _ in range(3):  # a phone configured with the SBC's IP as domain
                sc.register_rejected(phone, 403, "Forbidden", None, challenged=False)
            # a scanner spraying 40 usernames; one of them tries to ping the channel
            users = [f"{100 + i}" for i in range(39)] + ["<!channel> *x* @here"]
            for i, user in enumerate(users):
                scan = Device(
                    user, "198.51.100.10", "185.243.5.17", 5070 + i, user_agent="friendly-scanner"
                )
                sc.register_rejected(scan, 403, "Forbidden", None, challenged=False)
            write_sip(docker_engine, sbc, sc)

            await slack.wait_for(1, timeout=30)
            await smtp.wait_for(1, timeout=30)
            slack_text = json.dumps([r.payload for r in slack.delivered])
            assert "realm_is_ip" in slack_text and "5001" in slack_text
            assert "scanner" not in slack_text  # routed to the security target only
            mails = [
                m.get_payload() if not m.is_multipart() else m.as_string() for m in smtp.messages
            ]
            mail_text = "\n".join(str(m) for m in mails)
            assert "185.243.5.17" in mail_text
            assert len(smtp.messages) == 1  # 40 scanner failures grouped into one message
            assert "<!channel>" not in mail_text and "<!channel>" not in slack_text
            assert "@here" not in mail_text

            # the phone is fixed by changing its domain: that is another device identity, so
            # 5001@198.51.100.10 (which never registered) is not "resolved"
            phone.domain = "acme.sip.example.com"
            phone.request_host = None
            sc.register_ok(phone)
            # another phone fails, then registers with the same identity: that one ends
            other = Device("6001", "acme.sip.example.com", "203.0.113.46")
            sc.register_rejected(other, 403, "Forbidden", "Invalid credentials", challenged=True)
            write_sip(docker_engine, sbc, sc)
            await slack.wait_for(2, timeout=30)
            sc.register_ok(other)
            write_sip(docker_engine, sbc, sc)
            await slack.wait_for(3, timeout=30)
            await d.wait_metric(4, "sipwatch_alerts_total", result="sent")
            titles = [r.payload["title"] for r in slack.delivered]
            assert titles[1] == "[WARNING] credentials_rejected: 6001@acme.sip.example.com"
            assert titles[2] == "[RESOLVED] 6001@acme.sip.example.com registers again"
            assert not any("RESOLVED" in t and "5001" in t for t in titles)


async def test_alert_endpoint_failing_then_hanging_does_not_stop_counting(
    docker_engine: FakeDockerEngine,
    tmp_path: Path,
) -> None:
    sbc = docker_engine.add_container("drachtio-sbc", image="drachtio/drachtio-server:0.9.2")
    docker_engine.add_container("sbc-sip-sidecar", image="jambonz/sbc-sip-sidecar:0.9.6")
    async with HttpReceiver() as slack:
        slack.program(["500", "hang"])  # first delivery fails, the retry hangs, then it works
        extra = f"""
[alerts]
group_window_seconds = 0.2
timeout_seconds = 1
retry_max = 4
[[alerts.targets]]
name = "oncall-slack"
url = "{slack.url("/slack")}"
"""
        async with docker_daemon(tmp_path, docker_engine, extra) as d:
            sc = Scenario(T0)
            phone = Device("5001", "198.51.100.10", "203.0.113.45")
            sc.register_rejected(phone, 403, "Forbidden", None, challenged=False)
            expected = write_sip(docker_engine, sbc, sc)
            await slack.wait_for(2, timeout=20, delivered=False)  # the 500, then the hang
            # while the endpoint misbehaves, parsing and counting go on
            for i in range(20):
                sc.register_ok(Device(str(2000 + i), "acme.sip.example.com", "203.0.113.9"))
            expected += write_sip(docker_engine, sbc, sc)
            await d.wait_metric(expected, "sipwatch_sip_messages_total")
            await slack.wait_for(1, timeout=30)  # delivered after the retries
            assert "realm_is_ip" in json.dumps(slack.delivered[0].payload)
            assert await d.metric("sipwatch_alerts_total", result="retried") >= 2
            await d.wait_metric(1, "sipwatch_alerts_total", result="sent")
