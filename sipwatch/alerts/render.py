"""Turn a ``Notice`` into the title and body one target receives, in that target's format.

The format is the one apprise resolves for the service (Slack: markdown, which apprise turns
into Slack mrkdwn; e-mail: HTML, from which apprise also derives the text part; generic
webhooks: plain text), and it is declared to apprise as the body format, so apprise does
not convert it again.  Every untrusted string goes through ``sipwatch.alerts.escape`` for
that format; our own labels are the only markup.

The body is built from whole blocks (a paragraph, a field list, a bullet list, a code
block).  When it would exceed the service's limit (Discord allows 2,000 characters), whole
trailing blocks are dropped and counted, so markup is never cut in half and apprise never
has to split or truncate the message itself.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal

from sipwatch.alerts import escape
from sipwatch.alerts.model import AlertInput, IncidentView, Notice

Format = Literal["text", "markdown", "html"]
FORMATS: tuple[str, ...] = ("text", "markdown", "html")

# Field length caps (characters after neutralising).  Generous for what each field really
# holds, small enough that a hostile value cannot push the fix out of the message.
USER_MAX = 96
DOMAIN_MAX = 128
IP_MAX = 64
CAUSE_MAX = 64
REASON_MAX = 160
AGENT_MAX = 160
SUMMARY_MAX = 600
EVIDENCE_KEY_MAX = 64
EVIDENCE_VALUE_MAX = 300
EVIDENCE_ITEMS = 15
STEP_MAX = 400
STEPS = 10
COMMAND_MAX = 1500
TITLE_MAX = 200

# apprise's NotifyType values (strings, so this module does not import apprise).
NOTIFY_TYPES = {"info": "info", "warning": "warning", "error": "failure", "critical": "failure"}
RESOLVED_TYPE = "success"


@dataclass(frozen=True, slots=True)
class Rendered:
    title: str
    body: str
    notify_type: str  # "info" | "warning" | "failure" | "success"


# --- format styles ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Style:
    value: Callable[[object, int], str]  # an untrusted inline value
    prose: Callable[[object, int], str]  # untrusted running text
    code_block: Callable[[object, int], str]
    bold: Callable[[str], str]  # our own label (trusted)
    line_break: str  # between the lines of one block
    block_sep: str  # between blocks
    wrap_block: Callable[[str], str]
    bullets: Callable[[Sequence[str], bool], str]


def _text_bullets(items: Sequence[str], ordered: bool) -> str:
    return "\n".join(f"{i}. {x}" if ordered else f"- {x}" for i, x in enumerate(items, 1))


def _md_bullets(items: Sequence[str], ordered: bool) -> str:
    return "\n".join(f"{i}. {x}" if ordered else f"- {x}" for i, x in enumerate(items, 1))


def _html_bullets(items: Sequence[str], ordered: bool) -> str:
    tag = "ol" if ordered else "ul"
    inner = "".join(f"<li>{x}</li>" for x in items)
    return f"<{tag}>{inner}</{tag}>"


_STYLES: dict[str, _Style] = {
    # "text" is what apprise resolves for Discord, Mattermost, Telegram and generic webhooks,
    # most of which render markdown anyway: untrusted text is made markdown-inert and the
    # command is fenced (readable as plain text, a code block where markdown is rendered).
    "text": _Style(
        value=escape.inert,
        prose=escape.inert,
        code_block=escape.markdown_block,
        bold=lambda s: s,
        line_break="\n",
        block_sep="\n\n",
        wrap_block=lambda s: s,
        bullets=_text_bullets,
    ),
    "markdown": _Style(
        value=escape.markdown_code,
        prose=escape.markdown_prose,
        code_block=escape.markdown_block,
        bold=lambda s: f"**{s}**",
        # CommonMark hard line break; Slack and Discord keep the newline anyway.
        line_break="  \n",
        block_sep="\n\n",
        wrap_block=lambda s: s,
        bullets=_md_bullets,
    ),
    "html": _Style(
        value=escape.html_code,
        prose=escape.html_text,
        code_block=escape.html_block,
        bold=lambda s: f"<b>{s}</b>",
        line_break="<br>\n",
        block_sep="\n",
        wrap_block=lambda s: s if s.startswith(("<ul>", "<ol>", "<pre>")) else f"<p>{s}</p>",
        bullets=_html_bullets,
    ),
}


def _style(fmt: str) -> _Style:
    return _STYLES.get(fmt, _STYLES["text"])


# --- small helpers ----------------------------------------------------------------------------


def _n(value: int) -> str:
    return f"{value:,}"


def _plural(value: int, word: str, plural: str | None = None) -> str:
    return f"{_n(value)} {word if value == 1 else (plural or word + 's')}"


def format_time(ts: float) -> str:
    """Log times are epoch seconds; 0 (or anything before 2001) means unknown."""
    if not ts or ts < 1e9 or ts > 1e11:
        return ""
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def _aor(user: str, domain: str) -> str:
    if user and domain:
        return f"{user}@{domain}"
    return user or domain


def _field(st: _Style, label: str, value: str) -> str:
    return f"{st.bold(label + ':')} {value}"


def _assemble(st: _Style, blocks: Sequence[str], max_body: int) -> str:
    """Join whole blocks, dropping trailing ones (and saying so) beyond ``max_body``."""
    blocks = [st.wrap_block(b) for b in blocks if b]
    out: list[str] = []
    size = 0
    reserve = 80  # room for the "omitted" note
    for i, block in enumerate(blocks):
        extra = len(block) + (len(st.block_sep) if out else 0)
        if size + extra > max_body - (reserve if i < len(blocks) - 1 else 0):
            dropped = len(blocks) - i
            note = st.wrap_block(f"({_plural(dropped, 'more section')} omitted: message limit)")
            if size + len(note) + len(st.block_sep) <= max_body:
                out.append(note)
            break
        out.append(block)
        size += extra
    return st.block_sep.join(out)


def _count_text(value: int, capped: bool, word: str, plural: str | None = None) -> str:
    """``value`` things, or "at least" when the count is a lower bound."""
    text = _plural(value, word, plural)
    return f"at least {text}" if capped else text


def _span(first: float, last: float) -> str:
    first_s, last_s = format_time(first), format_time(last)
    if first_s and last_s and first_s != last_s:
        return f"from {first_s} to {last_s}"
    if last_s or first_s:
        return f"at {last_s or first_s}"
    return ""


def _seen(st: _Style, v: IncidentView) -> str:
    parts = [_count_text(v.failures, v.failures_capped, "time")]
    span = _span(v.first_seen, v.last_seen)
    if span:
        parts.append(span)
    return _field(st, "Seen", " ".join(parts))


def _fix_blocks(st: _Style, alert: AlertInput, label: str = "Fix") -> list[str]:
    blocks: list[str] = []
    steps = [st.prose(s, STEP_MAX) for s in alert.fix_steps[:STEPS]]
    steps = [s for s in steps if s]
    if steps:
        more = len(alert.fix_steps) - STEPS
        if more > 0:
            steps.append(f"({_plural(more, 'more step')} not shown)")
        blocks.append(st.bold(label + ":"))
        blocks.append(st.bullets(steps, True))
    if alert.fix_command:
        command = st.code_block(alert.fix_command, COMMAND_MAX)
        if command:
            blocks.append(st.bold("Command:"))
            blocks.append(command)
    return blocks


def _evidence_block(st: _Style, alert: AlertInput) -> list[str]:
    items: list[str] = []
    for i, (key, value) in enumerate(alert.evidence.items()):
        if i >= EVIDENCE_ITEMS:
            items.append(f"({_plural(len(alert.evidence) - i, 'more item')} not shown)")
            break
        items.append(
            f"{st.prose(key, EVIDENCE_KEY_MAX)}: {st.value(value, EVIDENCE_VALUE_MAX) or '-'}"
        )
    if not items:
        return []
    return [st.bold("Evidence:"), st.bullets(items, False)]


def _footer(st: _Style, notice: Notice) -> str:
    return st.line_break.join(
        [
            f"cause {st.value(notice.cause_id, CAUSE_MAX)} · kind {st.prose(notice.kind, 16)}"
            f" · severity {st.prose(notice.severity, 16)} · sipwatch",
        ]
    )


def _identity_lines(st: _Style, alert: AlertInput) -> list[str]:
    lines: list[str] = []
    if alert.kind == "system" and alert.user:
        # one device of many: an example, not the subject
        example = st.value(_aor(alert.user, alert.domain), USER_MAX + DOMAIN_MAX)
        if alert.source_ip:
            example += f" from {st.value(alert.source_ip, IP_MAX)}"
        lines.append(_field(st, "Example", example))
    else:
        if alert.user:
            lines.append(_field(st, "User", st.value(alert.user, USER_MAX)))
        if alert.domain:
            lines.append(_field(st, "Domain", st.value(alert.domain, DOMAIN_MAX)))
        if alert.source_ip:
            lines.append(_field(st, "Source IP", st.value(alert.source_ip, IP_MAX)))
    if alert.status not in (None, "", 0):
        response = st.value(alert.status, 32)
        if alert.x_reason:
            response += f" (X-Reason {st.value(alert.x_reason, REASON_MAX)})"
        lines.append(_field(st, "Response", response))
    elif alert.x_reason:
        lines.append(_field(st, "X-Reason", st.value(alert.x_reason, REASON_MAX)))
    if alert.user_agent:
        lines.append(_field(st, "User-Agent", st.value(alert.user_agent, AGENT_MAX)))
    return lines


def evidence_text(value: object) -> str:
    """One evidence value as people read it: lists joined (never Python's ``['a', 'b']``),
    yes/no for booleans.  The format's escaping is applied later, like for any value."""
    if value is None:
        return "unknown"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, list | tuple | set | frozenset):
        items = sorted(value, key=str) if isinstance(value, set | frozenset) else list(value)
        return ", ".join(evidence_text(v) for v in items[:EVIDENCE_ITEMS]) or "none"
    if isinstance(value, int | float):
        return f"{value:,}" if isinstance(value, int) and abs(value) >= 10_000 else str(value)
    return str(value)


# --- titles -----------------------------------------------------------------------------------

_NOUNS = {"registration": "devices", "security": "sources", "system": "problems"}


def _who(v: IncidentView) -> str:
    """The title's name of one incident (untrusted: escaped by the caller)."""
    if v.kind == "security" and v.distinct_users > 1:
        return f"{v.label} tried {_n(v.distinct_users)} usernames"
    if v.kind == "system" and not v.label and v.devices:
        plus = "+" if v.devices_capped else ""
        return f"{_n(v.devices)}{plus} {'device' if v.devices == 1 else 'devices'} failing"
    return v.label


def _ended_title(v: IncidentView) -> str:
    t = escape.title
    if v.kind == "registration":
        return f"[RESOLVED] {t(v.label, USER_MAX + DOMAIN_MAX)} registers again"
    who = f"{t(v.label, USER_MAX + DOMAIN_MAX)} " if v.label else ""
    return f"[RESOLVED] {t(v.cause_id, CAUSE_MAX)}: {who}{t(v.ended, 60)}".rstrip()


def _title(notice: Notice) -> str:
    t = escape.title
    if notice.notice == "ended":
        total = len(notice.incidents) + notice.more
        if total == 1:
            return _ended_title(notice.incidents[0])
        if all(v.kind == "registration" for v in notice.incidents) and not notice.more:
            return f"[RESOLVED] {_n(total)} devices register again"
        return f"[RESOLVED] {_n(total)} problems ended"
    head = f"[{notice.severity.upper()}] {t(notice.cause_id, CAUSE_MAX)}"
    if notice.notice == "alert":
        v = notice.incidents[0]
        who = _who(v)
        title = f"{head}: {t(who, USER_MAX + DOMAIN_MAX)}" if who else head
        if v.ended_at is not None:
            return f"{title} (ended)"
        if v.update:
            return f"{title} (still {'active' if v.kind == 'security' else 'failing'})"
        if v.again:
            return f"{title} (again)"
        return title
    total = len(notice.incidents) + notice.more
    noun = _NOUNS.get(notice.kind, "problems")
    failures = _count_text(notice.failures, notice.failures_capped, "failure")
    return f"{head}: {_n(total)} {noun} ({failures})"


# --- bodies -----------------------------------------------------------------------------------


def _status_lines(st: _Style, notice: Notice, v: IncidentView) -> list[str]:
    lines: list[str] = []
    if v.kind == "security" and v.distinct_users:
        lines.append(_field(st, "Usernames tried", _n(v.distinct_users)))
    if v.kind == "system" and v.devices:
        lines.append(_field(st, "Affected", _count_text(v.devices, v.devices_capped, "device")))
    if v.sample.status is None and v.kind == "system":
        since = format_time(v.first_seen)
        if since:
            lines.append(_field(st, "Since", since))
    else:
        lines.append(_seen(st, v))
    if v.update:
        lines.append(_field(st, "Update", "still going on after the last message"))
    if v.again:
        lines.append(_field(st, "Again", "it had ended and is failing again"))
    if v.ended_at is not None:
        when = format_time(v.ended_at)
        lines.append(_field(st, "Ended", st.prose(v.ended, 80) + (f" at {when}" if when else "")))
    if notice.delayed:
        raised = format_time(notice.raised_at)
        lines.append(
            _field(st, "Delayed", f"raised at {raised}; the target did not answer until now")
        )
    return lines


def _alert_blocks(st: _Style, notice: Notice, v: IncidentView) -> list[str]:
    alert = v.sample
    blocks = [_field(st, "Diagnosis", st.prose(alert.summary, SUMMARY_MAX))]
    blocks.append(st.line_break.join(_identity_lines(st, alert) + _status_lines(st, notice, v)))
    blocks.extend(_fix_blocks(st, alert))
    blocks.extend(_evidence_block(st, alert))
    return blocks


def _incident_line(st: _Style, v: IncidentView) -> str:
    label = st.value(v.label or v.cause_id, USER_MAX + DOMAIN_MAX)
    parts = []
    if v.kind == "security" and v.distinct_users:
        parts.append(_plural(v.distinct_users, "username"))
    if v.kind == "system" and v.devices:
        parts.append(_count_text(v.devices, v.devices_capped, "device"))
    if v.failures or v.sample.status is not None:
        parts.append(_count_text(v.failures, v.failures_capped, "failure"))
    line = f"{label}: {', '.join(parts)}" if parts else label
    if v.ended_at is not None:
        line += f" (ended: {st.prose(v.ended, 80)})"
    return line


def _group_blocks(st: _Style, notice: Notice) -> list[str]:
    total = len(notice.incidents) + notice.more
    noun = _NOUNS.get(notice.kind, "problems")
    failures = _count_text(notice.failures, notice.failures_capped, "failure")
    blocks = [f"{_n(total)} {noun} with cause {st.value(notice.cause_id, CAUSE_MAX)} ({failures})."]
    first = min((v.first_seen for v in notice.incidents if v.first_seen), default=0.0)
    last = max((v.last_seen for v in notice.incidents), default=0.0)
    span = _span(first, last)
    if span:
        blocks.append(_field(st, "Seen", span))
    if notice.delayed:
        raised = format_time(notice.raised_at)
        blocks.append(_field(st, "Delayed", f"raised at {raised}; the target did not answer"))
    items = [_incident_line(st, v) for v in notice.incidents]
    if notice.more:
        items.append(f"and {_n(notice.more)} more")
    label = "Top sources:" if notice.kind == "security" else f"Affected {noun}:"
    blocks += [st.bold(label), st.bullets(items, False)]
    sample = notice.incidents[0].sample
    blocks.append(_field(st, "Example diagnosis", st.prose(sample.summary, SUMMARY_MAX)))
    blocks.append(st.line_break.join(_identity_lines(st, sample)))
    blocks.extend(_fix_blocks(st, sample, "Fix (same cause for all)"))
    blocks.extend(_evidence_block(st, sample))
    return blocks


def _ended_line(st: _Style, v: IncidentView) -> str:
    label = st.value(v.label, USER_MAX + DOMAIN_MAX) if v.label else ""
    cause = st.value(v.cause_id, CAUSE_MAX)
    line = f"{label} ({cause})" if label else cause
    line += f": {st.prose(v.ended, 80)}"
    when = format_time(v.ended_at or 0.0)
    if when:
        line += f" at {when}"
    if v.failures or v.sample.status is not None:
        line += f"; {_count_text(v.failures, v.failures_capped, 'failure')}"
        span = _span(v.first_seen, v.last_seen)
        if span:
            line += f" {span}"
    return line


def _ended_blocks(st: _Style, notice: Notice) -> list[str]:
    items = [_ended_line(st, v) for v in notice.incidents]
    blocks: list[str]
    if len(items) == 1 and not notice.more:
        blocks = [items[0] + "."]
    else:
        if notice.more:
            items.append(f"and {_n(notice.more)} more")
        blocks = [st.bold("Ended:"), st.bullets(items, False)]
    if notice.delayed:
        raised = format_time(notice.raised_at)
        blocks.append(_field(st, "Delayed", f"raised at {raised}; the target did not answer"))
    return blocks


def render(notice: Notice, fmt: str, *, max_body: int = 32_000, max_title: int = 250) -> Rendered:
    """Title and body of ``notice`` for a target whose format is ``fmt``."""
    st = _style(fmt)
    if notice.notice == "ended":
        blocks = _ended_blocks(st, notice)
        notify_type = RESOLVED_TYPE
    elif notice.notice == "alert":
        blocks = _alert_blocks(st, notice, notice.incidents[0])
        notify_type = NOTIFY_TYPES.get(notice.severity, "warning")
    else:
        blocks = _group_blocks(st, notice)
        notify_type = NOTIFY_TYPES.get(notice.severity, "warning")
    blocks.append(_footer(st, notice))
    title = escape.cap(_title(notice), min(TITLE_MAX, max_title) if max_title > 0 else TITLE_MAX)
    return Rendered(title=title, body=_assemble(st, blocks, max_body), notify_type=notify_type)
