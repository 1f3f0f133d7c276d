"""The CRI container log format: what the kubelet's runtime writes under ``/var/log/pods``.

``/var/log/pods/<namespace>_<pod>_<uid>/<container>/<restart>.log`` holds one entry per line::

    2026-01-01T00:00:00.123456789Z stderr F a whole line of drachtio output
    2026-01-01T00:00:00.223456789Z stdout P the first 16 KiB of a long pino li
    2026-01-01T00:00:00.223456790Z stdout F ne, and its end

The timestamp is RFC3339Nano (variable width: trailing zeros are dropped), the stream is
``stdout`` or ``stderr``, the tag is ``F`` (full: the entry ends a line) or ``P`` (partial: the
runtime cut a long line, the next entries *of the same stream* continue it), possibly
followed by more ``:``-separated tags (the format reserves them; only the first counts).

Why stdout and stderr are decoded apart: the runtime writes both streams of a container into
one file, so a partial stdout entry can be followed by a stderr entry before its ``F``.
Joining by file order would glue the two streams' text into one line.  Each stream is its own
framing channel (``Stream.STDOUT`` / ``Stream.STDERR``), exactly as in the Docker source.

This is plain per-line work in Python: CRI files are a node-local DaemonSet's input, not the
replay hot path, and every line needs its stream looked at anyway.
"""

from __future__ import annotations

import re

from sipwatch.model import Stream

__all__ = ["CriDecoder", "looks_like_cri"]

# timestamp, stream, tags, content.  The content may be empty ("...Z stdout F" + nothing is
# an empty line; the runtime then writes no space after the tag).
_CRI_LINE = re.compile(
    r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d{1,9})?(?:Z|[+-]\d\d:\d\d)) "
    r"(stdout|stderr) ([A-Z](?::[^ \n]*)?)(?: (.*))?\Z",
    re.DOTALL,
)
_MATCH = _CRI_LINE.match
_STREAMS = {"stdout": Stream.STDOUT, "stderr": Stream.STDERR}


def looks_like_cri(text: str) -> bool:
    """Whether the first non-empty line of ``text`` is a CRI log entry (format "auto")."""
    for line in text.split("\n", 8)[:8]:
        if line.strip():
            return _MATCH(line.rstrip("\r")) is not None
    return False


class CriDecoder:
    """CRI entries (whole lines of text) in, whole lines per stream out.

    One decoder lives as long as its container's log is followed, across rotated files: the
    runtime keeps writing a cut line into the next file.  Memory is bounded: a partial line
    that grows past ``max_line`` characters is emitted as a line of its own (counted in
    ``split_lines``).  Lines that are not CRI entries are dropped and counted in
    ``malformed``, as the kubelet does when it serves the same file.
    """

    __slots__ = ("_partial", "_partial_len", "malformed", "max_line", "split_lines")

    def __init__(self, max_line: int = 1 << 20) -> None:
        if max_line < 1:
            raise ValueError("max_line must be positive")
        self.max_line = max_line
        self._partial: dict[Stream, list[str]] = {Stream.STDOUT: [], Stream.STDERR: []}
        self._partial_len: dict[Stream, int] = {Stream.STDOUT: 0, Stream.STDERR: 0}
        self.malformed = 0
        self.split_lines = 0

    @property
    def pending(self) -> bool:
        """Whether a partial line is waiting for its end on either stream."""
        return any(self._partial.values())

    def feed(self, text: str) -> list[tuple[Stream, str]]:
        """Decode whole lines of CRI entries; return the completed lines, one text per stream.

        ``text`` must end at a line end (what :class:`~sipwatch.sources.textfile.LineDecoder`
        gives); a last piece without ``"\\n"`` is treated as a complete entry (end of input).
        """
        out: dict[Stream, list[str]] = {Stream.STDERR: [], Stream.STDOUT: []}
        lines = text.split("\n")
        if lines[-1] == "":
            lines.pop()
        partial = self._partial
        for line in lines:
            m = _MATCH(line)
            if m is None:
                if line.endswith("\r") and (m := _MATCH(line[:-1])) is not None:
                    pass  # a file that went through a CRLF conversion
                else:
                    if line.strip():
                        self.malformed += 1
                    continue
            stream = _STREAMS[m.group(2)]
            content = m.group(4) or ""
            if m.group(3)[0] == "P":
                partial[stream].append(content)
                self._partial_len[stream] += len(content)
                if self._partial_len[stream] > self.max_line:
                    self.split_lines += 1
                    out[stream].append(self._take(stream) + "\n")
                continue
            if partial[stream]:
                content = self._take(stream) + content
            out[stream].append(content + "\n")
        return [(stream, "".join(texts)) for stream, texts in out.items() if texts]

    def flush(self) -> list[tuple[Stream, str]]:
        """End of input: emit the partial lines that never got their ``F`` entry."""
        return [
            (stream, self._take(stream) + "\n")
            for stream in (Stream.STDERR, Stream.STDOUT)
            if self._partial[stream]
        ]

    def _take(self, stream: Stream) -> str:
        text = "".join(self._partial[stream])
        self._partial[stream] = []
        self._partial_len[stream] = 0
        return text
