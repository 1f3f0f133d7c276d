"""Whole-line text of a log file, synchronously: the reading half ``replay`` needs.

Split from :mod:`sipwatch.sources.file` (the asyncio ``tail -F`` source, which uses these
too) so a replay imports neither asyncio nor the follower: a replay's start-up is part of
every replay's cost (``bench/bench_replay.py``).

:class:`LineDecoder` is the one line-assembly implementation of every byte source (files,
followed files, stdin); :class:`TextFileReader` reads a plain or gzip file with it.
"""

from __future__ import annotations

import codecs
import gzip
import io
from collections.abc import Iterator
from pathlib import Path

__all__ = [
    "DEFAULT_MAX_LINE",
    "DEFAULT_READ_SIZE",
    "LineDecoder",
    "TextFileReader",
    "iter_text_chunks",
    "open_maybe_gzip",
]

# Measured (bench: 66 MB drachtio log, decode + str.split downstream): 64-256 KiB reads run
# ~3x faster than 1 MiB ones, because a 1 MiB read becomes a 1-2 MiB str that no longer fits
# in L2 next to the bytes it came from.  128 KiB is still only ~500 reads per 66 MB.
DEFAULT_READ_SIZE = 128 << 10
# A line longer than this (bytes) is cut in two.  Log content is attacker-controlled: without
# a cap, a writer that never emits "\n" would make us buffer the whole file.  drachtio caps
# its own lines at 8 KiB, so 1 MiB only ever bites on garbage.
DEFAULT_MAX_LINE = 1 << 20

# gzip magic + CM=8 (deflate, the only method).  A text log never starts with these bytes.
_GZIP_MAGIC = b"\x1f\x8b\x08"


class LineDecoder:
    """Turns a byte stream, fed in arbitrary pieces, into text made of whole lines.

    The cut is made on the *bytes* at the last ``b"\\n"``: UTF-8 never uses 0x0A inside a
    multi-byte sequence, so no character can straddle the cut and one ``decode`` call per
    piece is all the per-chunk work there is.  The incremental decoder (``errors="replace"``)
    still matters when an over-long line is cut at ``max_line``, which can land inside a
    character; it then carries the partial character into the next piece.  Invalid bytes
    become U+FFFD and never raise.

    Invariant: ``"".join(feed(p) for p in pieces) + flush()`` equals
    ``b"".join(pieces).decode("utf-8", "replace")`` unless a line exceeded ``max_line``, in
    which case a ``"\\n"`` was inserted at each cut (counted in ``split_lines``).
    """

    __slots__ = ("_decode", "_tail", "max_line", "split_lines")

    def __init__(self, max_line: int = DEFAULT_MAX_LINE) -> None:
        if max_line < 1:
            raise ValueError("max_line must be positive")
        self._decode = codecs.getincrementaldecoder("utf-8")("replace").decode
        self._tail = bytearray()  # bytes after the last "\n" seen so far
        self.max_line = max_line
        self.split_lines = 0

    @property
    def pending(self) -> int:
        """Bytes held back because their line is not complete yet."""
        return len(self._tail)

    def feed(self, data: bytes) -> str:
        """Return the whole lines completed by ``data`` ("" when none completed)."""
        cut = data.rfind(b"\n") + 1
        tail = self._tail
        if not cut:
            tail += data
            return self._split() if len(tail) > self.max_line else ""
        if tail:
            tail += memoryview(data)[:cut]
            text = self._decode(tail)
            tail.clear()
        elif cut == len(data):
            text = self._decode(data)
        else:
            text = self._decode(memoryview(data)[:cut])
        if cut < len(data):
            tail += memoryview(data)[cut:]
            if len(tail) > self.max_line:
                text += self._split()
        return text

    def flush(self) -> str:
        """End of input: return whatever is held back (an unterminated last line), decoded."""
        text = self._decode(self._tail, True)
        self._tail.clear()
        return text

    def _split(self) -> str:
        self.split_lines += 1
        text = self._decode(self._tail) + "\n"
        self._tail.clear()
        return text


def open_maybe_gzip(path: Path) -> gzip.GzipFile | io.FileIO:
    """Open ``path`` for binary reading, decompressing it if it is gzip.

    Detection is by magic number, not by name, so ``drachtio.log.2`` compressed without a
    ``.gz`` suffix works too; non-seekable paths (``<(zcat ...)``) fall back to the suffix.
    """
    raw = open(path, "rb", buffering=0)  # noqa: SIM115 - ownership passes to the caller
    try:
        if raw.seekable():
            is_gzip = raw.read(3) == _GZIP_MAGIC
            raw.seek(0)
        else:
            is_gzip = path.suffix == ".gz"
        if is_gzip:
            return gzip.GzipFile(fileobj=raw, mode="rb")
    except BaseException:
        raw.close()
        raise
    return raw


class TextFileReader:
    """Synchronous whole-line reader of one plain or gzip file: the ``replay`` hot path.

    Iterating yields strings of whole lines, about ``read_size`` bytes each, the last one
    possibly unterminated.  ``bytes_read`` counts (decompressed) bytes consumed so far.
    A gzip file that ends early (still being compressed, or damaged) yields everything it
    could decode and then raises :class:`gzip.BadGzipFile` (an ``OSError``).
    """

    def __init__(
        self,
        path: str | Path,
        *,
        read_size: int = DEFAULT_READ_SIZE,
        max_line: int = DEFAULT_MAX_LINE,
    ) -> None:
        if read_size < 1:
            raise ValueError("read_size must be positive")
        self.path = Path(path)
        self.read_size = read_size
        self.decoder = LineDecoder(max_line)
        self.bytes_read = 0

    def __iter__(self) -> Iterator[str]:
        feed = self.decoder.feed
        size = self.read_size
        with open_maybe_gzip(self.path) as f:
            read = f.read
            while True:
                try:
                    data = read(size)
                except EOFError as exc:  # gzip stream cut short
                    rest = self.decoder.flush()
                    if rest:
                        yield rest
                    raise gzip.BadGzipFile(f"{self.path}: {exc}") from exc
                if not data:
                    break
                self.bytes_read += len(data)
                text = feed(data)
                if text:
                    yield text
        rest = self.decoder.flush()
        if rest:
            yield rest


def iter_text_chunks(
    path: str | Path, *, read_size: int = DEFAULT_READ_SIZE, max_line: int = DEFAULT_MAX_LINE
) -> Iterator[str]:
    """Whole-line text chunks of a plain or gzip file, synchronously (benchmarks, replay)."""
    return iter(TextFileReader(path, read_size=read_size, max_line=max_line))
