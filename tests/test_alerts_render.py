"""Rendering notices per target format (sipwatch.alerts.render)."""

from __future__ import annotations

import html.parser

from sipwatch.alerts.model import AlertInput, Notice, Offender, Recovery
from sipwatch.alerts.render import render

EVIL = "<!channel> *bold* <http://evil.example|click> @here"
T0 = 1_790_000_000.0


def _alert(**kw: object) -> AlertInput:
    base: dict[str, object] = {
        "kind": "registration",
        "severity": "critical",
        "cause_id": "client_missing",
        "summary": "alice@acme.example.com has no row in clients, so the registrar answers 403",
        "user": "alice",
        "domain": "acme.example.com",
        "source_ip": "203.0.113.7",
        "status": 403,
        "x_reason": "Unknown client",
        "count": 4,
        "first_seen": T0,
        "last_seen": T0 + 120,
        "evidence": {"clients row": "absent", "redis user:alice@acme.example.com": "absent"},
        "fix_steps": ("Create the SIP client in the jambonz portal.", "Re-provision the phone."),
        "fix_command": "mysql jambonz -e \"SELECT * FROM clients WHERE username='alice'\"",
        "user_agent": "Yealink SIP-T46S 66.86.0.15",
    }
    base.update(kw)
    return AlertInput(**base)  # type: ignore[arg-type]


def _single(alert: AlertInput, **kw: object) -> Notice:
    base: dict[str, object] = {
        "notice": "alert",
        "severity": alert.severity,
        "kind": alert.kind,
        "cause_id": alert.cause_id,
        "sample": alert,
        "failures": alert.count,
        "first_seen": alert.first_seen,
        "last_seen": alert.last_seen,
    }
    base.update(kw)
    return Notice(**base)  # type: ignore[arg-type]


class _TagCollector(html.parser.HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: set[str] = set()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.add(tag)


def test_single_alert_has_diagnosis_evidence_and_fix_in_every_format() -> None:
    notice = _single(_alert())
    for fmt in ("text", "markdown", "html"):
        r = render(notice, fmt)
        assert r.title == "[CRITICAL] client_missing: alice@acme.example.com"
        assert r.notify_type == "failure"
        for needle in ("no row in clients", "Create the SIP client", "clients row", "403"):
            assert needle in r.body, (fmt, needle)
        assert "Unknown client" in r.body
        assert "2026-09-21" in r.body  # log times as UTC dates
        assert "4 times" in r.body


def test_markdown_uses_code_spans_and_a_fenced_command() -> None:
    body = render(_single(_alert()), "markdown").body
    assert "**User:** `alice`" in body
    assert "```\nmysql jambonz -e" in body
    assert "1. Create the SIP client" in body


def test_html_only_contains_our_tags() -> None:
    alert = _alert(user=EVIL, summary=f"user {EVIL} <script>x</script>", evidence={EVIL: EVIL})
    r = render(_single(alert), "html")
    parser = _TagCollector()
    parser.feed(r.body)
    assert parser.tags <= {"p", "b", "br", "code", "ul", "ol", "li", "pre"}
    assert "<script" not in r.body


def test_attacker_text_in_every_field_is_inert() -> None:
    alert = _alert(
        user=EVIL,
        domain=EVIL,
        source_ip=EVIL,
        summary=f"REGISTER from {EVIL} failed",
        x_reason=EVIL,
        user_agent=EVIL,
        evidence={EVIL: EVIL},
        fix_steps=(f"Delete {EVIL}",),
        fix_command=f"echo {EVIL}",
    )
    for fmt in ("text", "markdown", "html"):
        r = render(_single(alert), fmt)
        for out in (r.title, r.body):
            assert "<!channel>" not in out and "<http" not in out
            assert "@here" not in out
        assert "*bold*" not in r.title
        if fmt == "markdown":
            # outside code spans no raw formatting characters from the attacker remain
            prose = r.body.split("**Diagnosis:**", 1)[1].split("\n", 1)[0]
            assert "*" not in prose and "|" not in prose


def test_resolved_single_and_grouped() -> None:
    one = Notice(
        notice="resolved",
        severity="info",
        kind="registration",
        cause_id="resolved",
        recoveries=(Recovery("alice", "acme.example.com", T0, ("client_missing",)),),
    )
    r = render(one, "text")
    assert r.title == "[RESOLVED] alice@acme.example.com registers again"
    assert r.notify_type == "success"
    assert "was: client_missing" in r.body
    many = Notice(
        notice="resolved",
        severity="info",
        kind="registration",
        cause_id="resolved",
        recoveries=tuple(Recovery(f"u{i}", "acme.example.com", T0, ()) for i in range(3)),
        other_recoveries=7,
    )
    r = render(many, "markdown")
    assert r.title == "[RESOLVED] 10 users register again"
    assert "`u2@acme.example.com`" in r.body and "and 7 more" in r.body


def test_security_group_title_names_the_scanner() -> None:
    sample = _alert(kind="security", severity="warning", cause_id="scanner", user="u0")
    notice = Notice(
        notice="group",
        severity="warning",
        kind="security",
        cause_id="scanner",
        sample=sample,
        alerts=1000,
        failures=1000,
        offenders=(Offender("185.243.5.17", 1000, 1000, distinct=1000),),
        distinct_total=1000,
    )
    r = render(notice, "markdown")
    assert r.title == "[WARNING] scanner: 185.243.5.17 tried 1,000 usernames"
    assert "`185.243.5.17`: 1,000 usernames" in r.body
    assert "Top sources" in r.body


def test_body_is_capped_on_block_boundaries() -> None:
    alert = _alert(
        evidence={f"key{i}": "v" * 300 for i in range(15)},
        fix_steps=tuple("step " + "s" * 390 for _ in range(10)),
    )
    for fmt in ("text", "markdown", "html"):
        r = render(_single(alert), fmt, max_body=1600)
        assert len(r.body) <= 1600
        assert "omitted: message limit" in r.body
        assert "Diagnosis" in r.body
        if fmt == "markdown":
            assert r.body.count("```") % 2 == 0
        if fmt == "html":
            assert r.body.count("<ol>") == r.body.count("</ol>")
            assert r.body.count("<ul>") == r.body.count("</ul>")


def test_long_lists_are_bounded() -> None:
    alert = _alert(evidence={f"k{i}": str(i) for i in range(100)}, fix_steps=("x",) * 50)
    body = render(_single(alert), "text").body
    assert "85 more items not shown" in body
    assert "40 more steps not shown" in body
    assert "k20" not in body


def test_title_respects_service_limit() -> None:
    r = render(_single(_alert(user="a" * 500)), "text", max_title=60)
    assert len(r.title) <= 60
