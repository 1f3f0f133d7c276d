"""Rendering notices per target format (sipwatch.alerts.render)."""

from __future__ import annotations

import html.parser
from typing import Any

from sipwatch.alerts.model import AlertInput, IncidentView, Notice
from sipwatch.alerts.render import evidence_text, render

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


def _view(alert: AlertInput, **kw: Any) -> IncidentView:
    label = alert.source_ip if alert.kind == "security" else f"{alert.user}@{alert.domain}"
    if alert.kind == "system":
        label = alert.subject
    values: dict[str, Any] = {
        "kind": alert.kind,
        "cause_id": alert.cause_id,
        "severity": alert.severity,
        "label": label,
        "sample": alert,
        "failures": alert.count,
        "distinct_users": alert.distinct_users,
        "first_seen": alert.first_seen,
        "last_seen": alert.last_seen,
    }
    values.update(kw)
    return IncidentView(**values)


def _single(alert: AlertInput, **kw: Any) -> Notice:
    view = _view(alert, **kw)
    return Notice(
        notice="alert",
        severity=alert.severity,
        kind=alert.kind,
        cause_id=alert.cause_id,
        incidents=(view,),
        failures=view.failures,
    )


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


def test_error_severity_is_its_own_word() -> None:
    r = render(_single(_alert(severity="error")), "text")
    assert r.title.startswith("[ERROR] client_missing")
    assert r.notify_type == "failure"
    assert "severity error" in r.body


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


def test_ended_single_and_grouped() -> None:
    alert = _alert()
    one = Notice(
        notice="ended",
        severity="info",
        kind="registration",
        cause_id="resolved",
        incidents=(_view(alert, ended_at=T0 + 300, ended="registered again"),),
    )
    r = render(one, "text")
    assert r.title == "[RESOLVED] alice@acme.example.com registers again"
    assert r.notify_type == "success"
    assert "(client_missing): registered again at 2026-09-21" in r.body
    assert "4 failures from" in r.body
    many = Notice(
        notice="ended",
        severity="info",
        kind="registration",
        cause_id="resolved",
        incidents=tuple(
            _view(_alert(user=f"u{i}"), label=f"u{i}@acme.example.com", ended_at=T0, ended="x")
            for i in range(3)
        ),
        more=7,
    )
    r = render(many, "markdown")
    assert r.title == "[RESOLVED] 10 problems ended"
    assert "`u2@acme.example.com`" in r.body and "and 7 more" in r.body


def test_system_and_security_endings_say_what_ended() -> None:
    outage = _alert(kind="system", cause_id="registrar_down", user="", subject="")
    view = _view(outage, label="", devices=50, ended_at=T0, ended="devices register again")
    r = render(Notice("ended", "info", "system", "resolved", (view,)), "text")
    assert r.title == "[RESOLVED] registrar_down: devices register again"
    scan = _alert(kind="security", cause_id="scanner", user="", source_ip="185.243.5.17")
    view = _view(scan, ended_at=T0, ended="no new failures")
    r = render(Notice("ended", "info", "security", "resolved", (view,)), "text")
    assert r.title == "[RESOLVED] scanner: 185.243.5.17 no new failures"


def test_scanner_alert_states_the_username_count_of_its_evidence() -> None:
    alert = _alert(
        kind="security",
        severity="warning",
        cause_id="scanner",
        user="",
        domain="",
        source_ip="185.243.5.17",
        distinct_users=61,
        evidence={"distinct_users_from_ip": "61", "scanner_reasons": "61 usernames failed"},
    )
    for fmt in ("text", "markdown", "html"):
        r = render(_single(alert), fmt)
        assert r.title == "[WARNING] scanner: 185.243.5.17 tried 61 usernames"
        assert "Usernames tried:" in r.body and "61" in r.body
        assert "User:" not in r.body  # the per-IP record has no single user


def test_update_and_ended_incidents_say_so_in_the_title() -> None:
    r = render(_single(_alert(), update=True), "text")
    assert r.title.endswith("(still failing)")
    assert "Update: still going on" in r.body
    scan = _alert(kind="security", severity="warning", cause_id="scanner", source_ip="185.243.5.17")
    assert render(_single(scan, update=True, distinct_users=9), "text").title == (
        "[WARNING] scanner: 185.243.5.17 tried 9 usernames (still active)"
    )
    assert render(_single(_alert(), again=True), "text").title.endswith("(again)")
    r = render(_single(_alert(), ended_at=T0 + 5, ended="registered again"), "text")
    assert r.title.endswith("(ended)")
    assert "Ended: registered again at" in r.body


def test_system_outage_counts_devices_and_failures() -> None:
    alert = _alert(kind="system", cause_id="registrar_down", status=503, x_reason="")
    view = _view(alert, label="", devices=48, failures=230)
    r = render(Notice("alert", "critical", "system", "registrar_down", (view,)), "text")
    assert r.title == "[CRITICAL] registrar_down: 48 devices failing"
    assert "Affected: 48 devices" in r.body
    assert "Seen: 230 times" in r.body
    assert "Example: alice@acme.example.com from 203.0.113.7" in r.body


def test_dependency_alert_shows_since_instead_of_counts() -> None:
    alert = AlertInput(
        kind="system",
        severity="error",
        cause_id="database_unreachable",
        summary="database is unreachable",
        subject="database",
        first_seen=T0,
        last_seen=T0,
    )
    r = render(_single(alert), "text")
    assert r.title == "[ERROR] database_unreachable: database"
    assert "Since: 2026-09-21" in r.body and "Seen:" not in r.body


def test_security_group_lists_sources_with_their_own_counts() -> None:
    views = tuple(
        _view(
            _alert(kind="security", cause_id="scanner", user="", source_ip=f"10.0.0.{n}"),
            distinct_users=n * 10,
            failures=n * 11,
        )
        for n in (3, 2, 1)
    )
    notice = Notice("group", "warning", "security", "scanner", views, more=4, failures=66)
    r = render(notice, "markdown")
    assert r.title == "[WARNING] scanner: 7 sources (66 failures)"
    assert "`10.0.0.3`: 30 usernames, 33 failures" in r.body
    assert "and 4 more" in r.body and "Top sources" in r.body


def test_delayed_message_says_when_it_was_raised() -> None:
    notice = _single(_alert())
    late = Notice(**{**notice.__dict__, "raised_at": T0, "delayed": True})
    body = render(late, "text").body
    assert "Delayed: raised at 2026-09-21" in body


def test_evidence_values_read_like_text_not_python() -> None:
    assert evidence_text(["a", "b"]) == "a, b"
    assert evidence_text([]) == "none"
    assert evidence_text(True) == "yes" and evidence_text(None) == "unknown"
    assert evidence_text(100_000) == "100,000"
    alert = _alert(evidence={"reasons": evidence_text(["61 usernames", "scanner UA"])})
    body = render(_single(alert), "text").body
    assert "61 usernames, scanner UA" in body
    assert "['" not in body and "\uff3b'" not in body  # nor its escaped look-alike


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
