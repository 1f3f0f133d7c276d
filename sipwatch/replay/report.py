"""Rendering of a replay: the JSON other tools consume and a table for humans.

Every string in a report came from the network.  The text renderer replaces control
characters (an ANSI escape in a username would otherwise repaint the operator's terminal);
JSON is safe by construction.
"""

from __future__ import annotations

import json
import textwrap
from datetime import UTC, datetime
from typing import Any

from sipwatch.pipeline.failures import FailureRecord
from sipwatch.replay.driver import ReplayResult, status_sort_key
from sipwatch.sip_meaning import TIMEOUT

# A failure's causes, keyed like FailureRecord: (side, user, domain, source_ip, status)
CauseKey = tuple[str, str, str, str, int | str]
CauseMap = dict[CauseKey, list[dict[str, Any]]]


def record_key(r: FailureRecord) -> CauseKey:
    return (r.side, r.user, r.domain, r.source_ip, r.status)


def printable(text: str, limit: int = 80) -> str:
    """Terminal-safe text: control characters escaped, long values cut with an ellipsis."""
    out = []
    for ch in text:
        code = ord(ch)
        if code < 0x20 or code == 0x7F or 0x80 <= code < 0xA0:
            out.append(f"\\x{code:02x}")
        else:
            out.append(ch)
    s = "".join(out)
    return s if len(s) <= limit else s[: limit - 1] + "…"


def _iso(ts: float) -> str | None:
    if not ts:
        return None
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def failure_dict(r: FailureRecord, causes: list[dict[str, Any]] | None) -> dict[str, Any]:
    d: dict[str, Any] = {
        "user": r.user,
        "domain": r.domain,
        "source_ip": r.source_ip,
        "status": r.status,
        "x_reason": r.x_reason or None,
        "count": r.count,
        "side": r.side,
        "challenged": r.challenged,
        "user_agent": r.user_agent or None,
        "first_seen": _iso(r.first_seen),
        "last_seen": _iso(r.last_seen),
        "registered_later": r.resolved_at is not None,
    }
    if r.scanner:
        d["scanner"] = True
        d["distinct_users"] = r.distinct_users
    if causes is not None:
        d["causes"] = causes
    return d


def split_failures(
    records: list[FailureRecord],
) -> tuple[list[FailureRecord], list[FailureRecord], list[FailureRecord]]:
    """(final responses >= 403, timeouts, other failures such as 400) as the JSON groups them."""
    failures, timeouts, other = [], [], []
    for r in records:
        if r.status == TIMEOUT:
            timeouts.append(r)
        elif isinstance(r.status, int) and r.status >= 403:
            failures.append(r)
        else:
            other.append(r)
    return failures, timeouts, other


def to_json(res: ReplayResult, causes: CauseMap | None = None) -> dict[str, Any]:
    failures, timeouts, other = split_failures(res.failure_records())

    def rows(items: list[FailureRecord]) -> list[dict[str, Any]]:
        return [
            failure_dict(r, None if causes is None else causes.get(record_key(r), []))
            for r in items
        ]

    by_status = {
        k: res.register_by_status[k] for k in sorted(res.register_by_status, key=status_sort_key)
    }
    return {
        "sip_messages": res.sip_messages,
        "register_transactions_by_status": by_status,
        "register_failures": rows(failures),
        "register_timeouts": rows(timeouts),
        "register_other_failures": rows(other),
        "register_transactions_by_side": dict(res.register_by_side),
        "register_attempts_by_outcome": dict(res.attempts_by_outcome),
        "sip_messages_by_direction": dict(res.messages_by_direction),
        "retransmitted_requests": res.retransmitted_requests,
        "orphan_responses": res.orphan_responses,
        "service_events": dict(res.service_events),
        "scanners": scanner_summary(res),
        "log": {
            "inputs": res.inputs,
            "lines": res.lines,
            "records": res.records,
            "parse_errors": res.parse_errors,
            "first_ts": _iso(res.first_ts),
            "last_ts": _iso(res.last_ts),
            "failure_records_dropped": res.failures.dropped,
        },
    }


def scanner_summary(res: ReplayResult) -> list[dict[str, Any]]:
    """The sources classified as scanners: their usernames were folded per source IP."""
    failures: dict[str, int] = {}
    for r in res.failure_records():
        if r.scanner:
            failures[r.source_ip] = failures.get(r.source_ip, 0) + r.count
    out = []
    states = sorted(res.pipeline.scanners.scanners(), key=lambda s: -failures.get(s.ip, 0))
    for state in states:
        out.append(
            {
                "source_ip": state.ip,
                "reason": state.reason,
                "tool": state.tool or None,
                "usernames": state.users.count() if state.users else 0,
                "failures": failures.get(state.ip, 0),
            }
        )
    return out


# The C encoder: ``json.dumps(indent=...)`` takes the pure-Python one, which cost a replay of
# a busy log more than its whole transaction tracking (20k failure rows, 0.3 s).
_ENCODE = json.JSONEncoder(ensure_ascii=False).encode


def render_json(res: ReplayResult, causes: CauseMap | None = None) -> str:
    """The report as JSON: one top-level key per line, and one row per line of each list
    (a failure group, a scanner), so a report of thousands of rows is both greppable and
    encoded by the C encoder."""
    doc = to_json(res, causes)
    parts = []
    for key, value in doc.items():
        if isinstance(value, list) and value:
            rows = ",\n".join("    " + _ENCODE(row) for row in value)
            parts.append(f"  {_ENCODE(key)}: [\n{rows}\n  ]")
        else:
            parts.append(f"  {_ENCODE(key)}: {_ENCODE(value)}")
    return "{\n" + ",\n".join(parts) + "\n}\n"


def render_text(res: ReplayResult, causes: CauseMap | None = None, *, limit: int = 50) -> str:
    lines: list[str] = []
    add = lines.append
    errors = sum(res.parse_errors.values())
    add(
        f"sipwatch replay: {len(res.inputs)} input(s), {res.lines:,} lines, "
        f"{res.sip_messages:,} SIP messages, {errors} parse errors, {res.seconds:.2f} s"
    )
    if res.first_ts:
        add(f"log time: {_iso(res.first_ts)} .. {_iso(res.last_ts)}")
    add("")
    add("REGISTER transactions by final status:")
    if res.register_by_status:
        parts = [
            f"{k}: {res.register_by_status[k]}"
            for k in sorted(res.register_by_status, key=status_sort_key)
        ]
        add("  " + "   ".join(parts))
    else:
        add("  (none)")
    if res.attempts_by_outcome:
        add(
            "Registration attempts: "
            + ", ".join(f"{k} {v}" for k, v in sorted(res.attempts_by_outcome.items()))
        )
    add("")
    failures, timeouts, other = split_failures(res.failure_records())
    shown = failures + other + timeouts
    if not shown:
        add("No failing registrations.")
        return "\n".join(lines) + "\n"
    scanners = scanner_summary(res)
    if scanners:
        total = sum(int(s["usernames"]) for s in scanners)
        add(
            f"Scanners: {len(scanners)} source(s) tried about {total:,} usernames; their "
            "failures are counted per source IP, not per user:"
        )
        for s in scanners[:5]:
            why = f"User-Agent {s['tool']}" if s["tool"] else "many usernames rejected"
            add(
                f"  {printable(str(s['source_ip']), 40)}  ~{int(s['usernames']):,} usernames, "
                f"{int(s['failures']):,} failures ({why})"
            )
        add("")
    add(f"Failing registrations ({len(shown)} groups, most frequent first):")
    header = f"  {'USER@DOMAIN':<36} {'SOURCE':<22} {'STATUS':<7} {'X-REASON':<28} {'COUNT':>5}"
    add(header)
    for r in shown[:limit]:
        aor = printable(r.who, 36)
        reason = printable(r.x_reason or ("(challenged)" if r.challenged else "-"), 28)
        side = "" if r.side == "inbound" else " [outbound]"
        source = printable(r.source_ip, 22)
        add(f"  {aor:<36} {source:<22} {r.status!s:<7} {reason:<28} {r.count:>5}{side}")
        if causes is not None:
            found = causes.get(record_key(r), [])
            if not found:
                add("      cause: not determined from the log alone (set SIPWATCH_DB_URL for more)")
            for cause in found[:2]:
                summary = printable(str(cause.get("summary", "")), 600)
                head = f"cause [{cause.get('severity', '?')}] {cause.get('id')}: "
                wrapped = textwrap.wrap(head + summary, width=96)
                add("      " + wrapped[0])
                lines.extend("        " + w for w in wrapped[1:])
                fix = cause.get("fix") or {}
                cmd = fix.get("command") if isinstance(fix, dict) else None
                steps = fix.get("steps") if isinstance(fix, dict) else None
                if steps:
                    add(f"      fix: {printable(str(steps[0]), 160)}")
                if cmd:
                    add(f"      run: {printable(str(cmd), 160)}")
    if len(shown) > limit:
        add(f"  ... {len(shown) - limit} more (use --format json for all)")
    return "\n".join(lines) + "\n"
