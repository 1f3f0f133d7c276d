"""Model values for the tests of the stages that consume them (metrics, failures, web,
dashboards, alerts): one SIP message, REGISTER transaction, attempt and failure-table row
with realistic defaults, any field overridden by keyword, and a clock the test moves by
hand."""

from __future__ import annotations

import dataclasses
from typing import Any

from sipwatch.model import (
    AttemptOutcome,
    Direction,
    RegisterAttempt,
    RegisterTransaction,
    Side,
    SipMessage,
)
from sipwatch.pipeline.failures import FailureRecord, FailureTracker

SRC = "drachtio"


class FakeClock:
    """A clock (``time.monotonic``/``time.time`` stand-in) that moves only when told."""

    def __init__(self, now: float = 5000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def message(**kw: Any) -> SipMessage:
    fields: dict[str, Any] = dict(
        ts=1767268800.123,
        source=SRC,
        direction=Direction.RECV,
        transport="udp",
        peer_ip="203.0.113.5",
        peer_port=5060,
        size=612,
        is_request=True,
        method="REGISTER",
        status=0,
        reason="",
        request_uri="sip:acme.example.com",
        call_id="c1@dev",
        cseq=1,
        via_branch="z9hG4bK-1",
        from_user="alice",
        from_host="acme.example.com",
        to_user="alice",
        to_host="acme.example.com",
        contact="<sip:alice@203.0.113.5:5060>",
        expires=3600,
        user_agent="Yealink SIP-T46S",
        auth_username="",
        auth_realm="",
        has_auth=False,
        x_reason="",
        www_authenticate="",
    )
    fields.update(kw)
    return SipMessage(**fields)


# What a REGISTER transaction and the attempt it belongs to have in common.
_REGISTER: dict[str, Any] = dict(
    side=Side.INBOUND,
    call_id="c1@dev",
    started=1767268800.0,
    source=SRC,
    peer_ip="203.0.113.5",
    peer_port=5060,
    transport="udp",
    to_user="alice",
    to_host="acme.example.com",
    from_user="alice",
    request_uri="sip:acme.example.com",
    user_agent="Yealink SIP-T46S",
    auth_username="alice",
    expires=3600,
    status=403,
    reason="Forbidden",
    x_reason="Invalid credentials",
)


def transaction(**kw: Any) -> RegisterTransaction:
    fields: dict[str, Any] = dict(
        _REGISTER,
        cseq=2,
        branch="z9hG4bK-2",
        has_auth=True,
        requests=1,
        responses=1,
        finished=1767268800.04,
    )
    fields.update(kw)
    return RegisterTransaction(**fields)


def attempt(**kw: Any) -> RegisterAttempt:
    fields: dict[str, Any] = dict(
        _REGISTER,
        transactions=2,
        challenged=True,
        outcome=AttemptOutcome.FAILURE,
        finished=1767268800.2,
    )
    fields.update(kw)
    return RegisterAttempt(**fields)


def failure_record(**kw: Any) -> FailureRecord:
    """The failure table's own row for one ``transaction()`` (alice@acme.example.com
    rejected with 403), any field overridden by keyword."""
    table = FailureTracker()
    table.observe_transaction(transaction())
    [row] = table.records()
    return dataclasses.replace(row, **kw)
