"""Configuration problems: one located, human-readable message per thing that is wrong."""

from __future__ import annotations

import difflib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, get_args, get_origin

from sipwatch.config.schema import (
    is_table_type,
    table_array_item,
    toml_value,
    unwrap_optional,
)
from sipwatch.config.secrets import Secret

# ---------------------------------------------------------------------------------------------
# Errors
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ConfigProblem:
    """One thing wrong with the configuration, located as precisely as possible."""

    where: str  # the file, "environment variable X", or "configuration"
    line: int | None
    path: str  # "alerts.targets[1].url", or "" for the whole file
    message: str

    def __str__(self) -> str:
        location = self.where + (f":{self.line}" if self.line else "")
        return (
            f"{location}: {self.path}: {self.message}"
            if self.path
            else (f"{location}: {self.message}")
        )


class ConfigError(Exception):
    """The configuration is invalid; ``problems`` lists every problem found."""

    def __init__(self, problems: Sequence[ConfigProblem]) -> None:
        self.problems = tuple(problems)
        count = len(self.problems)
        head = f"{count} configuration problem{'s' if count != 1 else ''}"
        super().__init__(head + ":\n" + "\n".join(f"  {p}" for p in self.problems))


class BadValue(Exception):
    """A leaf value is invalid; the caller records it at its path."""


class AlreadyRecorded(Exception):
    """Problems below this point were already recorded."""


def format_number(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else repr(x)


def did_you_mean(word: str, candidates: Sequence[str]) -> str:
    match = difflib.get_close_matches(word, candidates, n=1, cutoff=0.6)
    return f"; did you mean '{match[0]}'?" if match else ""


def type_phrase(tp: Any) -> str:
    tp, _ = unwrap_optional(tp)
    if tp is bool:
        return "true or false"
    if tp is int:
        return "an integer"
    if tp is float:
        return "a number"
    if tp is str or tp is Secret:
        return "a string"
    if get_origin(tp) is Literal:
        return "one of " + ", ".join(f'"{c}"' for c in get_args(tp))
    if table_array_item(tp) is not None:
        return "an array of tables"
    if get_origin(tp) is tuple:
        return f"an array of {_plural(get_args(tp)[0])}"
    if is_table_type(tp) or get_origin(tp) is Mapping:
        return "a table"
    return str(tp)


def _plural(tp: Any) -> str:
    if get_origin(tp) is Literal:
        return "strings (" + ", ".join(f'"{c}"' for c in get_args(tp)) + ")"
    return {bool: "booleans", int: "integers", float: "numbers"}.get(tp, "strings")


def _toml_type_name(raw: Any) -> str:
    if isinstance(raw, bool):
        return "boolean"
    if isinstance(raw, int):
        return "integer"
    if isinstance(raw, float):
        return "float"
    if isinstance(raw, str):
        return "string"
    if isinstance(raw, list):
        return "array"
    if isinstance(raw, dict):
        return "table"
    return type(raw).__name__


def describe_got(raw: Any, secret: bool) -> str:
    if secret or isinstance(raw, list | dict):
        return f"got a {_toml_type_name(raw)}"
    text = toml_value(raw) if isinstance(raw, bool | int | float | str) else repr(raw)
    if len(text) > 60:
        text = text[:57] + "..."
    return f"got {_toml_type_name(raw)} {text}"
