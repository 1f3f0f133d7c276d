"""Tests of sipwatch.logsetup: real rendered output, renderer choice, secret redaction."""

from __future__ import annotations

import io
import json
import logging
import os
import pty
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import structlog

from sipwatch.logsetup import REDACTED, configure, redact_text

ROOT = Path(__file__).resolve().parent.parent
# passed by name, so the source lines a console traceback prints do not contain it
PASSWORD = "hunter2"


@pytest.fixture(autouse=True)
def restore_logging() -> Iterator[None]:
    """configure() changes process-wide state; put it back for the other tests."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    access = logging.getLogger("aiohttp.access")
    access_level = access.level
    yield
    structlog.reset_defaults()
    structlog.contextvars.clear_contextvars()
    root.handlers[:] = handlers
    root.setLevel(level)
    access.setLevel(access_level)
    logging.captureWarnings(False)


def json_lines(buf: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in buf.getvalue().splitlines()]


def test_json_lines_with_level_and_timestamp() -> None:
    buf = io.StringIO()
    assert configure("info", "json", buf, cache=False) == "json"
    log = structlog.get_logger()
    log.info("registration failed", user="alice", status=403)
    log.debug("not shown")
    log.warning("shown")
    first, second = json_lines(buf)
    assert first["event"] == "registration failed"
    assert first["level"] == "info"
    assert (first["user"], first["status"]) == ("alice", 403)
    assert first["timestamp"].endswith("Z") and "T" in first["timestamp"]
    assert second["level"] == "warning"


def test_auto_is_json_when_not_a_terminal() -> None:
    buf = io.StringIO()
    assert configure("debug", "auto", buf, cache=False) == "json"
    structlog.get_logger().debug("x")
    assert json_lines(buf)[0]["level"] == "debug"


def test_auto_is_console_on_a_terminal() -> None:
    master, slave = pty.openpty()
    try:
        with os.fdopen(slave, "w", buffering=1, closefd=True) as terminal:
            assert configure("info", "auto", terminal, cache=False) == "console"
            structlog.get_logger().info("hello terminal", user="bob")
            terminal.flush()
            output = os.read(master, 65536).decode()
    finally:
        os.close(master)
    assert "hello terminal" in output
    assert "bob" in output
    assert "\x1b[" in output  # colours, because it is a real terminal
    with pytest.raises(json.JSONDecodeError):
        json.loads(output.strip())


def test_console_format_forced_on_a_pipe_has_no_colours() -> None:
    buf = io.StringIO()
    assert configure("info", "console", buf, cache=False) == "console"
    structlog.get_logger().info("plain", user="carol", db_url="mysql://root:hunter2@h/j")
    output = buf.getvalue()
    assert "plain" in output and "user=carol" in output
    assert "\x1b[" not in output
    assert "hunter2" not in output and REDACTED in output


def test_secret_keys_are_redacted_but_sip_fields_are_not() -> None:
    buf = io.StringIO()
    configure("info", "json", buf, cache=False)
    structlog.get_logger().info(
        "checked",
        password="hunter2",
        db_url="mysql://root:hunter2@db/jambones",
        webhook_secret="whsec",
        Authorization='Digest username="alice", response="deadbeef"',
        nested={"api_key": "k-123", "note": "redis://:pw9@r:6379/0"},
        auth_username="alice",
        auth_realm="sip.example.com",
        has_password=True,
        token=None,
    )
    (line,) = json_lines(buf)
    text = buf.getvalue()
    for secret in ("hunter2", "whsec", "deadbeef", "k-123", "pw9"):
        assert secret not in text
    assert line["password"] == REDACTED
    assert line["db_url"] == REDACTED
    assert line["Authorization"] == REDACTED
    assert line["nested"] == {"api_key": REDACTED, "note": "redis://:****@r:6379/0"}
    assert line["auth_username"] == "alice"
    assert line["auth_realm"] == "sip.example.com"
    assert line["has_password"] is True
    assert line["token"] is None


def test_credentials_inside_strings_are_masked() -> None:
    buf = io.StringIO()
    configure("info", "json", buf, cache=False)
    sip = (
        "REGISTER sip:example.com SIP/2.0\r\n"
        'Authorization: Digest username="1001", realm="example.com", response="abc123"\r\n'
        "To: <sip:1001@example.com>\r\n"
    )
    structlog.get_logger().info("connect to mysql://jambones:s3cr3t@10.0.0.2/jambones", sip=sip)
    (line,) = json_lines(buf)
    assert line["event"] == "connect to mysql://jambones:****@10.0.0.2/jambones"
    assert line["sip"] == (
        "REGISTER sip:example.com SIP/2.0\r\n"
        f"Authorization: {REDACTED}\r\n"
        "To: <sip:1001@example.com>\r\n"
    )


def failing_connect(password: str) -> None:
    secret_local = f"{password}-local"
    raise ConnectionError(
        f"cannot reach mysql://root:{password}@db:3306/jambones ({len(secret_local)})"
    )


def test_tracebacks_have_no_locals_and_are_scrubbed() -> None:
    buf = io.StringIO()
    configure("info", "json", buf, cache=False)
    try:
        failing_connect(PASSWORD)
    except ConnectionError:
        structlog.get_logger().exception("database down")
    (line,) = json_lines(buf)
    assert "hunter2" not in buf.getvalue()
    (exc,) = line["exception"]
    assert exc["exc_type"] == "ConnectionError"
    assert "mysql://root:****@db:3306/jambones" in exc["exc_value"]
    assert [frame["name"] for frame in exc["frames"]][-1] == "failing_connect"
    assert all("locals" not in frame for frame in exc["frames"])


def test_console_tracebacks_are_scrubbed_too() -> None:
    buf = io.StringIO()
    configure("info", "console", buf, cache=False)
    try:
        failing_connect(PASSWORD)
    except ConnectionError:
        structlog.get_logger().exception("database down")
    output = buf.getvalue()
    assert "Traceback (most recent call last)" in output
    assert "failing_connect" in output
    assert "hunter2" not in output


def test_console_escapes_terminal_control_from_log_text() -> None:
    """A username is internet text: an OSC title sequence, a screen clear or a bidi override
    in it must reach the terminal as visible escapes, not as control."""
    buf = io.StringIO()
    configure("info", "console", buf, cache=False)
    hostile = "bob\x1b]0;owned\x07\x1b[2J\u202eevil\r\nfake line"
    structlog.get_logger().warning("registration failed", user=hostile)
    logging.getLogger("aiohttp").warning("peer said %s", hostile)
    output = buf.getvalue()
    assert "\x1b" not in output and "\x07" not in output and "\u202e" not in output
    assert "\r" not in output
    assert output.count("\n") == 2  # one line per event: no forged line
    assert "bob\\x1b]0;owned\\x07" in output and "\\u202eevil" in output


def test_stdlib_loggers_share_the_output_and_the_redaction() -> None:
    buf = io.StringIO()
    configure("info", "json", buf, cache=False)
    logging.getLogger("asyncmy").warning("connect %s failed", "mysql://root:hunter2@h/j")
    logging.getLogger("apprise").info(
        "Sent notification to %s", "https://hooks.slack.com/services/T0/B0/XYZSECRET"
    )
    logging.getLogger("aiohttp.access").info("GET /metrics 200")  # quietened below warning
    logging.getLogger("aiohttp.client").debug("below the level")
    try:
        failing_connect(PASSWORD)
    except ConnectionError:
        logging.getLogger("sipwatch.db").exception("pool error", extra={"attempt": 3})
    first, second, third = json_lines(buf)
    assert first == {
        "event": "connect mysql://root:****@h/j failed",
        "level": "warning",
        "logger": "asyncmy",
        "timestamp": first["timestamp"],
    }
    assert second["event"] == "Sent notification to https://hooks.slack.com/services/****"
    assert third["logger"] == "sipwatch.db" and third["attempt"] == 3
    assert third["exception"][0]["exc_type"] == "ConnectionError"
    assert "hunter2" not in buf.getvalue() and "XYZSECRET" not in buf.getvalue()


def test_contextvars_are_merged() -> None:
    buf = io.StringIO()
    configure("info", "json", buf, cache=False)
    structlog.contextvars.bind_contextvars(source="drachtio-sbc")
    structlog.get_logger().info("line")
    assert json_lines(buf)[0]["source"] == "drachtio-sbc"


def test_configure_twice_does_not_duplicate_stdlib_lines() -> None:
    first, second = io.StringIO(), io.StringIO()
    configure("info", "json", first, cache=False)
    configure("warning", "json", second, cache=False)
    logging.getLogger("aiohttp.client").warning("once")
    logging.getLogger("aiohttp.client").info("filtered by the new level")
    structlog.get_logger().info("filtered too")
    assert first.getvalue() == ""
    assert [line["event"] for line in json_lines(second)] == ["once"]


def test_bad_level_and_format_are_rejected() -> None:
    with pytest.raises(ValueError, match="unknown log level 'loud'"):
        configure("loud", "json", io.StringIO())
    with pytest.raises(ValueError, match="unknown log format 'xml'"):
        configure("info", "xml", io.StringIO())


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("plain text, nothing secret", "plain text, nothing secret"),
        ("redis://:pw@127.0.0.1:6379/0", "redis://:****@127.0.0.1:6379/0"),
        ("amqp://guest:guest@mq/", "amqp://guest:****@mq/"),
        ("http://example.com:8080/path", "http://example.com:8080/path"),
        ("sip:1001@example.com;transport=udp", "sip:1001@example.com;transport=udp"),
        ("Proxy-Authorization: Digest x", f"Proxy-Authorization: {REDACTED}"),
        ("header Bearer abc.def-ghi", f"header Bearer {REDACTED}"),
        ('response="0123abcd", cnonce="x"', f'response="{REDACTED}", cnonce="x"'),
        ("https://api/x?user=a&token=abc&z=1", "https://api/x?user=a&token=****&z=1"),
        (
            "https://hooks.slack.com/services/T000/B000/XXXX more",
            "https://hooks.slack.com/services/**** more",
        ),
    ],
)
def test_redact_text(text: str, expected: str) -> None:
    assert redact_text(text) == expected


def test_real_stdout_of_a_process_is_json() -> None:
    code = (
        "import logging, structlog\n"
        "from sipwatch.logsetup import configure\n"
        "print(configure(), file=__import__('sys').stderr)\n"
        "structlog.get_logger().info('started', password='hunter2', listen='0.0.0.0:9466')\n"
        "logging.getLogger('aiohttp.server').error('bad url %s', 'redis://:hunter2@h:6379')\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
        check=True,
    )
    assert result.stderr.strip() == "json"
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert [line["event"] for line in lines] == ["started", "bad url redis://:****@h:6379"]
    assert lines[0]["password"] == REDACTED
    assert lines[1]["logger"] == "aiohttp.server"
    assert "hunter2" not in result.stdout
