"""What a pipeline hook wants to see, declared on the hook: the pipeline skips the rest.

Most completed REGISTER transactions are routine (a 401 challenge, a 200), and most observers
act only on failures (the failure table, the context, the scanner classifier, the diagnosis
hand-off) or only on successful attempts (which resolve failures).  Calling each of them for
every transaction to have it return at once cost a replay more than its report; so a hook
says what it wants with a decorator, as a client_python Collector registers itself, and the
pipeline builds its dispatch lists from that once (``sipwatch.pipeline.core``).

A hook keeps its own check: called directly (a test, another driver), it is still right; the
declaration only lets the pipeline skip calls that would return at once.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from sipwatch.model import RegisterTransaction
from sipwatch.sip_meaning import is_failure_status

Hook = TypeVar("Hook", bound=Callable[..., None])

_WANTS = "__sipwatch_wants__"
FAILED = "failed"  # transactions for which ``is_failure`` holds
SUCCEEDED = "succeeded"  # attempts whose outcome is AttemptOutcome.SUCCESS


def is_failure(tx: RegisterTransaction) -> bool:
    """A transaction that left the device unregistered: a timeout or a failure status."""
    return tx.timed_out or is_failure_status(tx.status)


def only_failed(hook: Hook) -> Hook:
    """An ``observe_transaction`` that acts only on failed transactions (``is_failure``)."""
    setattr(hook, _WANTS, FAILED)
    return hook


def only_succeeded(hook: Hook) -> Hook:
    """An ``observe_attempt`` that acts only on successful attempts."""
    setattr(hook, _WANTS, SUCCEEDED)
    return hook


def wants(hook: Callable[..., None]) -> str | None:
    """What ``hook`` declared it wants (``FAILED``, ``SUCCEEDED``), or None: everything."""
    return getattr(hook, _WANTS, None)
