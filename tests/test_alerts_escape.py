"""Neutralising attacker-controlled text (sipwatch.alerts.escape)."""

from __future__ import annotations

import re
import unicodedata

from hypothesis import example, given, settings
from hypothesis import strategies as st

from sipwatch.alerts import escape

EVIL = "<!channel> *bold* <http://evil.example|click> @here"
MENTIONS = ("@channel", "@here", "@everyone", "<!channel>", "<!here>", "<!everyone>")
ALL_FORMATS = (
    escape.plain,
    escape.markdown_prose,
    escape.markdown_code,
    escape.html_text,
    escape.html_code,
    escape.title,
)


def _assert_inert(out: str) -> None:
    assert "<!" not in out
    assert "<http" not in out
    assert "http://" not in out
    for mention in MENTIONS:
        assert mention not in out


def test_the_classic_payload_is_inert_in_every_format() -> None:
    for fn in ALL_FORMATS:
        out = fn(EVIL, 500)
        _assert_inert(out)
        assert "channel" in out and "here" in out, "text stays readable"


def test_markdown_prose_neutralises_formatting() -> None:
    out = escape.markdown_prose("*bold* _it_ ~strike~ `code` [a](b) \\x |c| > quote", 500)
    for ch in "*~`[]|<>\\":
        assert ch not in out, ch
    assert "_it_" not in out
    assert "bold" in out and "strike" in out and "code" in out


def test_intraword_underscore_is_kept() -> None:
    assert escape.markdown_prose("john_doe", 50) == "john_doe"
    assert escape.markdown_prose("_john_", 50) != "_john_"


def test_markdown_code_span_cannot_be_closed_early() -> None:
    out = escape.markdown_code("a`b` *x* @here", 50)
    assert out.startswith("`") and out.endswith("`")
    assert out.count("`") == 2
    assert "@here" not in out


def test_markdown_block_keeps_the_command_but_not_the_fence_or_links() -> None:
    cmd = "mysql jambonz -e \"DELETE FROM x WHERE u='a_b*c'\"\nhttp://evil.example```\n@here"
    out = escape.markdown_block(cmd, 500)
    assert out.startswith("```\n") and out.endswith("\n```")
    inner = out[4:-4]
    assert inner.split("\n")[0] == "mysql jambonz -e \"DELETE FROM x WHERE u='a_b*c'\""
    assert "```" not in inner
    assert "http://" not in inner and "evil[.]example" in inner
    assert "@here" not in inner


def test_urls_hidden_behind_word_characters_are_defanged() -> None:
    for raw in ("1http://evil.example", "_https://evil.example", "x_www.evil.example"):
        out = escape.plain(raw, 100)
        assert "://" not in out and "evil.example" not in out, out


def test_html_is_entity_escaped() -> None:
    out = escape.html_text("<img src=x onerror=alert(1)> \"q\" & 's'", 200)
    assert "<" not in out and ">" not in out and '"' not in out and "'" not in out
    assert "&amp;" in out
    assert escape.html_code("<b>", 20).startswith("<code>")
    assert "<b>" not in escape.html_code("<b>", 20)


def test_control_bidi_and_zero_width_characters_are_removed() -> None:
    raw = "ali\u202ece\u200b\u2066x\x00\x07\x1b[31mred\u200d\ufeff"
    out = escape.plain(raw, 100)
    assert all(unicodedata.category(c) not in ("Cc", "Cf") for c in out)
    assert "alice" in out and "red" in out


def test_newlines_cannot_fake_new_alert_lines() -> None:
    out = escape.plain("alice\nSeverity: info\r\nall good\u2028", 100)
    assert "\n" not in out and "\r" not in out
    assert out == "alice Severity: info all good"


def test_combining_mark_floods_are_capped() -> None:
    zalgo = "a" + "\u0301" * 500 + "b"
    out = escape.plain(zalgo, 1000)
    assert len(out) <= 4


def test_urls_are_defanged_everywhere_but_code_blocks() -> None:
    for raw in ("see https://evil.example/login", "www.evil.example", "evil.example/login"):
        out = escape.plain(raw, 100)
        assert "evil.example" not in out, out
        assert "[.]" in out
    assert escape.plain("https://evil.example", 100) == "https[:]//evil[.]example"


def test_email_addresses_are_not_mentions() -> None:
    assert escape.plain("bob@example.com", 50) == "bob@example.com"
    assert escape.plain("@bob hi", 50) == "\uff20bob hi"
    assert escape.plain("_@here", 50) == "_\uff20here"


def test_credentials_in_urls_are_masked() -> None:
    out = escape.plain("hook https://user:s3cr3t@hooks.example.com/x?token=abc&x=1", 200)
    assert "s3cr3t" not in out and "abc" not in out
    assert "x=1" in out
    assert "s3cr3t" not in escape.markdown_block("curl https://u:s3cr3t@h.example/", 200)
    assert "s3cr3t" not in escape.html_block("curl https://u:s3cr3t@h.example/", 200)
    digest = escape.plain('Digest username="a", response="0123456789abcdef0123"', 200)
    assert "0123456789abcdef" not in digest


def test_length_is_capped_with_an_ellipsis() -> None:
    out = escape.plain("x" * 10_000, 50)
    assert len(out) == 50 and out.endswith(escape.ELLIPSIS)
    assert escape.markdown_code("y" * 10_000, 20) == "`" + "y" * 19 + escape.ELLIPSIS + "`"
    assert escape.cap("abc", 0) == ""


def test_huge_input_is_cheap() -> None:
    out = escape.plain("<!here>" * 2_000_000, 100)
    assert len(out) == 100


_ASCII_AND_TRICKS = st.text(
    alphabet=st.one_of(
        st.characters(min_codepoint=0, max_codepoint=0x7F),
        st.sampled_from(list("\u202e\u200b\u2028\u0301\uff20\ufeff")),
    ),
    max_size=300,
)


@settings(max_examples=300, deadline=None)
@given(_ASCII_AND_TRICKS, st.integers(min_value=1, max_value=200))
@example("_@0", 10)  # "_" becomes a full-width low line in markdown: "@" must not follow it
@example("www.@here", 20)  # "." becomes "[.]"
@example("x]@here", 20)
def test_property_no_active_syntax_survives(text: str, limit: int) -> None:
    for fn in (escape.plain, escape.markdown_prose, escape.title):
        out = fn(text, limit)
        assert len(out) <= limit
        assert "<" not in out and ">" not in out
        assert re.search(r"(?<!\w)@\w", out) is None
        assert "://" not in out
        assert all(unicodedata.category(c) not in ("Cc", "Cf") for c in out)
    prose = escape.markdown_prose(text, limit)
    assert not set("*~`[]|\\") & set(prose)
    html_out = escape.html_text(text, limit)
    assert "<" not in html_out and ">" not in html_out and '"' not in html_out
