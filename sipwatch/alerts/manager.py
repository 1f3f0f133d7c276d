"""AlertManager: route, de-duplicate, throttle, group and deliver alerts through apprise.

Why the shape:

* ``submit()`` is called from the pipeline's hot path, so it only does dictionary work and
  returns: no I/O, no awaiting, no exceptions.  Everything slow happens in one worker task
  per target.
* Each target is a separate *lane* (its own routing, throttle state, group buckets, queue
  and worker).  A Slack webhook that hangs therefore delays only Slack; e-mail keeps going.
* Throttling is per ``(kind, cause_id, user, domain)`` (plus the source IP for security
  alerts: a scanner is identified by its address, not by the usernames it tries), for
  ``throttle_seconds``.  Copies that arrive while the first is still waiting to be sent are
  merged into it ("deduplicated"); copies after it was sent are counted ("throttled") and
  mentioned in the next notice for that key.
* Grouping is Alertmanager's ``group_wait``: the first alert of a ``(kind, cause_id)`` opens
  a bucket that is sent ``group_window_seconds`` later, and every alert of that cause that
  arrives meanwhile joins it ("grouped").  A scanner trying 1,000 usernames is one message
  listing the top sources, not 1,000 messages.  A bucket holding a single key is rendered
  as a full single alert.
* A target's queue (waiting buckets + rendered notices) is bounded by ``max_queue``; the
  oldest entry is dropped and counted when it is full, so a dead endpoint costs bounded
  memory and the newest information survives.
* Delivery retries with exponential backoff (``retry_max``); every attempt is bounded by
  ``timeout_seconds`` (apprise's own call timeout, the plugin socket timeouts, and an outer
  ``wait_for`` as the backstop).
* The target URL holds tokens.  It is revealed once, when the apprise plugin is built, and
  never logged or rendered; logs name the target by its configured name.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import html
import random
import time
from collections import Counter, OrderedDict, deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import structlog

from sipwatch.alerts.model import (
    SEVERITY_RANK,
    AlertInput,
    Notice,
    Offender,
    Recovery,
    normalise_severity,
)
from sipwatch.alerts.render import FORMATS, Rendered, render
from sipwatch.config import AlertsConfig, AlertTargetConfig, quiet_apprise

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

DedupeKey = tuple[str, str, str, str, str]  # kind, cause_id, user, domain, source_ip
BucketKey = tuple[str, str]  # kind, cause_id ("resolved", "" for recoveries)
RESOLVED_BUCKET: BucketKey = ("resolved", "")

THROTTLE_ENTRIES = 10_000  # throttle records per target (oldest evicted first)
OPEN_ENTRIES = 10_000  # users with an alert that may later be resolved, per target
OPEN_CAUSES = 5  # causes remembered per open user
OFFENDERS_TRACKED = 256  # per group bucket; the rest are counted as "more"
OFFENDERS_LISTED = 10
DISTINCT_BUDGET = 4096  # distinct usernames remembered per bucket (then "4,096+")
RECOVERIES_TRACKED = 200
HARD_TIMEOUT_MARGIN = 2.0  # outer wait_for beyond apprise's own timeout
DEFAULT_BODY_MAX = 32_000
DROP_LOG_INTERVAL = 60.0


# --- per-target state -----------------------------------------------------------------------


@dataclass(slots=True)
class _ThrottleRecord:
    accepted_at: float  # clock time the key last went into a bucket
    bucket_serial: int  # which bucket it went into
    severity: str  # the severity it was accepted with: an escalation is not throttled
    suppressed: int = 0  # throttled copies since then


@dataclass(slots=True)
class _Tally:
    alerts: int = 0
    failures: int = 0
    users: set[int] = field(default_factory=set)
    users_capped: bool = False


@dataclass(slots=True)
class _Bucket:
    """Alerts of one ``(kind, cause_id)`` waiting for the end of their group window."""

    key: BucketKey
    serial: int
    due: float
    severity: str = "info"
    sample: AlertInput | None = None
    first_key: DedupeKey | None = None
    mixed: bool = False  # more than one dedupe key
    alerts: int = 0
    failures: int = 0
    repeats: int = 0
    first_seen: float = 0.0
    last_seen: float = 0.0
    offenders: dict[str, _Tally] = field(default_factory=dict)
    other_offender_alerts: int = 0
    distinct: set[int] = field(default_factory=set)
    distinct_capped: bool = False
    budget: int = DISTINCT_BUDGET
    recoveries: list[Recovery] = field(default_factory=list)
    other_recoveries: int = 0


@dataclass(slots=True)
class _OpenProblem:
    causes: list[str]


class _Lane:
    """One target: its routing, state, queue and worker."""

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
        self.buckets: dict[BucketKey, _Bucket] = {}
        self.outbound: deque[Notice] = deque()
        self.throttle: OrderedDict[DedupeKey, _ThrottleRecord] = OrderedDict()
        self.open: OrderedDict[tuple[str, str], _OpenProblem] = OrderedDict()
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
    """See the module docstring.  Use from one event loop; ``submit``/``resolve`` are
    synchronous and safe to call before ``start()`` (alerts wait in the bounded queues)."""

    def __init__(
        self,
        config: AlertsConfig,
        *,
        metrics: Any | None = None,
        clock: Callable[[], float] = time.monotonic,
        backoff_base: float = 1.0,
        backoff_max: float = 60.0,
    ) -> None:
        self._config = config
        self._metrics = metrics
        self._clock = clock
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
        return sum(lane.queued() for lane in self.lanes if lane.name == target)

    def submit(self, alert: AlertInput) -> None:
        """Queue ``alert`` for every target that routes it.  Never blocks, never raises."""
        try:
            self._submit(alert)
        except Exception as exc:  # a bug here must not take the pipeline down
            log.error("alert submit failed", error_type=type(exc).__name__)

    def resolve(self, user: str, domain: str, at: float) -> None:
        """``user@domain`` registered successfully: forget its throttle state and, where a
        target was alerted about it, queue a "resolved" notice there."""
        try:
            self._resolve(user, domain, at)
        except Exception as exc:
            log.error("alert resolve failed", error_type=type(exc).__name__)

    async def start(self) -> None:
        if self._started or self._closed:
            return
        self._started = True
        for lane in self.lanes:
            lane.task = asyncio.create_task(self._run(lane), name=f"alerts:{lane.name}")

    async def stop(self, timeout: float = 10.0) -> None:  # noqa: ASYNC109 - a drain budget
        """Send what is queued (group windows are cut short, backoff waits skipped) for at
        most ``timeout`` seconds; whatever is still undelivered then is counted "dropped"."""
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
            lost = lane.queued() + (1 if lane.inflight is not None else 0)
            lane.outbound.clear()
            lane.buckets.clear()
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
        now = self._clock()
        for lane in self.lanes:
            if not lane.routes(alert, self._min_rank):
                continue
            if self._closed:
                self._count(lane, "dropped")
                continue
            self._admit(lane, alert, now)

    def _admit(self, lane: _Lane, alert: AlertInput, now: float) -> None:
        domain = alert.domain.lower()
        ip = alert.source_ip if alert.kind == "security" else ""
        key: DedupeKey = (alert.kind, alert.cause_id, alert.user, domain, ip)
        if alert.kind == "registration" and alert.user:
            self._remember_open(lane, (alert.user, domain), alert.cause_id)

        bucket_key: BucketKey = (alert.kind, alert.cause_id)
        bucket = lane.buckets.get(bucket_key)
        record = lane.throttle.get(key)
        if record is not None and bucket is not None and record.bucket_serial == bucket.serial:
            # The same problem again while its notice is still waiting: merge.
            self._add_to_bucket(lane, bucket, alert, key)
            self._count(lane, "deduplicated")
            return
        if (
            record is not None
            and now - record.accepted_at < self._config.throttle_seconds
            and SEVERITY_RANK[alert.severity] <= SEVERITY_RANK[record.severity]
        ):
            record.suppressed += 1
            self._count(lane, "throttled")
            return

        repeats = record.suppressed if record is not None else 0
        if bucket is None:
            bucket = self._open_bucket(lane, bucket_key, now)
        else:
            self._count(lane, "grouped")
        self._add_to_bucket(lane, bucket, alert, key)
        bucket.repeats += repeats
        lane.throttle[key] = _ThrottleRecord(now, bucket.serial, alert.severity)
        lane.throttle.move_to_end(key)
        self._trim_throttle(lane, now)
        lane.wake.set()

    def _open_bucket(self, lane: _Lane, key: BucketKey, now: float) -> _Bucket:
        while lane.queued() >= self._config.max_queue:
            self._drop_oldest(lane)
        self._serial += 1
        bucket = _Bucket(key=key, serial=self._serial, due=now + self._config.group_window_seconds)
        lane.buckets[key] = bucket
        return bucket

    def _drop_oldest(self, lane: _Lane) -> None:
        if lane.outbound:
            dropped = lane.outbound.popleft()
            what = dropped.cause_id
        else:
            oldest = min(lane.buckets.values(), key=lambda b: b.due)
            del lane.buckets[oldest.key]
            what = oldest.key[1]
        self._count(lane, "dropped")
        now = self._clock()
        if now - lane.drop_logged_at >= DROP_LOG_INTERVAL:  # one line per minute, not per drop
            lane.drop_logged_at = now
            log.warning(
                "alert queue full; dropping the oldest",
                target=lane.name,
                cause=what,
                dropped_total=self.counts[(lane.name, "dropped")],
            )

    def _add_to_bucket(
        self, lane: _Lane, bucket: _Bucket, alert: AlertInput, key: DedupeKey
    ) -> None:
        failures = alert.count
        bucket.alerts += 1
        bucket.failures += failures
        if bucket.sample is None:
            bucket.sample = alert
            bucket.first_key = key
        elif key != bucket.first_key:
            bucket.mixed = True
        if SEVERITY_RANK[alert.severity] > SEVERITY_RANK[bucket.severity] or bucket.alerts == 1:
            bucket.severity = alert.severity
        if alert.first_seen and (not bucket.first_seen or alert.first_seen < bucket.first_seen):
            bucket.first_seen = alert.first_seen
        if alert.last_seen and alert.last_seen > bucket.last_seen:
            bucket.last_seen = alert.last_seen

        label = _offender_label(alert)
        tally = bucket.offenders.get(label)
        if tally is None:
            if len(bucket.offenders) >= OFFENDERS_TRACKED:
                bucket.other_offender_alerts += 1
                return
            tally = bucket.offenders[label] = _Tally()
        tally.alerts += 1
        tally.failures += failures
        if alert.kind == "security" and alert.user:
            token = hash((alert.user, alert.domain.lower()))
            if token not in tally.users:
                if bucket.budget > 0:
                    tally.users.add(token)
                    bucket.budget -= 1
                else:
                    tally.users_capped = True
            if token not in bucket.distinct:
                if len(bucket.distinct) < DISTINCT_BUDGET:
                    bucket.distinct.add(token)
                else:
                    bucket.distinct_capped = True

    def _trim_throttle(self, lane: _Lane, now: float) -> None:
        throttle = lane.throttle
        window = self._config.throttle_seconds
        while throttle:
            record = next(iter(throttle.values()))
            if len(throttle) > THROTTLE_ENTRIES:
                throttle.popitem(last=False)
            elif now - record.accepted_at >= window and not _pending(lane, record.bucket_serial):
                # Expired, and its bucket is gone (a pending one still needs it to merge
                # copies, even with throttle_seconds = 0).
                throttle.popitem(last=False)
            else:
                break

    def _remember_open(self, lane: _Lane, who: tuple[str, str], cause: str) -> None:
        problem = lane.open.get(who)
        if problem is None:
            problem = lane.open[who] = _OpenProblem(causes=[])
        if cause not in problem.causes and len(problem.causes) < OPEN_CAUSES:
            problem.causes.append(cause)
        lane.open.move_to_end(who)
        while len(lane.open) > OPEN_ENTRIES:
            lane.open.popitem(last=False)

    def _resolve(self, user: str, domain: str, at: float) -> None:
        user, domain = str(user or ""), str(domain or "")
        at = at if isinstance(at, int | float) and not isinstance(at, bool) else 0.0
        who = (user, domain.lower())
        now = self._clock()
        for lane in self.lanes:
            problem = lane.open.pop(who, None)
            if problem is None:
                continue
            # The incident is over: a new failure of this user must alert at once.
            for cause in problem.causes:
                lane.throttle.pop(("registration", cause, user, who[1], ""), None)
            if not self._config.resolve_notices or self._closed:
                continue
            bucket = lane.buckets.get(RESOLVED_BUCKET)
            if bucket is None:
                bucket = self._open_bucket(lane, RESOLVED_BUCKET, now)
            if len(bucket.recoveries) < RECOVERIES_TRACKED:
                bucket.recoveries.append(Recovery(user, domain, at, tuple(problem.causes)))
            else:
                bucket.other_recoveries += 1
            lane.wake.set()

    # -- flushing --------------------------------------------------------------------------

    def _flush_due(self, lane: _Lane, now: float, force: bool) -> None:
        due = [b for b in lane.buckets.values() if force or b.due <= now]
        due.sort(key=lambda b: (b.due, b.serial))
        for bucket in due:
            del lane.buckets[bucket.key]
            lane.outbound.append(_notice_of(bucket))

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
        """Flush due buckets, deliver the queue, then sleep until the next bucket is due or
        something new arrives.  True when draining is complete."""
        lane.wake.clear()  # before looking, so a submit() from here on wakes the wait below
        self._flush_due(lane, self._clock(), self._draining)
        while lane.outbound:
            notice = lane.outbound.popleft()
            lane.inflight = notice
            await self._deliver(lane, notice)
            lane.inflight = None
            self._flush_due(lane, self._clock(), self._draining)
        if self._draining and not lane.buckets:
            return True
        due = lane.next_due()
        delay = None if due is None else max(0.0, due - self._clock())
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(lane.wake.wait(), delay)
        return False

    async def _deliver(self, lane: _Lane, notice: Notice) -> None:
        try:
            rendered = render(notice, lane.fmt, max_body=lane.max_body, max_title=lane.max_title)
        except Exception as exc:  # a rendering bug must not kill the lane
            log.error("alert rendering failed", target=lane.name, error_type=type(exc).__name__)
            self._count(lane, "failed")
            return
        title, body = _place_title(rendered, lane.fmt, lane.max_title)
        retries = 0
        while True:
            outcome = await self._attempt(lane, title, body, rendered.notify_type)
            if outcome == "ok":
                self._count(lane, "sent")
                return
            if retries >= self._config.retry_max:
                log.warning(
                    "alert delivery failed",
                    target=lane.name,
                    cause=notice.cause_id,
                    outcome=outcome,
                    attempts=retries + 1,
                )
                self._count(lane, "failed")
                return
            retries += 1
            self._count(lane, "retried")
            log.info("alert delivery failed; retrying", target=lane.name, outcome=outcome)
            await self._backoff(retries)

    async def _attempt(self, lane: _Lane, title: str, body: str, notify_type: str) -> str:
        """One delivery: "ok", "failure", "timeout" or "error:<Type>" (never the URL or the
        exception text, which for requests errors contains the URL)."""
        try:
            result = await asyncio.wait_for(
                lane.notifier.async_notify(
                    body=body,
                    title=title,
                    notify_type=notify_type,
                    body_format=lane.fmt,
                    timeout=self._timeout,
                ),
                self._timeout + HARD_TIMEOUT_MARGIN,
            )
        except TimeoutError:
            return "timeout"
        except Exception as exc:
            return f"error:{type(exc).__name__}"
        if result:
            return "ok"
        status = getattr(result, "status", None)
        name = getattr(status, "name", None)
        return str(name).lower() if name else "failure"

    async def _backoff(self, retry: int) -> None:
        if self._hurry.is_set():
            return
        delay = min(self._backoff_max, self._backoff_base * (2 ** (retry - 1)))
        delay *= random.uniform(0.8, 1.2)  # spread retries of several targets apart
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._hurry.wait(), delay)


# --- helpers --------------------------------------------------------------------------------


_STR_FIELDS = ("kind", "cause_id", "summary", "user", "domain", "source_ip", "x_reason")


def _coerce(alert: AlertInput) -> AlertInput:
    """Repair a malformed alert (a bug upstream) rather than lose it: strings where strings
    belong, a known severity, a positive count, a mapping of evidence."""
    changes: dict[str, Any] = {}
    for name in _STR_FIELDS:
        value = getattr(alert, name)
        if not isinstance(value, str):
            changes[name] = "" if value is None else str(value)
    severity = normalise_severity(alert.severity if isinstance(alert.severity, str) else "")
    if severity != alert.severity:
        changes["severity"] = severity
    if not isinstance(alert.count, int) or isinstance(alert.count, bool) or alert.count < 1:
        changes["count"] = 1
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


def _pending(lane: _Lane, serial: int) -> bool:
    return any(b.serial == serial for b in lane.buckets.values())


def _offender_label(alert: AlertInput) -> str:
    aor = f"{alert.user}@{alert.domain}" if alert.user and alert.domain else alert.user
    if alert.kind == "security":
        return alert.source_ip or aor or alert.domain or "unknown"
    return aor or alert.domain or alert.source_ip or "unknown"


def _notice_of(bucket: _Bucket) -> Notice:
    if bucket.key == RESOLVED_BUCKET:
        return Notice(
            notice="resolved",
            severity="info",
            kind="registration",
            cause_id="resolved",
            alerts=len(bucket.recoveries) + bucket.other_recoveries,
            recoveries=tuple(bucket.recoveries),
            other_recoveries=bucket.other_recoveries,
        )
    kind, cause = bucket.key
    if not bucket.mixed:
        return Notice(
            notice="alert",
            severity=bucket.severity,
            kind=kind,
            cause_id=cause,
            sample=bucket.sample,
            alerts=bucket.alerts,
            failures=bucket.failures,
            repeats=bucket.alerts - 1 + bucket.repeats,
            first_seen=bucket.first_seen,
            last_seen=bucket.last_seen,
        )
    ranked = sorted(
        bucket.offenders.items(),
        key=lambda item: (len(item[1].users), item[1].failures, item[1].alerts),
        reverse=True,
    )
    listed = tuple(
        Offender(
            label=label,
            alerts=t.alerts,
            failures=t.failures,
            distinct=len(t.users),
            distinct_capped=t.users_capped,
        )
        for label, t in ranked[:OFFENDERS_LISTED]
    )
    others = len(ranked) - len(listed)
    return Notice(
        notice="group",
        severity=bucket.severity,
        kind=kind,
        cause_id=cause,
        sample=bucket.sample,
        alerts=bucket.alerts,
        failures=bucket.failures,
        offenders=listed,
        other_offenders=others,
        untracked_alerts=bucket.other_offender_alerts,
        distinct_total=len(bucket.distinct),
        distinct_capped=bucket.distinct_capped,
        first_seen=bucket.first_seen,
        last_seen=bucket.last_seen,
    )


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
