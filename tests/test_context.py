"""FailureContext: what it remembers around failures (registrations, request details,
registrar events), which events it pairs with a failure group, and its bounds."""

from __future__ import annotations

from sipwatch.model import AttemptOutcome, ServiceEvent, ServiceOrigin
from sipwatch.pipeline.context import FailureContext
from tests.test_metrics import attempt, transaction

REALM = "acme.example.com"


def event(ts: float, kind: str, **attrs: str) -> ServiceEvent:
    return ServiceEvent(ts, "sidecar", ServiceOrigin.REGISTRAR, kind, 30, kind, dict(attrs))


def near(
    ctx: FailureContext,
    first: float,
    last: float | None = None,
    *,
    status: int | str = 500,
    x_reason: str = "",
    challenged: bool = True,
    realm: str = REALM,
) -> set[str]:
    found = ctx.events_near(
        first,
        first if last is None else last,
        realm,
        status,
        x_reason=x_reason,
        challenged=challenged,
    )
    assert isinstance(found, frozenset)
    return set(found)


# ----------------------------------------------------------------------------- registrations
def test_registered_before_is_inclusive_and_needs_a_success() -> None:
    ctx = FailureContext()
    ctx.observe_attempt(attempt(to_user="bob", outcome=AttemptOutcome.FAILURE, finished=100.0))
    assert ctx.registered_before("bob", REALM, 1e12) is False
    ctx.observe_attempt(attempt(outcome=AttemptOutcome.SUCCESS, status=200, finished=100.0))
    assert ctx.registered_before("alice", REALM, 100.0) is True
    assert ctx.registered_before("alice", REALM, 99.9) is False
    assert ctx.registered_before("alice", "other.example.com", 200.0) is False


def test_registrations_are_a_bounded_lru() -> None:
    ctx = FailureContext(max_registered=2)
    ok = {"outcome": AttemptOutcome.SUCCESS, "status": 200}
    for i, user in enumerate(("a", "b", "a", "c")):  # a registers again: b is the oldest
        ctx.observe_attempt(attempt(to_user=user, finished=float(i), **ok))
    assert [ctx.registered_before(u, REALM, 10.0) for u in "abc"] == [True, False, True]
    assert ctx.registered_before("a", REALM, 1.5) is False  # its latest registration counts


def test_request_info_of_the_latest_failure() -> None:
    ctx = FailureContext()
    assert ctx.request_info("203.0.113.5", "alice", REALM) == ("", "")
    ctx.observe_transaction(transaction(request_uri="sip:10.0.0.1", auth_username="al"))
    ctx.observe_transaction(transaction(request_uri="sip:acme.example.com", auth_username="a1"))
    ctx.observe_transaction(transaction(status=200, request_uri="sip:ok", auth_username="x"))
    assert ctx.request_info("203.0.113.5", "alice", REALM) == ("sip:acme.example.com", "a1")
    assert ctx.request_info("203.0.113.9", "alice", REALM) == ("", "")


def test_request_info_is_a_bounded_lru() -> None:
    ctx = FailureContext(max_request_info=2)
    for user in ("a", "b", "a", "c"):  # a fails again: b is the oldest
        ctx.observe_transaction(transaction(to_user=user, auth_username=user))
    assert [ctx.request_info("203.0.113.5", u, REALM)[1] for u in "abc"] == ["a", "", "c"]


def test_default_bounds() -> None:
    ctx = FailureContext()
    assert ctx.window == 3.0
    ok = {"outcome": AttemptOutcome.SUCCESS, "status": 200}
    att = attempt(**ok)
    tx = transaction()
    for i in range(100_001):
        att.to_user = tx.to_user = f"u{i}"
        ctx.observe_attempt(att)
        if i <= 80_000:
            ctx.observe_transaction(tx)
        if i <= 20_000:
            ctx.observe_event(event(float(i), "db_error", realm=f"r{i}"))
    assert ctx.registered_before("u0", REALM, 1e12) is False
    assert ctx.registered_before("u1", REALM, 1e12) is True
    assert ctx.request_info("203.0.113.5", "u0", REALM) == ("", "")
    assert ctx.request_info("203.0.113.5", "u1", REALM)[1] == "alice"
    # 20,001 events: the oldest half went at once, the newest 10,001 stay
    assert near(ctx, 9_999.0, status=500, realm="r9999") == set()
    assert near(ctx, 10_000.0, status=500, realm="r10000") == {"db_error"}


# ----------------------------------------------------------------------------- events
def test_flavour_hint_comes_from_the_sidecar_startup_line() -> None:
    ctx = FailureContext()
    ctx.observe_event(event(1.0, "db_error", flavour_hint="sidecar"))
    ctx.observe_event(event(1.0, "startup", flavour_hint="other"))
    ctx.observe_event(event(1.0, "startup"))
    assert ctx.flavour_hint is None
    ctx.observe_event(event(2.0, "startup", flavour_hint="sidecar"))
    assert ctx.flavour_hint == "sidecar"


def test_only_explaining_kinds_are_kept() -> None:
    ctx = FailureContext()
    ctx.observe_event(event(100.0, "startup"))
    ctx.observe_event(event(100.0, "listening"))
    assert near(ctx, 100.0) == set()


def test_the_window_is_inclusive_on_both_sides() -> None:
    ctx = FailureContext(window=3.0)
    for ts in (96.9, 97.0, 103.0, 103.1):
        ctx.observe_event(event(ts, "db_error", realm=f"at{ts}"))
    found = {ts: near(ctx, 100.0, status=500, realm=f"at{ts}") for ts in (96.9, 97.0, 103.0, 103.1)}
    assert found == {96.9: set(), 97.0: {"db_error"}, 103.0: {"db_error"}, 103.1: set()}


def test_events_arriving_out_of_order_are_found() -> None:
    """Two streams (drachtio, registrar) interleave: events come in out of time order."""
    ctx = FailureContext()
    ctx.observe_event(event(200.0, "no_providers"))
    ctx.observe_event(event(100.0, "db_error", realm=REALM))
    ctx.observe_event(event(300.0, "limits"))
    assert near(ctx, 100.0, status=500) == {"db_error"}
    ctx.observe_event(event(50.0, "no_connected_clients"))
    assert near(ctx, 50.0, status="timeout") == {"no_connected_clients"}
    assert near(ctx, 200.0, status=503) == {"no_providers"}


def test_a_long_group_looks_at_its_first_and_its_latest_failure_only() -> None:
    ctx = FailureContext(window=3.0)
    ctx.observe_event(event(99.0, "db_error", realm=REALM))
    ctx.observe_event(event(150.0, "db_error", realm="other.example.com"))
    ctx.observe_event(event(150.0, "plaintext_password"))  # someone else's, in between
    ctx.observe_event(event(201.0, "decrypt_error"))
    assert near(ctx, 100.0, 200.0) == {"db_error", "decrypt_error"}
    assert near(ctx, 100.0, 200.0, realm="other.example.com") == {"decrypt_error"}


def test_a_short_group_covers_both_moments() -> None:
    """First and latest failure 4 s apart: a line 2 s before the first one explains it (the
    window around the latest failure alone, 101..107, used to miss it)."""
    ctx = FailureContext(window=3.0)
    ctx.observe_event(event(98.0, "db_error", realm=REALM))
    assert near(ctx, 100.0, 104.0) == {"db_error"}
    assert near(ctx, 100.0, 106.0) == {"db_error"}  # 2 x window apart
    assert near(ctx, 102.0, 106.0) == set()  # 98 is 4 s before the first one


def test_deactivation_explains_only_its_own_answer() -> None:
    ctx = FailureContext()
    ctx.observe_event(event(100.0, "account_deactivated"))
    deactivated = "  Account has been deactivated (unpaid)"
    assert near(ctx, 100.0, status=403, x_reason=deactivated, challenged=False) == {
        "account_deactivated"
    }
    assert near(ctx, 100.0, status=403, x_reason=deactivated, challenged=True) == set()
    assert near(ctx, 100.0, status=500, x_reason=deactivated, challenged=False) == set()
    assert near(ctx, 100.0, status=403, x_reason="Forbidden", challenged=False) == set()


def test_a_timed_event_naming_another_realm_is_not_this_ones() -> None:
    ctx = FailureContext()
    ctx.observe_event(event(100.0, "plaintext_password", realm="other.example.com"))
    ctx.observe_event(event(100.0, "no_providers", realm="other.example.com"))
    assert near(ctx, 100.0, status=500) == set()
    assert near(ctx, 100.0, status=503, challenged=False) == set()
    assert near(ctx, 100.0, status=500, realm="other.example.com") == {"plaintext_password"}


def test_webhook_errors_pair_by_the_status_they_name() -> None:
    ctx = FailureContext()
    ctx.observe_event(event(100.0, "webhook_error", status_code="480"))
    ctx.observe_event(event(200.0, "webhook_error"))
    assert near(ctx, 100.0, status=480) == {"webhook_error"}
    assert near(ctx, 100.0, status=404) == set()
    assert near(ctx, 200.0, status=404) == {"webhook_error"}  # names none: any fitting answer
    assert near(ctx, 200.0, status=403) == set()
    assert near(ctx, 200.0, status=404, challenged=False) == set()
    assert near(ctx, 200.0, status="timeout") == set()


def test_events_are_a_bounded_window_keeping_the_newest_half() -> None:
    ctx = FailureContext(max_events=4)
    for i in range(5):
        ctx.observe_event(event(float(i), "db_error", realm=f"r{i}"))
    kept = [i for i in range(5) if near(ctx, float(i), realm=f"r{i}")]
    assert kept == [2, 3, 4]  # five is more than four: the oldest two went
    ctx4 = FailureContext(max_events=4)
    for i in range(4):
        ctx4.observe_event(event(float(i), "db_error", realm=f"r{i}"))
    assert [i for i in range(4) if near(ctx4, float(i), realm=f"r{i}")] == [0, 1, 2, 3]
    ctx6 = FailureContext(max_events=6)
    for i in range(7):
        ctx6.observe_event(event(float(i), "db_error", realm=f"r{i}"))
    assert [i for i in range(7) if near(ctx6, float(i), realm=f"r{i}")] == [3, 4, 5, 6]


def test_trimming_keeps_the_newest_by_time_not_by_arrival() -> None:
    ctx = FailureContext(max_events=2)
    for ts in (10.0, 30.0, 20.0):
        ctx.observe_event(event(ts, "db_error", realm=f"r{ts}"))
    assert [ts for ts in (10.0, 20.0, 30.0) if near(ctx, ts, realm=f"r{ts}")] == [20.0, 30.0]
