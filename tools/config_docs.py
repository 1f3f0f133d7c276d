"""Render the configuration reference (Markdown) and the example file (TOML) from the schema.

Why generated: hand-written configuration docs drift from the code within a release.  Both
documents are produced from the dataclasses and ``setting()`` metadata in
``sipwatch.config``, and a test fails when the committed files differ from what this module
renders.  Regenerate with::

    python -m tools.config_docs > docs/configuration.md
    python -m tools.config_docs --example > examples/sipwatch.toml
"""

from __future__ import annotations

import argparse
import sys
import textwrap
from collections.abc import Iterator, Mapping, Sequence
from typing import Literal, get_args, get_origin

from sipwatch.config import (
    CONFIG_PATH_ENV,
    DEFAULT_CONFIG_PATHS,
    DEFAULT_LISTEN,
    GENERIC_ENV_PREFIX,
    AutoBool,
    Config,
    SchemaField,
    Secret,
    env_aliases,
    format_number,
    format_path,
    is_table_type,
    schema_fields,
    table_array_item,
    toml_value,
    unwrap_optional,
)

_WIDTH = 96


def _kind(sf: SchemaField) -> str:
    """Where a field goes in the file: a plain key, a sub-table, a key/value table, or an
    array of tables.  Plain keys must come before sub-tables in TOML."""
    if is_table_type(sf.type):
        return "table"
    if table_array_item(sf.type) is not None:
        return "array"
    if get_origin(sf.type) is Mapping:
        return "mapping"
    return "key"


def _ordered(cls: type) -> list[SchemaField]:
    order = {"key": 0, "mapping": 1, "table": 2, "array": 3}
    return sorted(schema_fields(cls), key=lambda sf: order[_kind(sf)])


def _type_text(sf: SchemaField) -> str:
    tp, _ = unwrap_optional(sf.type)
    meta = sf.meta
    if get_origin(tp) is Literal:
        return "one of " + ", ".join(f'`"{c}"`' for c in get_args(tp))
    if tp == AutoBool:
        return '`true`, `false` or `"auto"`'
    if get_origin(tp) is tuple:
        item = get_args(tp)[0]
        if get_origin(item) is Literal:
            return "array of " + ", ".join(f'`"{c}"`' for c in get_args(item))
        return "array of strings"
    if _kind(sf) == "mapping":
        value = get_args(sf.type)[1]
        return "table of " + ", ".join(f'`"{c}"`' for c in get_args(value))
    base = {bool: "boolean", int: "integer", float: "number", str: "string"}.get(tp, "string")
    if tp is Secret:
        base = "secret string"
    bounds = []
    if meta.positive:
        bounds.append("> 0")
    if meta.minimum is not None:
        bounds.append(f">= {format_number(meta.minimum)}")
    if meta.maximum is not None:
        bounds.append(f"<= {format_number(meta.maximum)}")
    return base + (f" ({', '.join(bounds)})" if bounds else "")


def _default_text(sf: SchemaField) -> str:
    if sf.required:
        return "required"
    if sf.meta.default_doc:
        return sf.meta.default_doc
    if sf.default is None:
        return "unset"
    if _kind(sf) == "mapping":
        return "`{}`"
    return f"`{toml_value(sf.default)}`"


def _description(sf: SchemaField) -> str:
    text = sf.meta.doc
    if sf.meta.env:
        text += f" Environment: `{sf.meta.env}`."
    if sf.meta.keys:
        text += " Keys: " + ", ".join(f"`{k}`" for k in sf.meta.keys) + "."
    return text


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def _sections(cls: type, prefix: tuple[str | int, ...]) -> Iterator[tuple[str, type, str]]:
    """(header, dataclass, header kind) for every table of the schema, depth first."""
    for sf in _ordered(cls):
        path = (*prefix, sf.name)
        if _kind(sf) == "table":
            yield format_path(path), sf.type, "table"
            yield from _sections(sf.type, path)
        elif _kind(sf) == "array":
            item = table_array_item(sf.type)
            assert item is not None
            yield format_path(path), item, "array"
            yield from _sections(item, path)


# ---------------------------------------------------------------------------------------------
# Markdown reference
# ---------------------------------------------------------------------------------------------


def render_markdown() -> str:
    env_rows = "\n".join(
        f"| `{name}` | `{format_path(path)}` |" for name, path in env_aliases().items()
    )
    search = ", ".join(f"`{p}`" for p in DEFAULT_CONFIG_PATHS)
    out = [
        "# sipwatch configuration reference",
        "",
        "<!-- Generated from the schema in sipwatch/config/schema.py by",
        "     `python -m tools.config_docs > docs/configuration.md`. Do not edit by hand. -->",
        "",
        "sipwatch reads **one TOML file**, applies environment overrides and validates the",
        "result once at start. Every setting has a default, so **no file at all is a valid",
        "configuration**: on a jambonz Docker host sipwatch then follows the `drachtio-sbc`",
        "and `registrar` / `sbc-sip-sidecar` containers through the Docker Engine",
        f"(`$DOCKER_HOST` or the local socket) and serves metrics on `{DEFAULT_LISTEN}`.",
        "The database, Redis and alert settings add diagnosis, notifications and remediation.",
        "",
        "A commented example with every key is in `examples/sipwatch.toml`.",
        "",
        "## Which file",
        "",
        "1. the path given on the command line (e.g. `sipwatch check-config PATH`); it must",
        "   exist;",
        f"2. else `${CONFIG_PATH_ENV}`; it must exist;",
        f"3. else {search} if it exists;",
        "4. else no file: built-in defaults plus the environment.",
        "",
        "## Precedence",
        "",
        "**environment > file > built-in default.** One exception: `DOCKER_HOST` is not",
        "sipwatch's own variable, so it only replaces the *default* of `sources.docker.url`;",
        "a `url` in the file wins over it.",
        "",
        "## Environment variables",
        "",
        "| Variable | Setting |",
        "|---|---|",
        env_rows,
        f"| `{CONFIG_PATH_ENV}` | the configuration file to read |",
        "| `DOCKER_HOST` | default of `sources.docker.url` (the file wins) |",
        "",
        f"Any setting can also be set as `{GENERIC_ENV_PREFIX}SECTION__KEY=value`: the key",
        "path in upper case, joined by double underscores, e.g.",
        "`SIPWATCH__SIP__TIMER_F_SECONDS=20` or `SIPWATCH__SOURCES__DOCKER__ENABLED=false`.",
        "",
        "- The value is parsed as TOML when the setting is not a string (`true`, `20`,",
        '  `["a", "b"]`); arrays of strings also accept `a,b`. String settings take the',
        "  value as is.",
        "- Entries of an array of tables that the file defines are addressed by index:",
        "  `SIPWATCH__ALERTS__TARGETS__0__URL=...` changes the first `[[alerts.targets]]`.",
        "- An empty value unsets the setting (back to its default).",
        "- Setting `x` from the environment discards `x_file` from the file, and the other way",
        "  round.",
        "- Setting the same key both by a named variable and the generic form is an error.",
        f"- Unknown `{GENERIC_ENV_PREFIX}...` names are errors, with a suggestion.",
        "",
        "## Secrets",
        "",
        "The database URL, the Redis URL, the jambonz encryption secret and apprise URLs are",
        "secrets. Each can be given inline, through its environment variable, or read from a",
        'file with the `*_file` key (`database.url_file = "/run/secrets/db_url"`, for Docker',
        "or systemd credentials); a key and its `_file` form are mutually exclusive. sipwatch",
        "never prints them unmasked: `check-config`, logs and error messages show",
        "`mysql://user:****@host/...` and apprise's privacy form (`slack://T...2/A...D/...`).",
        "",
        "## Checking a configuration",
        "",
        "`sipwatch check-config [PATH]` (or `python -m sipwatch.config [PATH]`) validates",
        "exactly as `sipwatch run` does. It prints `config OK: ...` and every effective",
        "setting with where it came from and exits 0, or lists every problem on stderr and",
        "exits 2. Each problem names the file, the line, the key path and what was expected:",
        "",
        "```",
        "config invalid: 2 problems",
        "  /etc/sipwatch/sipwatch.toml:14: alerts.targets[1].url: expected an apprise "
        "notification URL ...",
        "  /etc/sipwatch/sipwatch.toml:21: remediation.mod: unknown key; did you mean 'mode'?",
        "```",
        "",
        "Unknown keys are errors. Values are checked for type, range (ports 1-65535, positive",
        "timeouts), allowed values, URL scheme (`mysql://`, `redis://`/`rediss://`, apprise",
        "URLs are parsed by apprise without sending anything) and time zone names.",
    ]
    for header, cls, kind in _sections(Config, ()):
        out += [
            "",
            f"## `{'[[' if kind == 'array' else '['}{header}{']]' if kind == 'array' else ']'}`",
        ]
        out += ["", " ".join((cls.__doc__ or "").split())]
        if kind == "array":
            out += ["", "An array of tables: repeat the block once per entry."]
        rows = [sf for sf in _ordered(cls) if _kind(sf) in ("key", "mapping")]
        if not rows:
            continue
        out += ["", "| Key | Type | Default | Description |", "|---|---|---|---|"]
        for sf in rows:
            out.append(
                f"| `{sf.name}` | {_cell(_type_text(sf))} | {_cell(_default_text(sf))} "
                f"| {_cell(_description(sf)).replace('*', chr(92) + '*')} |"
            )
    return "\n".join(out) + "\n"


# ---------------------------------------------------------------------------------------------
# Example file
# ---------------------------------------------------------------------------------------------


def _comment(text: str, prefix: str = "# ") -> list[str]:
    return textwrap.wrap(
        " ".join(text.split()), width=_WIDTH, initial_indent=prefix, subsequent_indent=prefix
    )


def _example_keys(cls: type, block: bool) -> list[str]:
    """Key lines of one table.  In a section, keys with a default are active and the others
    commented out.  In a ``block`` (an array-of-tables entry the caller comments out as a
    whole) every key is active except the ``*_file`` alternatives, which stay commented, so
    uncommenting the block once gives a valid entry."""
    lines: list[str] = []
    for sf in _ordered(cls):
        if _kind(sf) != "key":
            continue
        note = sf.meta.doc
        if sf.meta.env:
            note += f" Environment: {sf.meta.env}."
        if sf.meta.default_doc:
            note += f" Default: {sf.meta.default_doc}."
        if lines:
            lines.append("#")
        lines += _comment(note)
        if block:
            value = sf.meta.example or toml_value(sf.default)
            lead = "# " if sf.meta.file_for else ""
        elif sf.default is None or sf.required:
            value, lead = sf.meta.example or '""', "# "
        else:
            value, lead = toml_value(sf.default), ""
        lines.append(f"{lead}{sf.name} = {value}")
    return lines


def _example_section(cls: type, header: str) -> list[str]:
    lines = ["", *_comment(" ".join((cls.__doc__ or "").split())), f"[{header}]"]
    lines += _example_keys(cls, block=False)
    for sf in _ordered(cls):
        path = f"{header}.{sf.name}"
        if _kind(sf) == "mapping":
            lines += ["", *_comment(_description(sf)), f"[{path}]"]
            lines += [f'# {key} = "dry-run"' for key in sf.meta.keys or ()]
        elif _kind(sf) == "table":
            lines += _example_section(sf.type, path)
        elif _kind(sf) == "array":
            item = table_array_item(sf.type)
            assert item is not None
            lines += ["", *_comment(" ".join((item.__doc__ or "").split()))]
            lines += _comment(sf.meta.doc + " Repeat the block for more entries.")
            lines += [f"# [[{path}]]"]
            lines += [f"# {line}" for line in _example_keys(item, block=True)]
    return lines


def render_example() -> str:
    out = [
        "# sipwatch configuration example.",
        "#",
        "# Generated from the schema by `python -m tools.config_docs --example`; the full",
        "# reference is docs/configuration.md.  Every active line shows the built-in default,",
        "# so this file as shipped behaves exactly like having no file at all.  Commented keys",
        "# have no default; remove the leading '# ' to set them.",
        "#",
        "# Precedence: environment > this file > defaults.  Secrets (database.url, redis.url,",
        "# jambonz.encryption_secret, alert URLs) can come from the environment or *_file keys",
        "# instead of this file.  Check a file with `sipwatch check-config PATH`.",
    ]
    for sf in schema_fields(Config):
        out += _example_section(sf.type, sf.name)
    return "\n".join(out) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tools.config_docs",
        description="Print the configuration reference (Markdown) or the example file.",
    )
    parser.add_argument(
        "--example", action="store_true", help="print the example TOML file instead"
    )
    args = parser.parse_args(argv)
    sys.stdout.write(render_example() if args.example else render_markdown())
    return 0


if __name__ == "__main__":
    sys.exit(main())
