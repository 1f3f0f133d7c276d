"""sipwatch's own log output: structlog, one JSON object per line on stdout in production.

Why JSON on stdout: sipwatch runs under Docker or systemd, whose log drivers already
timestamp, rotate and ship stdout; one object per line is what Loki/Elasticsearch/jq expect.
A human at a terminal gets structlog's console renderer instead.

Why a redaction step: sipwatch handles database URLs, the jambonz encryption secret, apprise
tokens, and SIP messages whose Authorization headers carry digest responses.  Log lines go
to places with weaker access control than the config file, so the last processor before the
renderer masks secret-looking keys and credentials inside any string, for sipwatch's own
events and for stdlib loggers (aiohttp, asyncmy, apprise) alike.  Tracebacks are rendered
without local variables for the same reason (structlog's dict tracebacks show locals by
default, and a local called ``password`` would end up in the JSON).
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Mapping
from typing import Any, Literal, TextIO

import structlog
from structlog.typing import EventDict, Processor, WrappedLogger

LOG_LEVELS: Mapping[str, int] = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
    "critical": logging.CRITICAL,
}
REDACTED = "[REDACTED]"
_CONSOLE_VALUE_MAX = 4096  # a console line stays readable; JSON keeps the (bounded) value
_HANDLER_NAME = "sipwatch"

# Keys whose values are secrets whatever they look like.  Matched as substrings of the
# lower-cased key, so "db_password", "webhook_secret" and "Authorization" are all caught.
_SECRET_KEY = re.compile(
    r"pass$|passwd|password|passphrase|secret|authori[sz]ation|token|api[_-]?key|cookie|"
    r"credential|private[_-]?key|^pwd$|^auth$|dsn$|^db_url$|^database_url$|^redis_url$",
    re.IGNORECASE,
)
# Cheap pre-check: only strings containing one of these go through the substitutions.
_TRIGGER = re.compile(
    r"://|authoriz|bearer|response=|hooks\.slack\.com|[?&;](?:pass|pwd|token|secret|key|api|"
    r"access|auth|sig)",
    re.IGNORECASE,
)
_SUBSTITUTIONS: tuple[tuple[re.Pattern[str], str], ...] = (
    # scheme://user:password@host -> scheme://user:****@host (mysql, redis, amqp, http...)
    # scheme://user:password@host: everything up to the *last* "@" of the authority is
    # secret (a password may contain "@" or "/" when it was not percent-encoded)
    (re.compile(r"(\b[A-Za-z][A-Za-z0-9+.\-]*://[^\s:/@\"']*:)[^\s\"']*(?=@)"), r"\1****"),
    # SIP/HTTP Authorization headers: everything after the header name on that line
    (
        re.compile(r"(\b(?:proxy-)?authorization\"?\s*[:=]\s*)[^\r\n]*", re.IGNORECASE),
        rf"\1{REDACTED}",
    ),
    (re.compile(r"(\bbearer\s+)[A-Za-z0-9\-._~+/]+=*", re.IGNORECASE), rf"\1{REDACTED}"),
    # a digest response="..." without its header (e.g. an Authorization value logged alone)
    (re.compile(r"(\bresponse=\")[^\"]*(\")", re.IGNORECASE), rf"\1{REDACTED}\2"),
    # secrets in query strings
    (
        re.compile(
            r"([?&;](?:password|passwd|pass|pwd|token|access_token|secret|key|api_?key|auth|"
            r"sig|signature)=)[^&\s\"'#]+",
            re.IGNORECASE,
        ),
        r"\1****",
    ),
    # Slack webhook URLs are bearer credentials in their path
    (
        re.compile(r"(hooks\.slack\.com/(?:services|workflows|triggers)/)[^\s\"'<>]+"),
        r"\1****",
    ),
)


def redact_text(text: str) -> str:
    """Mask credentials inside free text (URLs with passwords, Authorization headers...)."""
    if not _TRIGGER.search(text):
        return text
    for pattern, replacement in _SUBSTITUTIONS:
        text = pattern.sub(replacement, text)
    return text


def is_secret_key(key: str) -> bool:
    return bool(_SECRET_KEY.search(key))


def _redact_value(value: Any, depth: int = 0) -> Any:
    if isinstance(value, str):
        return redact_text(value)
    if depth > 8:  # exception dicts nest a few levels; anything deeper is not worth walking
        return value
    if isinstance(value, Mapping):
        return {
            k: (
                REDACTED
                if isinstance(k, str) and is_secret_key(k) and _is_secret_payload(v)
                else _redact_value(v, depth + 1)
            )
            for k, v in value.items()
        }
    if isinstance(value, list | tuple):
        return [_redact_value(v, depth + 1) for v in value]
    return value


def _is_secret_payload(value: Any) -> bool:
    """A flag like ``has_password=True`` or a missing value says nothing secret."""
    return value is not None and not isinstance(value, bool)


def redact_secrets(_logger: WrappedLogger, _method: str, event_dict: EventDict) -> EventDict:
    """structlog processor: mask secret-named keys and credentials in every string value."""
    for key, value in list(event_dict.items()):
        if is_secret_key(key) and _is_secret_payload(value):
            event_dict[key] = REDACTED
        else:
            event_dict[key] = _redact_value(value)
    return event_dict


def escape_for_terminal(_logger: WrappedLogger, _method: str, event_dict: EventDict) -> EventDict:
    """structlog processor for the console renderer: log values carry usernames and
    User-Agents from the internet, and a raw ESC, BEL or bidi override in one would retitle
    or repaint the operator's terminal.  Control characters become visible escapes; only a
    traceback keeps its line breaks."""
    from sipwatch.diagnosis.text import display_text

    for key, value in list(event_dict.items()):
        if isinstance(value, str):
            if key == "exception":
                event_dict[key] = "\n".join(
                    display_text(line, _CONSOLE_VALUE_MAX) for line in value.split("\n")
                )
            else:
                event_dict[key] = display_text(value, _CONSOLE_VALUE_MAX)
    return event_dict


def _drop_formatter_artifacts(
    _logger: WrappedLogger, _method: str, event_dict: EventDict
) -> EventDict:
    """Another handler's Formatter may have set ``record.message``/``asctime`` before ours
    runs; ExtraAdder would copy them as if they were ``extra=`` fields."""
    event_dict.pop("message", None)
    event_dict.pop("asctime", None)
    return event_dict


def _level_number(level: str | int) -> int:
    if isinstance(level, int):
        return level
    try:
        return LOG_LEVELS[level.lower()]
    except KeyError:
        raise ValueError(
            f"unknown log level {level!r}; expected one of {', '.join(LOG_LEVELS)}"
        ) from None


def _is_tty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # closed or not a real stream
        return False


def configure(
    level: str | int = "info",
    fmt: Literal["auto", "json", "console"] | str = "auto",
    stream: TextIO | None = None,
    *,
    cache: bool = True,
) -> Literal["json", "console"]:
    """Set up structlog and the stdlib root logger to write to ``stream`` (default stdout).

    ``fmt`` "console" or ("auto" and ``stream`` is a terminal) gives the human-readable
    renderer, anything else one JSON object per line.  Calling it again replaces the previous
    setup (the stdlib handler is not duplicated).  ``cache=False`` keeps loggers
    reconfigurable, for tests.  Returns the renderer chosen.
    """
    out = sys.stdout if stream is None else stream
    number = _level_number(level)
    if fmt not in ("auto", "json", "console"):
        raise ValueError(f"unknown log format {fmt!r}; expected auto, json or console")
    console = fmt == "console" or (fmt == "auto" and _is_tty(out))

    shared: list[Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    renderer: Processor
    exceptions: Processor
    if console:
        # the traceback becomes a string first, so the redaction step sees it
        exceptions = structlog.processors.format_exc_info
        renderer = structlog.dev.ConsoleRenderer(
            colors=_is_tty(out), exception_formatter=structlog.dev.plain_traceback
        )
    else:
        exceptions = structlog.processors.ExceptionRenderer(
            structlog.tracebacks.ExceptionDictTransformer(show_locals=False)
        )
        renderer = structlog.processors.JSONRenderer()
    tail: list[Processor] = [exceptions, redact_secrets, renderer]
    if console:
        tail.insert(-1, escape_for_terminal)

    structlog.configure(
        processors=[*shared, structlog.processors.StackInfoRenderer(), *tail],
        wrapper_class=structlog.make_filtering_bound_logger(number),
        logger_factory=structlog.WriteLoggerFactory(file=out),
        cache_logger_on_first_use=cache,
    )

    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[
            *shared,
            structlog.stdlib.add_logger_name,
            structlog.stdlib.ExtraAdder(),
            _drop_formatter_artifacts,
        ],
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, *tail],
    )
    handler = logging.StreamHandler(out)
    handler.set_name(_HANDLER_NAME)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    for old in [h for h in root.handlers if h.get_name() == _HANDLER_NAME]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(number)
    # one access line per Prometheus scrape is noise unless debugging
    logging.getLogger("aiohttp.access").setLevel(max(number, logging.WARNING))
    # apprise and urllib3 print notification URLs, tokens in the path included, at DEBUG;
    # no redaction rule can know every service's URL shape, so they never log below INFO
    for noisy in ("apprise", "urllib3"):
        logging.getLogger(noisy).setLevel(max(number, logging.INFO))
    logging.captureWarnings(True)
    return "console" if console else "json"
