"""Waiting until something is true, for the tests that watch a process, a server or a task
work: one synchronous and one asynchronous form, each polling with a deadline, so that no
test sleeps a guessed time."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any


def wait_for(pred: Callable[[], Any], timeout: float = 30.0) -> Any:
    """Call ``pred`` until it returns something true (connection errors count as not yet)."""
    end = time.monotonic() + timeout
    last = None
    while time.monotonic() < end:
        try:
            last = pred()
            if last:
                return last
        except OSError:
            pass
        time.sleep(0.1)
    raise AssertionError(f"condition not met in {timeout}s (last: {last!r})")


async def until(
    predicate: Callable[[], Any], timeout: float = 10.0, interval: float = 0.02
) -> None:
    """Let the loop run until ``predicate()`` is true (TimeoutError after ``timeout``)."""
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(interval)
