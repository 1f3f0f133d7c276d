"""End-to-end delivery through apprise to real local endpoints: a JSON webhook, an SMTP
server and the native Slack webhook URL (via a CONNECT proxy to a local TLS server)."""

from __future__ import annotations

import asyncio
import logging
import re
from pathlib import Path

import pytest
import structlog
from prometheus_client import CollectorRegistry

from sipwatch.metrics import SipwatchMetrics
from tests.alert_receivers import (
    HttpReceiver,
    RecordingMetrics,
    SlackEndpoint,
    SmtpReceiver,
    config,
    html_part,
    registration,
    running,
    target,
)

EVIL = "<!channel> *bold* <http://evil.example|click> @here"
SLACK_TOKENS = "T1JJ3T3L2/A1BRTD4JD/TIiajkdnlazkcOXrIdevi7"


async def test_json_webhook_receives_the_alert(http: HttpReceiver) -> None:
    metrics = RecordingMetrics()
    async with (
        asyncio.timeout(20),
        running(config(target("ops", http.url())), metrics=metrics) as m,
    ):
        m.submit(registration())
        await http.wait_for(1)
    [got] = http.received
    assert got.path == "/hook"
    assert got.headers["User-Agent"] == "Apprise"
    assert got.payload["title"] == "[CRITICAL] client_missing: alice@acme.example.com"
    assert got.payload["type"] == "failure"
    message = got.payload["message"]
    assert "Diagnosis: alice@acme.example.com is not a client in jambonz" in message
    assert "Create the SIP client" in message and "clients row: absent" in message
    assert metrics.calls == [("ops", "sent")]
    assert m.counts[("ops", "sent")] == 1


async def test_text_target_gets_markdown_inert_text(http: HttpReceiver) -> None:
    async with asyncio.timeout(20), running(config(target("ops", http.url()))) as m:
        m.submit(registration(user=EVIL, summary=f"{EVIL} failed", fix_command="SELECT * FROM x"))
        await http.wait_for(1)
    payload = http.received[0].payload
    for out in (payload["title"], payload["message"]):
        for bad in ("<!channel>", "<http", "@here", "*bold*", "http://", "|click"):
            assert bad not in out, bad
    assert "```\nSELECT * FROM x\n```" in payload["message"]  # the command stays copyable


async def test_mattermost_gets_the_title_in_the_body_and_no_mentions(
    http: HttpReceiver,
) -> None:
    url = f"mmost://127.0.0.1:{http.port}/3ccdd113474722377935511fc85d3dd4"
    async with asyncio.timeout(20), running(config(target("mm", url))) as m:
        m.submit(registration(user=f"@all @channel {EVIL}"))
        await http.wait_for(1)
    got = http.received[0]
    assert got.path == "/hooks/3ccdd113474722377935511fc85d3dd4"
    text = got.payload["text"]
    # Mattermost has no title field: the title leads the body
    assert text.startswith("[CRITICAL] client_missing: ")
    assert "Diagnosis:" in text
    for bad in ("@all", "@channel", "@here", "<!channel>", "*bold*", "http://"):
        assert bad not in text, bad


async def test_markdown_json_target_gets_markdown(http: HttpReceiver) -> None:
    url = http.url(query="format=markdown")
    async with asyncio.timeout(20), running(config(target("md", url))) as m:
        m.submit(registration(user=EVIL))
        await http.wait_for(1)
    message = http.received[0].payload["message"]
    assert "**Diagnosis:**" in message and "**User:** `" in message
    assert "<!channel>" not in message and "<http" not in message and "@here" not in message
    assert "*bold*" not in message.split("**User:**")[0]  # prose: formatting neutralised


async def test_email_via_mailto_to_a_local_smtp_server(smtp: SmtpReceiver) -> None:
    async with asyncio.timeout(20), running(config(target("mail", smtp.url()))) as m:
        m.submit(registration(user=EVIL, summary=f"{EVIL} failed"))
        await smtp.wait_for(1)
    [msg] = smtp.messages
    assert smtp.envelopes[0] == ("sipwatch@example.com", ["oncall@example.com"])
    subject = str(msg["Subject"])
    assert subject.startswith("[CRITICAL] client_missing: ")
    assert "<!channel>" not in subject and "@here" not in subject
    body = html_part(msg)
    assert "<b>Diagnosis:</b>" in body and "<code>" in body
    assert "<!channel>" not in body and "<http" not in body and "@here" not in body
    assert "evil[.]example" in body  # shown, defanged
    plain = msg.get_body(preferencelist=("plain",))
    assert plain is not None and "Create the SIP client" in str(plain.get_content())


@pytest.mark.parametrize(
    "url",
    [f"https://hooks.slack.com/services/{SLACK_TOKENS}", f"slack://{SLACK_TOKENS}"],
    ids=["native-webhook", "slack-scheme"],
)
async def test_native_slack_webhook_payload_is_neutralised(tmp_path: Path, url: str) -> None:
    async with asyncio.timeout(30), SlackEndpoint(tmp_path) as slack:
        async with running(config(target("slack", url))) as m:
            m.submit(
                registration(
                    user=EVIL,
                    summary=f"REGISTER from {EVIL} was rejected",
                    user_agent=f"Zoiper {EVIL}",
                    fix_steps=(f"Remove {EVIL} from the device",),
                )
            )
            await slack.receiver.wait_for(1)
        assert slack.connects[0].startswith(b"CONNECT hooks.slack.com:443")
        [got] = slack.receiver.received
        assert got.path == f"/services/{SLACK_TOKENS}"
        payload = got.payload
        text = "".join(a.get("text", "") for a in payload.get("attachments", []))
        everything = repr(payload)
        assert "*Diagnosis:*" in text  # our bold, converted to Slack mrkdwn by apprise
        assert "Remove" in text and "Zoiper" in text
        # Slack control sequences from the attacker: mentions and links, anywhere
        for bad in ("<!channel", "<!here", "<http", "|click>", "@here", "@channel"):
            assert bad not in everything, bad
        # formatting: Slack does not format inside code spans/blocks, everywhere else the
        # attacker's asterisks must be gone
        prose = re.sub(r"```.*?```|`[^`]*`", "", text, flags=re.DOTALL)
        assert "*bold*" not in prose
        assert "bold" in prose  # the summary and the fix step are prose
        assert "`" + "\u2039!channel\u203a *bold*" in text  # the username, as a code span


async def test_metrics_reach_the_prometheus_counter(http: HttpReceiver) -> None:
    metrics = SipwatchMetrics(CollectorRegistry(), process_metrics=False)
    http.program(["500"])
    cfg = config(target("ops", http.url()), retry_max=0)
    async with asyncio.timeout(20), running(cfg, metrics=metrics) as m:
        m.submit(registration())  # 500, no retry: failed, kept, sent when the target answers
        await http.wait_for(1, delivered=False)
        m.submit(registration(user="bob"))
        await http.wait_for(2)
        m.submit(registration(user="bob"))  # throttled
    sample = metrics.registry.get_sample_value
    assert sample("sipwatch_alerts_total", {"target": "ops", "result": "sent"}) == 2
    assert sample("sipwatch_alerts_total", {"target": "ops", "result": "failed"}) == 1
    assert sample("sipwatch_alerts_total", {"target": "ops", "result": "throttled"}) == 1
    assert sample("sipwatch_alerts_total", {"target": "ops", "result": "dropped"}) is None


async def test_target_url_never_appears_in_logs(
    http: HttpReceiver, caplog: pytest.LogCaptureFixture
) -> None:
    secret = "S3CRETTOKENVALUE"
    url = http.url(path=f"/hook/{secret}", query=f"+X-Api-Key={secret}")
    http.program(["500", "500", "500"])
    caplog.set_level(logging.INFO)
    with structlog.testing.capture_logs() as events:
        async with asyncio.timeout(20), running(config(target("ops", url), retry_max=2)) as m:
            m.submit(registration())
            await http.wait_for(3, delivered=False)
            async with asyncio.timeout(5):
                while m.counts[("ops", "failed")] < 1:
                    await asyncio.sleep(0.02)
    assert http.received[0].headers["X-Api-Key"] == secret  # the URL was really used
    assert any(e["event"] == "alert delivery failed" for e in events)
    assert all(secret not in repr(e) for e in events)
    assert secret not in caplog.text
    assert secret not in repr(m.lanes[0].config)
