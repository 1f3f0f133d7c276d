"""A stop request is never lost: the races behind ``sipwatch run`` ignoring SIGTERM.

Each race test makes the lost-cancel race happen on purpose, in the daemon's real stages:
the cancel arrives in the same loop iteration as the event being waited for (CPython 3.11's
``wait_for`` swallows it, gh-86296), or inside a client call that swallows it."""

from __future__ import annotations

import asyncio
import contextlib
import re
from pathlib import Path
from typing import Any

from sipwatch.daemon.dependencies import DependencyHealth
from sipwatch.pipeline.handoff import DiagnosisHandoff
from sipwatch.waits import honour_cancellation, stop_tasks, wait_event
from tests.samples import transaction

PACKAGE = Path(__file__).resolve().parent.parent / "sipwatch"
BOUND = 2.0  # seconds a stage may take to stop; a lost cancel never stops


async def stops(task: asyncio.Task[Any]) -> bool:
    """True if ``task`` ends cancelled within BOUND (it was cancelled by the caller)."""
    done, _ = await asyncio.wait([task], timeout=BOUND)
    if not done:
        task.cancel()  # give the stage one more chance, so the test itself ends
        await asyncio.wait([task], timeout=BOUND)
        return False
    return task.cancelled()


async def test_wait_event_reports_set_and_timeout() -> None:
    event = asyncio.Event()
    assert await wait_event(event, 0.01) is False
    event.set()
    assert await wait_event(event, 0.01) is True
    event.clear()
    waiter = asyncio.create_task(wait_event(event, None))
    await asyncio.sleep(0)
    event.set()
    assert await asyncio.wait_for(waiter, BOUND) is True


async def test_a_cancel_arriving_with_the_event_is_not_lost() -> None:
    event = asyncio.Event()
    waiter = asyncio.create_task(wait_event(event, 60.0))
    await asyncio.sleep(0)  # waiting now
    event.set()
    waiter.cancel()  # the same loop iteration: 3.11's wait_for would return True
    assert await stops(waiter)


async def test_dependency_checker_stops_when_woken_as_it_is_cancelled() -> None:
    """The shutdown sequence that hung: the sources report "down" (which wakes the checker)
    just as the checker is cancelled."""

    async def answers() -> None:
        return None

    health = DependencyHealth(probe_interval=60.0)
    health.add_probe("redis", answers)  # a probe due in 60 s: the checker waits with a timeout
    checker = asyncio.create_task(health.run())
    await asyncio.sleep(0.05)
    assert health.is_up("redis") is True
    health.report("file:drachtio", False, "source stopped", grace=30.0)  # wakes the checker
    checker.cancel()
    assert await stops(checker)


async def swallowing_probe() -> None:
    """What the database and Redis clients did when cancelled while closing a connection:
    catch the cancel and return normally."""
    with contextlib.suppress(asyncio.CancelledError):
        await asyncio.sleep(60.0)


async def test_dependency_checker_stops_when_a_probe_swallows_the_cancel() -> None:
    health = DependencyHealth(probe_timeout=30.0)
    health.add_probe("database", swallowing_probe)
    checker = asyncio.create_task(health.run())
    await asyncio.sleep(0.05)  # inside the probe
    checker.cancel()
    assert await stops(checker)
    assert health.is_up("database") is None  # a stop is no verdict on the database


async def test_diagnosis_handoff_stops_when_work_arrives_as_it_is_cancelled() -> None:
    handoff = DiagnosisHandoff(delay=30.0)
    handoff.observe_transaction(transaction(to_user="alice"))  # due in 30 s: next() waits
    worker = asyncio.create_task(handoff.next())
    await asyncio.sleep(0.05)
    handoff.observe_transaction(transaction(to_user="bob"))  # wakes the worker
    worker.cancel()
    assert await stops(worker)


async def test_honour_cancellation_raises_only_when_asked_to_stop() -> None:
    honour_cancellation()  # not cancelled: nothing happens

    async def loop() -> None:
        while True:
            await swallowing_probe()
            honour_cancellation()

    task = asyncio.create_task(loop())
    await asyncio.sleep(0.05)
    task.cancel()
    assert await stops(task)


async def test_stop_tasks_names_a_stage_that_ignores_its_cancel() -> None:
    released = asyncio.Event()

    async def stubborn() -> None:
        while not released.is_set():
            await swallowing_probe()

    async def obedient() -> None:
        await asyncio.sleep(60.0)

    async def failed() -> None:
        raise RuntimeError("a stage's bug")

    tasks = [
        asyncio.create_task(stubborn(), name="stubborn"),
        asyncio.create_task(obedient(), name="obedient"),
        asyncio.create_task(failed(), name="failed"),
    ]
    await asyncio.sleep(0.05)
    loop = asyncio.get_running_loop()
    start = loop.time()
    assert await stop_tasks(tasks, 0.2) == ["stubborn"]
    assert loop.time() - start < BOUND
    assert tasks[1].cancelled() and not tasks[0].done()
    released.set()
    tasks[0].cancel()
    await asyncio.wait([tasks[0]], timeout=BOUND)
    assert tasks[0].done()
    assert await stop_tasks([], 0.1) == []


def test_no_module_waits_with_wait_for() -> None:
    """``asyncio.wait_for`` loses cancels on Python 3.11; ``sipwatch.waits`` says why."""
    modules = sorted(PACKAGE.rglob("*.py")) + sorted(PACKAGE.rglob("*.pyx"))
    assert len(modules) > 50
    offenders = [
        str(m.relative_to(PACKAGE))
        for m in modules
        if re.search(r"\bwait_for\(", m.read_text(encoding="utf-8"))
    ]
    assert offenders == []
