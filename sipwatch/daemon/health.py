"""What ``/readyz`` and ``sipwatch_source_up`` say: the truth about each log source.

A source counts as up only while it really delivers what it should:

* it reports its own state (the Docker source per compose service: a stopped or crashed
  drachtio/registrar container is down until it runs again), or
* it answers ``health()`` (a followed file: down before the file exists, and when the path
  has been gone - renamed or deleted and not recreated - for longer than a rotation takes,
  even though the old descriptor is still open), and
* it is not *silent*: a stream that carried SIP steadily (``busy_per_minute`` messages a
  minute on average over the last ``window`` seconds) and then delivered nothing for
  ``silence_after`` seconds is down.  drachtio logs every SIP message, and devices
  re-register and ping continually, so a busy SBC whose log goes quiet has lost its log
  (or its SIP).  The registrar logs almost nothing per REGISTER at info level, so its
  quiet never counts: only streams that carried SIP are judged by their silence.

Time here is the wall clock (a live daemon's question), never log time.
"""

from __future__ import annotations

import time
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from sipwatch.model import SipMessage

MAX_STREAMS = 256  # SIP-carrying streams watched for silence (a deployment has a few)


@dataclass(slots=True)
class SourceState:
    """One source as ``/readyz`` reports it."""

    up: bool
    reason: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"up": self.up, "reason": self.reason} if self.reason else {"up": self.up}


@dataclass(slots=True)
class _Stream:
    minutes: deque[tuple[int, int]] = field(default_factory=deque)  # (minute, messages)
    last: float = 0.0  # wall clock of the newest message


class SipActivity:
    """Pipeline observer: when each stream last carried SIP, and how busily.

    Keyed by the message's ``source`` (a file, a container, a pod, ``hep/<id>``); bounded
    to ``MAX_STREAMS`` streams, the least recently active dropped first."""

    def __init__(self, *, window: float = 600.0, clock: Callable[[], float] = time.monotonic):
        self.window = window
        self._clock = clock
        self._streams: OrderedDict[str, _Stream] = OrderedDict()

    def observe_message(self, msg: SipMessage) -> None:
        now = self._clock()
        stream = self._streams.get(msg.source)
        if stream is None:
            stream = self._streams[msg.source] = _Stream()
            if len(self._streams) > MAX_STREAMS:
                self._streams.popitem(last=False)
        else:
            self._streams.move_to_end(msg.source)
        stream.last = now
        minute = int(now // 60)
        minutes = stream.minutes
        if minutes and minutes[-1][0] == minute:
            minutes[-1] = (minute, minutes[-1][1] + 1)
        else:
            minutes.append((minute, 1))
            oldest = minute - int(self.window // 60) - 1
            while minutes and minutes[0][0] < oldest:
                minutes.popleft()

    def silent(self, *, silence_after: float, busy_per_minute: float) -> dict[str, str]:
        """Streams that were busy and have delivered nothing for ``silence_after`` s."""
        now = self._clock()
        out: dict[str, str] = {}
        for name, stream in self._streams.items():
            quiet = now - stream.last
            if quiet < silence_after:
                continue
            # the rate before the silence began, over the window that ended then
            start = (stream.last - self.window) // 60
            before = sum(n for minute, n in stream.minutes if minute >= start)
            rate = before / (self.window / 60.0)
            if rate >= busy_per_minute:
                out[name] = (
                    f"no SIP for {int(quiet)} s after {rate:.0f} messages/min "
                    "(log or SIP traffic lost)"
                )
        return out


def source_states(
    sources: Iterable[tuple[str, object]],
    reported: Mapping[str, bool],
    silent: Mapping[str, str],
) -> dict[str, SourceState]:
    """Combine what sources report, their ``health()`` and the silence verdicts."""
    out: dict[str, SourceState] = {name: SourceState(up) for name, up in reported.items()}
    for name, source in sources:
        check = getattr(source, "health", None)
        if check is None:
            continue
        up, reason = check()
        if not up or name not in out:
            out[name] = SourceState(up, reason)
    for stream, reason in silent.items():
        # a demultiplexed channel ("<source>/<service>") belongs to its source
        owner = next((n for n in out if stream == n or stream.startswith(n + "/")), stream)
        out[owner] = SourceState(False, reason)
    return out
