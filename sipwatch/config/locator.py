"""Map TOML key paths to line numbers (tomllib gives none), so errors point at a line."""

from __future__ import annotations

import bisect
import json
import re
from collections.abc import Sequence
from contextlib import suppress

from sipwatch.config.schema import KeyPath

# ---------------------------------------------------------------------------------------------
# Line numbers: tomllib gives none, so a small scanner maps key paths to lines
# ---------------------------------------------------------------------------------------------


def locate_keys(text: str) -> dict[KeyPath, int]:
    """Map every key path (and array element) of a *valid* TOML document to its 1-based line.

    Only used to point error messages at lines, so on anything unexpected it returns what it
    has found so far instead of failing.
    """
    scanner = _Locator(text)
    with suppress(IndexError, ValueError):
        scanner.document()
    return scanner.lines


class _Locator:
    _BARE = re.compile(r"[A-Za-z0-9_-]+")

    def __init__(self, text: str) -> None:
        self.s = text
        self.pos = 0
        self.starts = [0] + [m.end() for m in re.finditer("\n", text)]
        self.lines: dict[KeyPath, int] = {}
        self.table: KeyPath = ()
        self.aot_index: dict[KeyPath, int] = {}

    def line(self, pos: int) -> int:
        return bisect.bisect_right(self.starts, pos)

    def record(self, path: KeyPath, pos: int) -> None:
        self.lines.setdefault(path, self.line(pos))

    def skip_blank(self, newlines: bool) -> None:
        s = self.s
        while self.pos < len(s):
            c = s[self.pos]
            if c in " \t\r" or (newlines and c == "\n"):
                self.pos += 1
            elif c == "#":
                end = s.find("\n", self.pos)
                self.pos = len(s) if end < 0 else end
            else:
                return

    def document(self) -> None:
        s = self.s
        while True:
            self.skip_blank(newlines=True)
            if self.pos >= len(s):
                return
            start = self.pos
            if s.startswith("[[", start):
                self.pos += 2
                keys = self.key()
                self.pos = s.index("]]", self.pos) + 2
                parent = (*self.resolve(keys[:-1]), keys[-1])
                index = self.aot_index.get(parent, -1) + 1
                self.aot_index[parent] = index
                self.record(parent, start)
                self.table = (*parent, index)
                self.record(self.table, start)
            elif s[start] == "[":
                self.pos += 1
                keys = self.key()
                self.pos = s.index("]", self.pos) + 1
                self.table = self.resolve(keys)
                self.record(self.table, start)
            else:
                self.keyval(self.table)

    def resolve(self, keys: Sequence[str]) -> KeyPath:
        path: KeyPath = ()
        for k in keys:
            path = (*path, k)
            if path in self.aot_index:
                path = (*path, self.aot_index[path])
        return path

    def keyval(self, base: KeyPath) -> None:
        start = self.pos
        keys = self.key()
        for i in range(1, len(keys) + 1):
            self.record((*base, *keys[:i]), start)
        self.skip_blank(newlines=False)
        if self.s[self.pos] != "=":
            raise ValueError("expected =")
        self.pos += 1
        self.skip_blank(newlines=False)
        self.value((*base, *keys))

    def key(self) -> list[str]:
        keys = []
        s = self.s
        while True:
            self.skip_blank(newlines=False)
            c = s[self.pos]
            if c == '"':
                end = self.pos + 1
                while s[end] != '"':
                    end += 2 if s[end] == "\\" else 1
                keys.append(json.loads(s[self.pos : end + 1]))
                self.pos = end + 1
            elif c == "'":
                end = s.index("'", self.pos + 1)
                keys.append(s[self.pos + 1 : end])
                self.pos = end + 1
            else:
                m = self._BARE.match(s, self.pos)
                if m is None:
                    raise ValueError("expected a key")
                keys.append(m.group())
                self.pos = m.end()
            self.skip_blank(newlines=False)
            if self.pos < len(s) and s[self.pos] == ".":
                self.pos += 1
                continue
            return keys

    def value(self, path: KeyPath) -> None:
        s = self.s
        c = s[self.pos]
        if s.startswith('"""', self.pos) or s.startswith("'''", self.pos):
            quote = s[self.pos : self.pos + 3]
            end = self.pos + 3
            while not s.startswith(quote, end):
                end += 2 if (quote == '"""' and s[end] == "\\") else 1
            while s.startswith(quote[0], end + 3):  # up to two quotes may end the content
                end += 1
            self.pos = end + 3
        elif c == '"':
            end = self.pos + 1
            while s[end] != '"':
                end += 2 if s[end] == "\\" else 1
            self.pos = end + 1
        elif c == "'":
            self.pos = s.index("'", self.pos + 1) + 1
        elif c == "[":
            self.pos += 1
            index = 0
            while True:
                self.skip_blank(newlines=True)
                if s[self.pos] == "]":
                    self.pos += 1
                    return
                self.record((*path, index), self.pos)
                self.value((*path, index))
                self.skip_blank(newlines=True)
                if s[self.pos] == ",":
                    self.pos += 1
                index += 1
        elif c == "{":
            self.pos += 1
            while True:
                self.skip_blank(newlines=True)
                if s[self.pos] == "}":
                    self.pos += 1
                    return
                self.keyval(path)
                self.skip_blank(newlines=True)
                if s[self.pos] == ",":
                    self.pos += 1
        else:
            while self.pos < len(s) and s[self.pos] not in ",]}\n#\r":
                self.pos += 1
