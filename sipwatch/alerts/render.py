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
from sipwatch.alerts.model import AlertInput, Notice, Offender, Recovery

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
LIST_ITEMS = 10  # offenders / recoveries listed in a grouped message
TITLE_MAX = 200

# apprise's NotifyType values (strings, so this module does not import apprise).
NOTIFY_TYPES = {"info": "info", "warning": "warning", "critical": "failure"}
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


def _seen(st: _Style, failures: int, first: float, last: float) -> str:
    parts = [_plural(failures, "time")]
    first_s, last_s = format_time(first), format_time(last)
    if first_s and last_s and first_s != last_s:
        parts.append(f"from {first_s} to {last_s}")
    elif last_s or first_s:
        parts.append(f"at {last_s or first_s}")
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


# --- titles -----------------------------------------------------------------------------------


def _title(notice: Notice) -> str:
    t = escape.title
    if notice.notice == "resolved":
        if len(notice.recoveries) == 1 and not notice.other_recoveries:
            r = notice.recoveries[0]
            who = t(_aor(r.user, r.domain), USER_MAX + DOMAIN_MAX)
            return f"[RESOLVED] {who} registers again"
        total = len(notice.recoveries) + notice.other_recoveries
        return f"[RESOLVED] {_n(total)} users register again"
    head = f"[{notice.severity.upper()}] {t(notice.cause_id, CAUSE_MAX)}"
    sample = notice.sample
    if notice.notice == "alert" and sample is not None:
        if notice.kind == "security":
            who = sample.source_ip or _aor(sample.user, sample.domain)
        else:
            who = _aor(sample.user, sample.domain) or sample.source_ip
        return f"{head}: {t(who, USER_MAX + DOMAIN_MAX)}" if who else head
    if notice.kind == "security":
        sources = len(notice.offenders) + notice.other_offenders
        if sources == 1 and notice.offenders:
            who = t(notice.offenders[0].label, IP_MAX)
        else:
            who = f"{_n(sources)} sources"
        if notice.distinct_total:
            plus = "+" if notice.distinct_capped else ""
            return f"{head}: {who} tried {_n(notice.distinct_total)}{plus} usernames"
        return f"{head}: {who}, {_plural(notice.alerts, 'alert')}"
    affected = len(notice.offenders) + notice.other_offenders
    noun = "users" if notice.kind == "registration" else "sources"
    return f"{head}: {_n(affected)} {noun} ({_plural(notice.alerts, 'alert')})"


# --- bodies -----------------------------------------------------------------------------------


def _alert_blocks(st: _Style, notice: Notice, alert: AlertInput) -> list[str]:
    blocks = [_field(st, "Diagnosis", st.prose(alert.summary, SUMMARY_MAX))]
    lines = _identity_lines(st, alert)
    lines.append(_seen(st, notice.failures, notice.first_seen, notice.last_seen))
    if notice.repeats:
        merged = f"{_plural(notice.repeats, 'similar alert')} merged into this one"
        lines.append(_field(st, "Repeats", merged))
    blocks.append(st.line_break.join(lines))
    blocks.extend(_fix_blocks(st, alert))
    blocks.extend(_evidence_block(st, alert))
    return blocks


def _offender_line(st: _Style, notice: Notice, o: Offender) -> str:
    label = st.value(o.label, USER_MAX + DOMAIN_MAX)
    if notice.kind == "security" and o.distinct:
        plus = "+" if o.distinct_capped else ""
        return (
            f"{label}: {_n(o.distinct)}{plus} usernames, {_plural(o.failures, 'failure')}"
            f" in {_plural(o.alerts, 'alert')}"
        )
    return f"{label}: {_plural(o.failures, 'failure')} in {_plural(o.alerts, 'alert')}"


def _group_blocks(st: _Style, notice: Notice) -> list[str]:
    sample = notice.sample
    listed = len(notice.offenders)
    total = listed + notice.other_offenders
    noun = "users" if notice.kind == "registration" else "sources"
    headline = (
        f"{_plural(notice.alerts, 'alert')} ({_plural(notice.failures, 'failure')}) with cause "
        f"{st.value(notice.cause_id, CAUSE_MAX)} from {_n(total)} {noun}"
    )
    if notice.distinct_total:
        plus = "+" if notice.distinct_capped else ""
        headline += f", {_n(notice.distinct_total)}{plus} distinct usernames tried"
    blocks = [headline + "."]
    seen = _seen(st, notice.failures, notice.first_seen, notice.last_seen)
    blocks.append(seen)
    items = [_offender_line(st, notice, o) for o in notice.offenders]
    if notice.other_offenders:
        items.append(f"and {_n(notice.other_offenders)} more")
    if notice.untracked_alerts:
        items.append(f"and {_plural(notice.untracked_alerts, 'alert')} from further {noun}")
    label = "Top sources:" if notice.kind == "security" else f"Affected {noun}:"
    blocks += [st.bold(label), st.bullets(items, False)]
    if sample is not None:
        blocks.append(_field(st, "Example diagnosis", st.prose(sample.summary, SUMMARY_MAX)))
        blocks.append(st.line_break.join(_identity_lines(st, sample)))
        blocks.extend(_fix_blocks(st, sample, "Fix (same cause for all)"))
        blocks.extend(_evidence_block(st, sample))
    return blocks


def _recovery_line(st: _Style, r: Recovery) -> str:
    who = st.value(_aor(r.user, r.domain), USER_MAX + DOMAIN_MAX)
    line = f"{who} registered successfully"
    when = format_time(r.at)
    if when:
        line += f" at {when}"
    if r.causes:
        causes = ", ".join(st.value(c, CAUSE_MAX) for c in r.causes)
        line += f" (was: {causes})"
    return line


def _resolved_blocks(st: _Style, notice: Notice) -> list[str]:
    items = [_recovery_line(st, r) for r in notice.recoveries]
    if len(items) == 1 and not notice.other_recoveries:
        return [items[0] + "."]
    if notice.other_recoveries:
        items.append(f"and {_n(notice.other_recoveries)} more")
    return [st.bold("Registering again:"), st.bullets(items, False)]


def render(notice: Notice, fmt: str, *, max_body: int = 32_000, max_title: int = 250) -> Rendered:
    """Title and body of ``notice`` for a target whose format is ``fmt``."""
    st = _style(fmt)
    if notice.notice == "resolved":
        blocks = _resolved_blocks(st, notice)
        notify_type = RESOLVED_TYPE
    elif notice.notice == "alert" and notice.sample is not None:
        blocks = _alert_blocks(st, notice, notice.sample)
        notify_type = NOTIFY_TYPES.get(notice.severity, "warning")
    else:
        blocks = _group_blocks(st, notice)
        notify_type = NOTIFY_TYPES.get(notice.severity, "warning")
    blocks.append(_footer(st, notice))
    title = escape.cap(_title(notice), min(TITLE_MAX, max_title) if max_title > 0 else TITLE_MAX)
    return Rendered(title=title, body=_assemble(st, blocks, max_body), notify_type=notify_type)
