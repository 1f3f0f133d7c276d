"""The audit trail: JSON log line always, the opt-in sipwatch_audit table created on demand,
secrets masked, refusal floods bounded, and a broken table never in the way."""

from __future__ import annotations

import io
import json
import logging

from structlog.testing import capture_logs

from sipwatch.diagnosis.db import DbSettings
from sipwatch.remediation.actions import Change, PlanState
from sipwatch.remediation.audit import AuditRecord, AuditTrail
from sipwatch.remediation.writer import DbWriter
from tests.jambonz_db import (
    closed_port,
    create_database,
    drop_database,
    unique_name,
)
from tests.remediation_support import bounded, rows
from tests.samples import FakeClock

SECRET = "jambonz-secret-value-77"


def change() -> Change:
    return Change(
        action="create_client",
        state=PlanState.CHANGE,
        summary="create client 'zed'",
        target="client 'zed' in account x",
        statements=("INSERT INTO clients (...) VALUES ('sid', 'acct', 'zed', '****', 1)",),
        before={"clients": []},
        after={"username": "zed", "password": "encrypted (jambonz AES-256-CBC {iv, content})"},
    )


@bounded(30)
async def test_table_is_created_on_demand_and_rows_are_masked() -> None:
    name = unique_name()
    await create_database(name, statements=[])  # an empty database: no audit table yet
    try:
        w = DbWriter(DbSettings(database=name, readonly=False))
        tables = await rows(name, "SHOW TABLES")
        assert tables == []
        trail = AuditTrail(writer=w, table=True, instance="sbc-1", secrets=lambda: [SECRET])
        with capture_logs() as logs:
            wrote = await trail.record(
                AuditRecord(
                    action="create_client",
                    result="applied",
                    actor="operator:alice via sipwatch fix",
                    reason="ok",
                    user="zed",
                    realm="acme.sip.example.com",
                    cause="client_missing",
                    source_ip="198.51.100.1",
                    change=change(),
                    detail=f"leaked {SECRET} here",
                )
            )
        assert wrote
        [row] = await rows(name, "SELECT * FROM sipwatch_audit")
        assert (row["instance"], row["actor"], row["action"], row["result"]) == (
            "sbc-1",
            "operator:alice via sipwatch fix",
            "create_client",
            "applied",
        )
        assert (row["sip_user"], row["realm"], row["cause"], row["source_ip"]) == (
            "zed",
            "acme.sip.example.com",
            "client_missing",
            "198.51.100.1",
        )
        assert row["detail"] == "leaked **** here"
        assert json.loads(row["after_state"])["username"] == "zed"
        assert "'****'" in json.loads(row["statements"])[0]
        [line] = [e for e in logs if e["event"] == "remediation_audit"]
        assert line["result"] == "applied" and line["detail"] == "leaked **** here"
        assert SECRET not in json.dumps(logs, default=str)
        # a second trail (another instance) reuses the table
        other = AuditTrail(writer=w, table=True, instance="sbc-2")
        await other.record(AuditRecord("activate_client", "dry_run", "auto", "ok", user="y"))
        assert len(await rows(name, "SELECT id FROM sipwatch_audit")) == 2
    finally:
        await drop_database(name)


@bounded(20)
async def test_table_off_means_log_line_only(writer: DbWriter, jambonz_database: str) -> None:
    trail = AuditTrail(writer=writer, table=False)
    assert not trail.table_enabled
    with capture_logs() as logs:
        await trail.record(AuditRecord("activate_account", "refused", "auto", "not_allowed"))
    assert [e["reason"] for e in logs if e["event"] == "remediation_audit"] == ["not_allowed"]


@bounded(20)
async def test_unreachable_table_never_blocks(writer: DbWriter) -> None:
    dead = DbWriter(DbSettings(port=closed_port(), connect_timeout=1, read_timeout=1))
    trail = AuditTrail(writer=dead, table=True)
    with capture_logs() as logs:
        assert await trail.record(AuditRecord("activate_account", "applied", "auto", "ok"))
    events = [e["event"] for e in logs]
    assert "remediation_audit" in events and "audit_table_unavailable" in events


def test_json_output_through_the_configured_logger() -> None:
    """With sipwatch's logging set up, the audit record is one JSON object per line."""
    import asyncio

    import structlog

    from sipwatch.logsetup import configure

    out = io.StringIO()
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    access_level = logging.getLogger("aiohttp.access").level
    try:
        configure("info", "json", out, cache=False)
        trail = AuditTrail(writer=None, table=False, instance="i1", secrets=lambda: [SECRET])
        asyncio.run(
            trail.record(
                AuditRecord("flush_cached_registration", "applied", "auto", "ok", detail=SECRET)
            )
        )
    finally:
        # configure() changes process-wide state; put it back for the other tests.
        structlog.reset_defaults()
        root.handlers[:] = handlers
        root.setLevel(level)
        logging.getLogger("aiohttp.access").setLevel(access_level)
        logging.captureWarnings(False)
    [line] = [json.loads(x) for x in out.getvalue().splitlines() if "remediation_audit" in x]
    assert line["event"] == "remediation_audit"
    assert line["action"] == "flush_cached_registration" and line["instance"] == "i1"
    assert SECRET not in out.getvalue()


async def test_refusals_are_deduplicated_and_budgeted() -> None:
    clock = FakeClock(0.0)
    trail = AuditTrail(
        writer=None, table=False, clock=clock, refusal_window=600, max_refusals_per_window=5
    )

    def refusal(user: str, reason: str = "not_allowed", ip: str = "192.0.2.9") -> AuditRecord:
        return AuditRecord("create_client", "refused", "auto", reason, user=user, source_ip=ip)

    with capture_logs() as logs:
        # one attack from one address is one record, whatever the usernames
        assert await trail.record(refusal("u1", "attack"))
        assert not await trail.record(refusal("u2", "attack"))
        assert await trail.record(refusal("u3", "attack", ip="192.0.2.10"))
        # the same refusal of the same user is recorded once per window
        assert await trail.record(refusal("v1"))
        assert not await trail.record(refusal("v1"))
        # distinct users until the budget (5 per window) is spent
        assert await trail.record(refusal("v2"))
        assert await trail.record(refusal("v3"))
        assert not await trail.record(refusal("v4"))
        assert not await trail.record(refusal("v5"))
        # applied changes are always recorded
        assert await trail.record(AuditRecord("create_client", "applied", "auto", "ok"))
    assert trail.suppressed == 4
    assert sum(1 for e in logs if e["event"] == "remediation_audit_refusals_suppressed") == 1
    clock.now += 601
    assert await trail.record(refusal("v4"))
    assert await trail.record(refusal("v1"))
