"""Making attacker-controlled text safe to show in a terminal or to paste into a shell.

Usernames, domains and User-Agents arrive from the internet.  In a terminal, an ESC byte or a
bidi override in a username can rewrite what the on-call engineer sees; in a suggested
command, a quote or ``;`` can turn "copy and run" into code execution.  Display text is
escaped and truncated; command arguments are ``shlex.quote``-d and refused when they carry
characters that no quoting makes visible.
"""

from __future__ import annotations

import shlex
import unicodedata

_BIDI = frozenset(chr(c) for c in (*range(0x202A, 0x202F), *range(0x2066, 0x206A), 0x200E, 0x200F))
MAX_COMMAND_ARG = 256


def _unsafe(ch: str) -> bool:
    if ch in _BIDI:
        return True
    cat = unicodedata.category(ch)
    return cat in ("Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp")


def _all_safe(s: str) -> bool:
    """No character of ``s`` is ``_unsafe``, answered without a look at each one when ``s``
    is printable ASCII (nearly every username and domain): the only unsafe ASCII characters
    are the controls, which ``str.isprintable`` refuses."""
    if s.isascii():
        return s.isprintable()
    return not any(_unsafe(ch) for ch in s)


def display_text(value: object, limit: int = 200) -> str:
    """Printable, single-line, bounded rendering of any value."""
    s = value if isinstance(value, str) else str(value)
    extra = ""
    if len(s) > limit:
        extra = f"...({len(s)} chars)"
        s = s[:limit]
    if _all_safe(s):
        return s + extra
    out: list[str] = []
    for ch in s:
        if _unsafe(ch):
            code = ord(ch)
            out.append(f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}")
        else:
            out.append(ch)
    return "".join(out) + extra


def shell_arg(value: str) -> str | None:
    """``shlex.quote(value)``, or None when the value cannot be passed safely and visibly."""
    if not value or len(value) > MAX_COMMAND_ARG or not _all_safe(value):
        return None
    return shlex.quote(value)
