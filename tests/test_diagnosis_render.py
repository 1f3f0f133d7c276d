"""Output: escaped for terminals, shell-quoted commands, secrets scrubbed, stable JSON shape."""

from __future__ import annotations

import json
import shlex

from sipwatch.diagnosis.engine import Cause, Diagnosis, _fill_command, _fill_text
from sipwatch.diagnosis.render import render_json, render_text, scrub
from sipwatch.diagnosis.text import _all_safe, _unsafe, display_text, shell_arg


def make_diagnosis(user: str = "alice", summary: str = "s") -> Diagnosis:
    cause = Cause(
        id="client_inactive",
        severity="error",
        confidence="confirmed",
        title="The client is deactivated",
        summary=summary,
        evidence={"client_active": False, "client_sids": ["a", "b"], "user_agent": "UA\x07"},
        fix_steps=("Activate it.",),
        fix_command="sipwatch fix --user alice --domain d --action activate_client",
        remediation="activate_client",
        priority=41,
    )
    return Diagnosis(
        user=user,
        domain="d.example.com",
        causes=[cause],
        unknown=["redis: x"],
        registered_now=False,
    )


def test_display_text_escapes_controls_and_bidi_and_bounds_length() -> None:
    assert display_text("a\x1b[31mb\u202ec\nd") == "a\\x1b[31mb\\u202ec\\x0ad"
    assert display_text("x" * 300, limit=10) == "x" * 10 + "...(300 chars)"
    assert display_text("用户😀") == "用户😀"
    assert display_text("bad\udcff") == "bad\\udcff"


def test_the_printable_ascii_shortcut_agrees_with_the_character_walk() -> None:
    """``display_text`` and ``shell_arg`` skip the per-character check for printable ASCII:
    every ASCII character, alone and inside a name, must get the walk's answer."""
    for code in range(0x80):
        for text in (chr(code), f"user{chr(code)}@acme.example.com"):
            assert _all_safe(text) == (not any(_unsafe(ch) for ch in text)), hex(code)
            assert (display_text(text) == text) == _all_safe(text), hex(code)
    assert not _all_safe("ok\u202e") and _all_safe("用户")


def test_shell_arg_quotes_or_refuses() -> None:
    assert shell_arg("alice") == "alice"
    quoted = shell_arg("a'; rm -rf / #")
    assert quoted is not None and shlex.split(f"x {quoted}") == ["x", "a'; rm -rf / #"]
    assert shell_arg("$(reboot)") == "'$(reboot)'"
    assert shell_arg("a\nb") is None and shell_arg("\x1b") is None and shell_arg("") is None
    assert shell_arg("u" * 300) is None


def test_fill_is_single_pass_and_escaped() -> None:
    values = {"user": "{domain}\x1b", "domain": "d"}
    assert _fill_text("user '{user}' at {domain}", values) == "user '{domain}\\x1b' at d"
    assert _fill_text("{user} {missing}", {"user": None}) == "(unknown) (unknown)"
    cmd, why = _fill_command("sipwatch fix --user {user}", {"user": "a b;c"})
    assert cmd == "sipwatch fix --user 'a b;c'" and why is None
    cmd, why = _fill_command("sipwatch fix --user {user}", {"user": "a\x1bb"})
    assert cmd is None and why is not None and "cannot be passed safely" in why


def test_text_rendering() -> None:
    out = render_text(make_diagnosis(user="ev\x1bil"))
    assert "\x1b" not in out and "\x07" not in out
    assert out.startswith("Diagnosis for ev\\x1bil@d.example.com\n")
    assert "1. [ERROR] client_inactive - The client is deactivated" in out
    assert "client_active: no" in out and "client_sids: a, b" in out
    assert "$ sipwatch fix --user alice --domain d --action activate_client" in out
    assert "Remediation action: activate_client" in out
    assert "Could not check:\n  - redis: x" in out


def test_json_shape() -> None:
    doc = json.loads(render_json(make_diagnosis()))
    assert list(doc)[:2] == ["user", "domain"]
    cause = doc["causes"][0]
    assert cause["fix"] == {
        "steps": ["Activate it."],
        "command": "sipwatch fix --user alice --domain d --action activate_client",
    }
    assert cause["evidence"]["client_active"] is False
    assert doc["unknown"] == ["redis: x"] and doc["registered_now"] is False


def test_scrub_removes_known_secrets() -> None:
    d = make_diagnosis(summary="oops hunter22 leaked")
    assert "hunter22" not in render_text(d, secrets=["hunter22"])
    assert "hunter22" not in render_json(d, secrets=["hunter22"])
    assert scrub("abc", ["", None, "ab"]) == "abc"  # too short to scrub safely
