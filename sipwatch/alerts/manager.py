"""AlertManager: turn diagnosed problems into incidents, and incidents into messages that
reach every target - soon, once, with true numbers, and with an end.

Why the shape:

* ``submit()`` is called from the pipeline's hot path, so it only does dictionary work and
  returns: no I/O, no awaiting, no exceptions.  Everything slow happens in one worker task
  per target.
* An alert belongs to an *incident* (``sipwatch.alerts.incidents``): one device's cause, one
  scanner source, one system fault.  The incident keeps exact counts; messages are made from
  it when they are sent, so they carry the latest numbers and never a sum of copies.
* Each target is a separate *lane* (its own routing, throttle, groups, queue, spool and
  worker).  A Slack webhook that hangs therefore delays only Slack; e-mail keeps going.
* **Time to know.**  A new incident is sent after ``group_wait_seconds`` (what arrives in
  that moment shares the message).  **Floods** are grouped per ``(kind, cause)``: at most
  ``FLOOD_BURST`` messages per ``group_window_seconds``; new incidents beyond that wait and go
  out together as one message (Alertmanager's group_wait / group_interval, with a small
  burst so that two unrelated problems of the same cause are not held back).
* **Throttle.**  After a message about an incident, nothing more is said about it for
  ``throttle_seconds`` (then an update if it continues); a worse severity is not throttled.
  An ending never resets the throttle.  An incident that really ended and fails again (a
  second registrar outage two minutes after the first) is news and is sent at once, but at
  most ``FLAP_LIMIT`` times per throttle window: a device flapping between failing and
  registering does not alert every 30 seconds.
* **Endings.**  An incident a target was told about gets an "ended" message there when it
  ends (``resolve_device``, ``end``, or going quiet); ended incidents are grouped the same way.
* **Nothing is lost to a target outage.**  Delivery retries with exponential backoff
  (``retry_max``).  A message whose retries fail is kept in the target's *spool* (at most
  ``spool_size``, the oldest dropped and counted); while the target is down new messages go
  to the spool too, and the oldest is retried on a capped backoff.  The first success sends
  the rest, oldest first, each marked as delayed.  A message is removed only after its
  target accepted it, so nothing is sent twice after a 200.
* A target's queue (waiting groups + ready messages) is bounded by ``max_queue``; the
  oldest entry is dropped and counted when it is full.
* Every attempt is bounded by ``timeout_seconds`` (apprise's own call timeout, the plugin
  socket timeouts, and an outer ``wait_for`` as the backstop).
* The target URL holds tokens.  It is revealed once, when the apprise plugin is built, and
  never logged or rendered; logs name the target by its configured name.

Metric results (``sipwatch_alerts_total{result}``): "sent" (accepted by the target),
"failed" (retries exhausted; the message waits in the spool), "retried", "throttled",
"deduplicated" (already waiting to be sent), "grouped" (joined a waiting flood message) and
"dropped" (lost: queue or spool full, or undelivered at shutdown).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import html
import random
import time
from collections import Counter, deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import structlog

from sipwatch.alerts.incidents import Incident, IncidentBook, Update
from sipwatch.alerts.model import (
    KINDS,
    SEVERITY_RANK,
    AlertInput,
    IncidentKey,
    Notice,
    normalise_severity,
)
from sipwatch.alerts.render import FORMATS, Rendered, render
from sipwatch.config import AlertsConfig, AlertTargetConfig, quiet_apprise
from sipwatch.waits import honour_cancellation, wait_event

log = structlog.get_logger("sipwatch.alerts")

RESULTS: tuple[str, ...] = (
    "sent",
    "failed",
    "retried",
    "throttled",
    "deduplicated",
    "dropped",
    "grouped",
)

BucketKey = tuple[str, str]  # kind, cause_id; ENDED for endings
ENDED: BucketKey = ("ended", "")

FLOOD_BURST = 3  # messages per (kind, cause) within group_window before grouping starts
FLAP_LIMIT = 2  # "failing again" messages per incident within throttle_seconds
LISTED = 10  # incidents listed in one message; the rest are counted
HARD_TIMEOUT_MARGIN = 2.0  # outer wait_for beyond apprise's own timeout
DEFAULT_BODY_MAX = 32_000
DROP_LOG_INTERVAL = 60.0


# --- per-target state -----------------------------------------------------------------------


@dataclass(slots=True)
class _Watch:
    """What one target was told about one incident."""

    notified: bool = False  # a problem message went out and no "ended" since
    told_ended: bool = False  # the last message about it said it ended
    sent_at: float = float("-inf")  # clock time of that message: the throttle
    severity: str = "info"  # its severity: an escalation is not throttled
    pending: bool = False  # waiting in a problem bucket
    ending: bool = False  # waiting in the ENDED bucket
    again: deque[float] = field(default_factory=deque)  # "failing again" messages (clock)


@dataclass(slots=True)
class _Bucket:
    """Incidents waiting to be sent together."""

    key: BucketKey
    serial: int
    due: float
    incidents: dict[IncidentKey, Incident] = field(default_factory=dict)


class _Lane:
    """One target: its routing, state, queue, spool and worker."""

    def __init__(
        self,
        config: AlertTargetConfig,
        name: str,
        notifier: Any,
        fmt: str,
        max_body: int,
        max_title: int,
    ) -> None:
        self.config = config
        self.name = name
        self.notifier = notifier  # apprise.Apprise with exactly this target
        self.fmt = fmt
        self.max_body = max_body
        self.max_title = max_title
        self.watch: dict[IncidentKey, _Watch] = {}
        self.buckets: dict[BucketKey, _Bucket] = {}
        self.sent: dict[BucketKey, deque[float]] = {}  # message times within the window
        self.outbound: deque[Notice] = deque()
        self.spool: deque[Notice] = deque()
        self.down_since: float | None = None
        self.probe_at = 0.0
        self.probes = 0
        self.wake = asyncio.Event()
        self.task: asyncio.Task[None] | None = None
        self.inflight: Notice | None = None
        self.drop_logged_at = float("-inf")

    def routes(self, alert: AlertInput, min_rank: int) -> bool:
        c = self.config
        if c.kind != "all" and c.kind != alert.kind:
            return False
        if c.causes and alert.cause_id not in c.causes:
            return False
        if c.severities:
            return alert.severity in c.severities
        return SEVERITY_RANK[alert.severity] >= min_rank

    def queued(self) -> int:
        return len(self.outbound) + len(self.buckets)

    def next_due(self) -> float | None:
        return min((b.due for b in self.buckets.values()), default=None)


def _format_of(plugin: Any) -> str:
    fmt: Any = None
    resolve = getattr(plugin, "resolve_format", None)
    if callable(resolve):
        with contextlib.suppress(Exception):
            fmt = resolve(None)
    if fmt is None:
        fmt = getattr(plugin, "notify_format", "text")
        if isinstance(fmt, tuple | list):
            fmt = fmt[0] if fmt else "text"
    value = str(getattr(fmt, "value", fmt)).lower()
    return value if value in FORMATS else "text"


def build_notifier(url: str, timeout: float) -> tuple[Any, Any] | None:
    """(apprise.Apprise, plugin) for one URL, or None if apprise rejects it.  The plugin's
    socket timeouts are lowered to ``timeout`` so an abandoned worker thread (apprise
    cannot interrupt a blocking send) is freed about as soon as we give up on it."""
    import apprise

    with quiet_apprise():
        plugin = apprise.Apprise.instantiate(url)
    if plugin is None:
        return None
    for attr in ("socket_connect_timeout", "socket_read_timeout"):
        current = getattr(plugin, attr, None)
        if isinstance(current, int | float) and not isinstance(current, bool):
            setattr(plugin, attr, min(float(current), timeout) if current else timeout)
    notifier = apprise.Apprise()
    notifier.add(plugin)
    return notifier, plugin


# --- the manager ----------------------------------------------------------------------------


class AlertManager:
    """See the module docstring.  Use from one event loop; ``submit``, ``resolve_device``
    and ``end`` are synchronous and safe to call before ``start()`` (messages wait in the
    bounded queues)."""

    def __init__(
        self,
        config: AlertsConfig,
        *,
        metrics: Any | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
        backoff_base: float = 1.0,
        backoff_max: float = 60.0,
    ) -> None:
        self._config = config
        self._metrics = metrics
        self._clock = clock
        self._wall = wall
        self._backoff_base = backoff_base
        self._backoff_max = backoff_max
        self._min_rank = SEVERITY_RANK[normalise_severity(config.min_severity)]
        self._timeout = float(config.timeout_seconds)
        self._serial = 0
        self._started = False
        self._closed = False
        self._draining = False
        self._hurry = asyncio.Event()  # set on stop(): skip backoff waits
        self.counts: Counter[tuple[str, str]] = Counter()
        self.book = IncidentBook(on_forget=self._forget)
        self.lanes: list[_Lane] = []
        for i, target in enumerate(config.targets):
            name = target.name or f"target{i + 1}"
            if target.url is None:
                log.error("alert target has no URL; disabled", target=name)
                continue
            built = build_notifier(target.url.reveal(), self._timeout)
            if built is None:
                log.error("alert target URL rejected by apprise; disabled", target=name)
                continue
            notifier, plugin = built
            body_max = getattr(plugin, "body_maxlen", 0)
            body_max = body_max if isinstance(body_max, int) and body_max > 0 else DEFAULT_BODY_MAX
            # 80%: apprise's Slack conversion turns "&" into "&amp;" and may grow the body.
            body_max = int(min(body_max, DEFAULT_BODY_MAX) * 0.8)
            title_max = getattr(plugin, "title_maxlen", 250)
            title_max = title_max if isinstance(title_max, int) else 250
            fmt = _format_of(plugin)
            self.lanes.append(_Lane(target, name, notifier, fmt, body_max, title_max))

    # -- public API ------------------------------------------------------------------------

    @property
    def target_names(self) -> tuple[str, ...]:
        return tuple(lane.name for lane in self.lanes)

    def queue_depth(self, target: str) -> int:
        """Messages waiting for ``target``: grouped, ready, and kept while it is down."""
        return sum(lane.queued() + len(lane.spool) for lane in self.lanes if lane.name == target)

    def spooled(self, target: str) -> int:
        """Undelivered messages kept for ``target`` until it answers again."""
        return sum(len(lane.spool) for lane in self.lanes if lane.name == target)

    def submit(self, alert: AlertInput) -> None:
        """Fold ``alert`` into its incident and queue a message for every target that routes
        it and is not throttled.  Never blocks, never raises."""
        try:
            self._submit(alert)
        except Exception as exc:  # a bug here must not take the pipeline down
            log.error("alert submit failed", error_type=type(exc).__name__)

    def resolve_device(self, user: str, domain: str, at: float, side: str = "inbound") -> None:
        """The device ``user@domain`` (``side``) registered successfully at log time ``at``:
        its own incidents end, and so does a registrar outage it proves over."""
        try:
            user, domain, side = str(user or ""), str(domain or ""), str(side or "inbound")
            at = at if isinstance(at, int | float) and not isinstance(at, bool) else 0.0
            self._ended(self.book.device_registered(user, domain, side, at))
        except Exception as exc:
            log.error("alert resolve failed", error_type=type(exc).__name__)

    def end(
        self, kind: str, cause_id: str, subject: str = "", *, at: float = 0.0, how: str = ""
    ) -> None:
        """End the incident ``(kind, cause_id, subject)`` (a system fault that is over: the
        database is reachable again, a log source is back); ``how`` says so in the message."""
        try:
            incident = self.book.end((kind, cause_id, subject), at or self._wall(), how)
            if incident is not None:
                self._ended([incident])
        except Exception as exc:
            log.error("alert end failed", error_type=type(exc).__name__)

    def take_over(self, previous: AlertManager) -> None:
        """Continue where ``previous`` (the manager before a configuration reload) left off:
        its incidents, and for each target of the same name what that target was told,
        its waiting and kept messages.  Without this a reload would re-announce every open
        problem and never announce their end.  Call before ``previous.stop()``."""
        self.book = previous.book
        self.book.on_forget = self._forget
        for lane in self.lanes:
            prev = next((p for p in previous.lanes if p.name == lane.name), None)
            if prev is None:
                continue  # a new target: it was told nothing yet
            lane.watch, prev.watch = prev.watch, {}
            lane.sent, prev.sent = prev.sent, {}
            lane.buckets, prev.buckets = prev.buckets, {}
            lane.outbound.extend(prev.outbound)
            lane.spool.extend(prev.spool)
            prev.outbound.clear()
            prev.spool.clear()
            lane.down_since, lane.probe_at = prev.down_since, prev.probe_at
            lane.probes = prev.probes
            lane.wake.set()

    async def start(self) -> None:
        if self._started or self._closed:
            return
        self._started = True
        for lane in self.lanes:
            lane.task = asyncio.create_task(self._run(lane), name=f"alerts:{lane.name}")

    async def stop(self, timeout: float = 10.0) -> None:  # noqa: ASYNC109 - a drain budget
        """Send what is queued and spooled (group windows are cut short, backoff waits
        skipped, a target that is down is tried once) for at most ``timeout`` seconds;
        whatever is still undelivered then is counted "dropped"."""
        if self._closed:
            return
        self._closed = True
        self._draining = True
        self._hurry.set()
        if not self._started:
            # Never started: deliver now, within the same deadline.
            self._started = True
            for lane in self.lanes:
                lane.task = asyncio.create_task(self._run(lane), name=f"alerts:{lane.name}")
        tasks = [lane.task for lane in self.lanes if lane.task is not None]
        for lane in self.lanes:
            lane.wake.set()
        if tasks:
            _done, pending = await asyncio.wait(tasks, timeout=max(timeout, 0.0))
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.gather(*pending, return_exceptions=True)
        for lane in self.lanes:
            in_spool = set(map(id, lane.spool))
            inflight = lane.inflight is not None and id(lane.inflight) not in in_spool
            lost = lane.queued() + len(lane.spool) + (1 if inflight else 0)
            lane.outbound.clear()
            lane.buckets.clear()
            lane.spool.clear()
            lane.inflight = None
            if lost:
                log.warning("alerts not delivered before shutdown", target=lane.name, lost=lost)
                self._count(lane, "dropped", lost)

    # -- intake ----------------------------------------------------------------------------

    def _count(self, lane: _Lane, result: str, n: int = 1) -> None:
        self.counts[(lane.name, result)] += n
        if self._metrics is not None:
            for _ in range(n):
                try:
                    self._metrics.observe_alert(lane.name, result)
                except Exception:
                    break

    def _submit(self, alert: AlertInput) -> None:
        alert = _coerce(alert)
        routed = [lane for lane in self.lanes if lane.routes(alert, self._min_rank)]
        if not routed:
            return
        if self._closed:
            for lane in routed:
                self._count(lane, "dropped")
            return
        now = self._clock()
        incident, state = self.book.update(alert, now)
        if state == "new" and incident.kind == "security" and alert.source_ip:
            self._withdraw(alert.source_ip)
        for lane in routed:
            self._admit(lane, incident, state, now)

    def _withdraw(self, source_ip: str) -> None:
        """A source turned out to be a scanner: its first guesses, diagnosed as ordinary
        device failures before there was enough evidence, are not announced as such if
        their message has not gone yet (they are part of the scanner's incident now)."""
        for lane in self.lanes:
            for key, bucket in list(lane.buckets.items()):
                if key[0] != "registration":
                    continue
                guesses = [
                    k for k, i in bucket.incidents.items() if i.sample.source_ip == source_ip
                ]
                for k in guesses:
                    del bucket.incidents[k]
                    watch = lane.watch.get(k)
                    if watch is not None:
                        watch.pending = False
                    self._count(lane, "grouped")
                if not bucket.incidents:
                    del lane.buckets[key]

    def _admit(self, lane: _Lane, incident: Incident, state: Update, now: float) -> None:
        watch = lane.watch.get(incident.key)
        if watch is None:
            watch = lane.watch[incident.key] = _Watch()
        if state == "stale" or watch.pending:
            # from before it ended, or the message about it is still waiting (and will
            # carry the new numbers): nothing to add
            self._count(lane, "deduplicated")
            return
        throttle = self._config.throttle_seconds
        if (
            now - watch.sent_at < throttle
            and SEVERITY_RANK[incident.severity] <= SEVERITY_RANK[watch.severity]
            and not self._news_again(watch, now)
        ):
            self._count(lane, "throttled")
            return
        watch.pending = True
        self._enqueue(lane, (incident.kind, incident.cause_id), incident, now)

    def _news_again(self, watch: _Watch, now: float) -> bool:
        """The target was told this incident ended and it is failing again: news, unless
        it already came back ``FLAP_LIMIT`` times within the throttle window (flapping)."""
        if not watch.told_ended:
            return False
        again = watch.again
        while again and now - again[0] >= self._config.throttle_seconds:
            again.popleft()
        return len(again) < FLAP_LIMIT

    def _enqueue(self, lane: _Lane, key: BucketKey, incident: Incident, now: float) -> None:
        bucket = lane.buckets.get(key)
        if bucket is None:
            bucket = self._open_bucket(lane, key, self._due(lane, key, now))
        elif incident.key not in bucket.incidents:
            self._count(lane, "grouped")
        bucket.incidents[incident.key] = incident
        lane.wake.set()

    def _due(self, lane: _Lane, key: BucketKey, now: float) -> float:
        """When a new message of this (kind, cause) may go: after ``group_wait`` unless the
        flood burst is used up, then when the window lets another one through."""
        window = self._config.group_window_seconds
        sent = lane.sent.get(key)
        if sent is None:
            sent = lane.sent[key] = deque()
        while sent and now - sent[0] >= window:
            sent.popleft()
        due = now + self._config.group_wait_seconds
        if len(sent) >= FLOOD_BURST:
            due = max(due, sent[-FLOOD_BURST] + window)
        return due

    def _open_bucket(self, lane: _Lane, key: BucketKey, due: float) -> _Bucket:
        while lane.queued() >= self._config.max_queue:
            self._drop_oldest(lane)
        self._serial += 1
        bucket = _Bucket(key=key, serial=self._serial, due=due)
        lane.buckets[key] = bucket
        return bucket

    def _drop_oldest(self, lane: _Lane) -> None:
        if lane.outbound:
            what = lane.outbound.popleft().cause_id
        else:
            oldest = min(lane.buckets.values(), key=lambda b: (b.due, b.serial))
            del lane.buckets[oldest.key]
            for key in oldest.incidents:
                watch = lane.watch.get(key)
                if watch is not None:
                    watch.pending = watch.ending = False
            what = oldest.key[1]
        self._count(lane, "dropped")
        self._log_drop(lane, "alert queue full; dropping the oldest", what)

    def _log_drop(self, lane: _Lane, event: str, what: str) -> None:
        now = self._clock()
        if now - lane.drop_logged_at >= DROP_LOG_INTERVAL:  # one line per minute, not per drop
            lane.drop_logged_at = now
            log.warning(
                event,
                target=lane.name,
                cause=what,
                dropped_total=self.counts[(lane.name, "dropped")],
            )

    def _forget(self, incident: Incident) -> None:
        """The book dropped an incident (memory bound): so do the lanes."""
        for lane in self.lanes:
            lane.watch.pop(incident.key, None)

    # -- endings ---------------------------------------------------------------------------

    def _ended(self, incidents: list[Incident]) -> None:
        if not incidents:
            return
        now = self._clock()
        for incident in incidents:
            for lane in self.lanes:
                watch = lane.watch.get(incident.key)
                if watch is None or not watch.notified:
                    continue
                watch.notified = False
                if watch.pending or watch.ending:
                    continue  # the waiting message will show it ended
                if not self._config.resolve_notices or self._closed:
                    continue
                watch.ending = True
                self._enqueue(lane, ENDED, incident, now)

    def _expire_quiet(self, now: float) -> None:
        self._ended(self.book.end_quiet(now, self._config.quiet_seconds))

    # -- flushing --------------------------------------------------------------------------

    def _flush_due(self, lane: _Lane, now: float, force: bool) -> None:
        due = [b for b in lane.buckets.values() if force or b.due <= now]
        due.sort(key=lambda b: (b.due, b.serial))
        for bucket in due:
            del lane.buckets[bucket.key]
            notice = self._notice_of(lane, bucket, now)
            if notice is not None:
                lane.outbound.append(notice)
                lane.sent.setdefault(bucket.key, deque()).append(now)

    def _notice_of(self, lane: _Lane, bucket: _Bucket, now: float) -> Notice | None:
        if bucket.key == ENDED:
            ended = []
            for incident in bucket.incidents.values():
                watch = lane.watch.get(incident.key)
                if watch is not None:
                    watch.ending = False
                if incident.open:  # failing again before the message went: not over
                    if watch is not None:
                        watch.notified = True
                    continue
                if watch is not None:
                    watch.told_ended = True
                ended.append(incident.view(update=False))
            if not ended:
                return None
            return Notice(
                notice="ended",
                severity="info",
                kind=ended[0].kind,
                cause_id="resolved",
                incidents=tuple(ended[:LISTED]),
                more=len(ended) - min(len(ended), LISTED),
                raised_at=self._wall(),
            )
        views = []
        for incident in bucket.incidents.values():
            watch = lane.watch.get(incident.key)
            update = watch is not None and watch.notified
            again = watch is not None and watch.told_ended and incident.open
            views.append(incident.view(update=update, again=again))
            if watch is not None:
                watch.pending = False
                watch.notified = incident.open
                watch.told_ended = not incident.open
                watch.sent_at = now
                watch.severity = incident.severity
                if again:
                    watch.again.append(now)
        if not views:
            return None
        severity = max((v.severity for v in views), key=lambda s: SEVERITY_RANK[s])
        kind, cause = bucket.key
        if len(views) > 1:
            views.sort(key=lambda v: (v.distinct_users, v.failures, v.devices), reverse=True)
        return Notice(
            notice="alert" if len(views) == 1 else "group",
            severity=severity,
            kind=kind,
            cause_id=cause,
            incidents=tuple(views[:LISTED]),
            more=len(views) - min(len(views), LISTED),
            failures=sum(v.failures for v in views),
            failures_capped=any(v.failures_capped for v in views),
            raised_at=self._wall(),
        )

    # -- delivery --------------------------------------------------------------------------

    async def _run(self, lane: _Lane) -> None:
        while True:
            try:
                if await self._run_once(lane):
                    return
            except Exception as exc:  # a bug must not silently end this target's alerts
                log.error("alert worker error", target=lane.name, error_type=type(exc).__name__)
                lane.inflight = None
                await asyncio.sleep(1.0)

    async def _run_once(self, lane: _Lane) -> bool:
        """Flush due buckets, deliver what is ready (or keep it while the target is down),
        then sleep until something is due or new arrives.  True when draining is done."""
        lane.wake.clear()  # before looking, so a submit() from here on wakes the wait below
        now = self._clock()
        self._expire_quiet(now)
        self._flush_due(lane, now, self._draining)
        gave_up = await self._deliver_ready(lane)
        if self._draining and (gave_up or not (lane.buckets or lane.outbound or lane.spool)):
            return True
        wake_at = [t for t in (lane.next_due(), self._probe_due(lane)) if t is not None]
        quiet = self.book.next_quiet(self._config.quiet_seconds)
        if quiet is not None:
            wake_at.append(quiet)
        delay = None if not wake_at else max(0.0, min(wake_at) - self._clock())
        await wait_event(lane.wake, delay)
        return False

    def _probe_due(self, lane: _Lane) -> float | None:
        return lane.probe_at if lane.down_since is not None and lane.spool else None

    async def _deliver_ready(self, lane: _Lane) -> bool:
        """Deliver the spool (oldest first) and the ready messages.  True when draining and
        the target is still down (the rest is lost)."""
        while True:
            self._flush_due(lane, self._clock(), self._draining)
            if lane.down_since is not None:
                while lane.outbound:  # the target is down: new messages wait behind the old
                    self._keep(lane, lane.outbound.popleft())
                if not lane.spool:
                    lane.down_since = None
                    continue
                if not self._draining and self._clock() < lane.probe_at:
                    return False
                notice = lane.spool[0]
                self._count(lane, "retried")
                if await self._deliver(lane, notice, retries=0):
                    if lane.spool and lane.spool[0] is notice:
                        lane.spool.popleft()
                    log.info(
                        "alert target reachable again; sending the kept messages",
                        target=lane.name,
                        kept=len(lane.spool),
                        down_seconds=round(self._clock() - lane.down_since, 1),
                    )
                    lane.down_since = None
                    lane.probes = 0
                    continue
                if self._draining:
                    return True
                lane.probes += 1
                lane.probe_at = self._clock() + self._backoff_delay(lane.probes)
                return False
            if lane.spool:
                notice, kept = lane.spool[0], True
            elif lane.outbound:
                notice, kept = lane.outbound.popleft(), False
            else:
                return False
            if await self._deliver(lane, notice, retries=self._config.retry_max):
                if kept and lane.spool and lane.spool[0] is notice:
                    lane.spool.popleft()
                continue
            self._count(lane, "failed")
            if not kept:
                self._keep(lane, notice)
            lane.down_since = self._clock()
            lane.probes = 1
            lane.probe_at = lane.down_since + self._backoff_delay(1)
            log.warning(
                "alert target unreachable; keeping undelivered messages until it answers",
                target=lane.name,
                kept=len(lane.spool),
                spool_size=self._config.spool_size,
            )
            if self._draining:
                return True

    def _keep(self, lane: _Lane, notice: Notice) -> None:
        """Spool an undelivered message (bounded: the oldest is dropped and counted)."""
        if not notice.delayed:
            notice = dataclasses.replace(notice, delayed=True)
        if self._config.spool_size <= 0:
            self._count(lane, "dropped")
            self._log_drop(lane, "alert target down and no spool; dropping", notice.cause_id)
            return
        while len(lane.spool) >= self._config.spool_size:
            dropped = lane.spool.popleft()
            self._count(lane, "dropped")
            self._log_drop(lane, "alert spool full; dropping the oldest", dropped.cause_id)
        lane.spool.append(notice)

    async def _deliver(self, lane: _Lane, notice: Notice, *, retries: int) -> bool:
        """Send one message, retrying up to ``retries`` times.  True when the target took it
        (or it can never be sent: a rendering bug is logged and the message dropped)."""
        try:
            rendered = render(notice, lane.fmt, max_body=lane.max_body, max_title=lane.max_title)
        except Exception as exc:  # a rendering bug must not kill the lane
            log.error("alert rendering failed", target=lane.name, error_type=type(exc).__name__)
            self._count(lane, "dropped")
            return True
        title, body = _place_title(rendered, lane.fmt, lane.max_title)
        attempt = 0
        lane.inflight = notice  # left set if cancelled: stop() counts it as lost
        while True:
            outcome = await self._attempt(lane, title, body, rendered.notify_type)
            if outcome == "ok":
                lane.inflight = None
                self._count(lane, "sent")
                return True
            if attempt >= retries:
                lane.inflight = None
                log.info(
                    "alert delivery failed",
                    target=lane.name,
                    cause=notice.cause_id,
                    outcome=outcome,
                    attempts=attempt + 1,
                )
                return False
            attempt += 1
            self._count(lane, "retried")
            log.info("alert delivery failed; retrying", target=lane.name, outcome=outcome)
            await self._backoff(attempt)

    async def _attempt(self, lane: _Lane, title: str, body: str, notify_type: str) -> str:
        """One delivery: "ok", "failure", "timeout" or "error:<Type>" (never the URL or the
        exception text, which for requests errors contains the URL)."""
        try:
            async with asyncio.timeout(self._timeout + HARD_TIMEOUT_MARGIN):
                result = await lane.notifier.async_notify(
                    body=body,
                    title=title,
                    notify_type=notify_type,
                    body_format=lane.fmt,
                    timeout=self._timeout,
                )
        except TimeoutError:
            return "timeout"
        except Exception as exc:
            return f"error:{type(exc).__name__}"
        finally:
            honour_cancellation()  # a stop must not be lost inside the HTTP or SMTP client
        if result:
            return "ok"
        status = getattr(result, "status", None)
        name = getattr(status, "name", None)
        return str(name).lower() if name else "failure"

    def _backoff_delay(self, retry: int) -> float:
        delay = min(self._backoff_max, self._backoff_base * float(2 ** min(retry - 1, 30)))
        return delay * random.uniform(0.8, 1.2)  # spread retries of several targets apart

    async def _backoff(self, retry: int) -> None:
        if self._hurry.is_set():
            return
        await wait_event(self._hurry, self._backoff_delay(retry))


# --- helpers --------------------------------------------------------------------------------


_STR_FIELDS = (
    "kind",
    "cause_id",
    "summary",
    "user",
    "domain",
    "source_ip",
    "x_reason",
    "side",
    "subject",
    "ends_when",
)


def _coerce(alert: AlertInput) -> AlertInput:
    """Repair a malformed alert (a bug upstream) rather than lose it: strings where strings
    belong, a known kind and severity, a positive count, a mapping of evidence."""
    changes: dict[str, Any] = {}
    for name in _STR_FIELDS:
        value = getattr(alert, name)
        if not isinstance(value, str):
            changes[name] = "" if value is None else str(value)
    kind = changes.get("kind", alert.kind)
    if kind not in KINDS:
        changes["kind"] = "system"
    if not changes.get("side", alert.side):
        changes["side"] = "inbound"
    severity = normalise_severity(alert.severity)
    if severity != alert.severity:
        changes["severity"] = severity
    for name in ("count", "distinct_users"):
        value = getattr(alert, name)
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            changes[name] = 1 if name == "count" else 0
    if not isinstance(alert.evidence, Mapping):
        changes["evidence"] = {}
    if not isinstance(alert.fix_steps, tuple):
        changes["fix_steps"] = ()
    if alert.fix_command is not None and not isinstance(alert.fix_command, str):
        changes["fix_command"] = str(alert.fix_command)
    if not isinstance(alert.user_agent, str):
        changes["user_agent"] = ""
    for name in ("first_seen", "last_seen"):
        value = getattr(alert, name)
        if not isinstance(value, int | float) or isinstance(value, bool):
            changes[name] = 0.0
    return dataclasses.replace(alert, **changes) if changes else alert


def _place_title(rendered: Rendered, fmt: str, max_title: int) -> tuple[str, str]:
    """Services without a title field (``title_maxlen`` 0, e.g. SMS) get it as the first
    line of the body, where it is escaped for the body's format."""
    if max_title > 0:
        return rendered.title, rendered.body
    if fmt == "html":
        head = f"<p><b>{html.escape(rendered.title, quote=True)}</b></p>\n"
    elif fmt == "markdown":
        head = f"**{rendered.title}**\n\n"
    else:
        head = f"{rendered.title}\n\n"
    return "", head + rendered.body
