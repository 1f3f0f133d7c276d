"""Waiting and stopping without losing a cancellation.

Why this module exists: ``sipwatch run`` stops by cancelling its stages, and two things
could swallow that cancel, leaving the daemon running until ``systemctl stop`` gives up
and kills it:

* **CPython 3.11's ``asyncio.wait_for``** returns normally when the cancel lands in the
  same loop iteration as the awaited thing completing (gh-86296; 3.12 rebuilt ``wait_for``
  on ``asyncio.timeout``).  At shutdown that is the common case, not a corner: the sources'
  "down" reports wake the dependency checker exactly when it is cancelled.  So nothing in
  ``sipwatch/`` calls ``wait_for``; ``wait_event`` and ``asyncio.timeout`` do the job, and
  a test keeps it that way.
* **Client libraries** (the database and Redis clients) catch ``CancelledError`` while they
  close a connection and return normally.  ``honour_cancellation`` re-raises a cancel that
  the task has been asked for (``Task.cancelling()``) but that got lost on the way.

``stop_tasks`` is the shutdown's last line: it cancels, waits a bounded time and names
the stages that still did not stop, so a bug elsewhere costs seconds, not a hung unit.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable

import structlog

log = structlog.get_logger(__name__)


async def wait_event(event: asyncio.Event, within: float | None) -> bool:
    """Wait until ``event`` is set, for at most ``within`` seconds (None: no limit).

    True if the event is set.  A cancel always propagates, even one that arrives together
    with the event (unlike 3.11's ``wait_for``)."""
    if event.is_set():
        return True
    try:
        async with asyncio.timeout(within):
            await event.wait()
    except TimeoutError:
        return event.is_set()
    return True


def honour_cancellation() -> None:
    """Raise ``CancelledError`` if the current task was asked to stop and the request was
    swallowed by the code it awaited (a client library closing its connection).

    Call it after awaiting a third-party client, in loops that must end when cancelled."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


async def stop_tasks(tasks: Iterable[asyncio.Task[object]], budget: float) -> list[str]:
    """Cancel ``tasks`` and wait at most ``budget`` seconds for them to end.

    Returns the names of the tasks still running (and logs them): the caller goes on with
    its shutdown rather than hang on a stage that ignores its cancel."""
    pending = [t for t in tasks if not t.done()]
    for task in pending:
        task.cancel()
    if pending:
        _done, still = await asyncio.wait(pending, timeout=max(0.0, budget))
    else:
        still = set()
    for task in pending:  # retrieve outcomes so none is reported as "never retrieved"
        if task.done() and not task.cancelled():
            task.exception()
    names = sorted(t.get_name() for t in still)
    if names:
        log.error("stages did not stop in time", stages=names, budget_seconds=budget)
    return names
