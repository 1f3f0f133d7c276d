"""The remediation policy gate, with an injected clock."""

from __future__ import annotations

from pathlib import Path
from types import MappingProxyType

from sipwatch.remediation import guard as g
from sipwatch.remediation.guard import Guard
from tests.remediation_support import rem_config
from tests.samples import FakeClock


def check(
    guard: Guard,
    action: str = "activate_client",
    user: str = "1001",
    realm: str = "pbx.sip.example.com",
    **kw: object,
) -> g.Verdict:
    return guard.check(
        action,
        names=[(user, realm)],
        cooldown_key=f"{user}@{realm}",
        attack=bool(kw.pop("attack", False)),
        **kw,  # type: ignore[arg-type]
    )


def test_modes_per_action_capped_by_global_mode() -> None:
    cfg = rem_config(
        mode="dry-run",
        actions=MappingProxyType({"restart_registrar": "on", "create_client": "off"}),
    )
    guard = Guard(cfg, clock=FakeClock(1000.0))
    assert check(guard, "restart_registrar").mode == "dry-run"
    off = check(guard, "create_client")
    assert not off.allowed and off.reason == g.MODE_OFF
    assert check(guard, "activate_client").allowed
    assert not check(Guard(rem_config(mode="off"))).allowed


def test_attack_is_refused_even_when_allow_listed() -> None:
    guard = Guard(rem_config(allow_users=("*",), allow_realms=("*",)), clock=FakeClock(1000.0))
    v = check(guard, attack=True)
    assert not v.allowed and v.reason == g.ATTACK
    # even for a user the operator named
    v = check(guard, attack=True, explicit_users={"1001"})
    assert not v.allowed and v.reason == g.ATTACK


def test_kill_switch(tmp_path: Path) -> None:
    switch = tmp_path / "remediation.disabled"
    guard = Guard(rem_config(kill_switch_file=str(switch)), clock=FakeClock(1000.0))
    assert check(guard).allowed
    switch.touch()
    v = check(guard)
    assert not v.allowed and v.reason == g.KILL_SWITCH
    switch.unlink()
    assert check(guard).allowed


def test_allow_lists_and_explicit_users() -> None:
    guard = Guard(
        rem_config(allow_realms=(), allow_users=("100?@pbx.example.com", "alice")),
        clock=FakeClock(1000.0),
    )
    assert check(guard, user="1001", realm="PBX.example.com").allowed
    v = check(guard, user="10011", realm="pbx.example.com")
    assert not v.allowed and v.reason == g.NOT_ALLOWED
    assert not check(guard, user="1001", realm="evil.example.com").allowed
    assert check(guard, user="alice", realm="anything.org").allowed
    # an operator naming the exact user overrides the allow-list, nothing else does
    assert check(guard, user="bob", realm="x.org", explicit_users={"bob"}).allowed
    assert not check(guard, user="bob", realm="x.org", explicit_users={"bobby"}).allowed
    # every involved name must pass: To user allowed but auth username not
    v = guard.check(
        "create_client",
        names=[("alice", "x.org"), ("mallory", "x.org")],
        cooldown_key="alice@x.org",
        attack=False,
    )
    assert not v.allowed and v.reason == g.NOT_ALLOWED
    # empty allow-lists allow nobody
    assert not check(Guard(rem_config(allow_realms=(), allow_users=()))).allowed


def test_cooldown_per_user() -> None:
    clock = FakeClock(1000.0)
    guard = Guard(rem_config(user_cooldown_seconds=600.0), clock=clock)
    assert check(guard, user="a").allowed
    guard.record("activate_client", "a@pbx.sip.example.com", "on")
    v = check(guard, user="a")
    assert not v.allowed and v.reason == g.COOLDOWN
    assert check(guard, user="b").allowed  # other users are not affected
    assert check(guard, user="a", mode="dry-run").allowed  # dry-run has its own ledger
    clock.now += 599
    assert not check(guard, user="a").allowed
    clock.now += 2
    assert check(guard, user="a").allowed


def test_rate_limits_per_action_and_global_with_hourly_expiry() -> None:
    clock = FakeClock(1000.0)
    guard = Guard(
        rem_config(max_changes_per_action_per_hour=3, max_changes_per_hour=5), clock=clock
    )
    for i in range(3):
        assert check(guard, "activate_client", user=f"u{i}").allowed
        guard.record("activate_client", f"u{i}@r", "on")
        clock.now += 1
    v = check(guard, "activate_client", user="u9")
    assert not v.allowed and v.reason == g.ACTION_RATE
    for i in range(2):
        assert check(guard, "activate_account", user=f"v{i}").allowed
        guard.record("activate_account", f"v{i}@r", "on")
    v = check(guard, "flush_cached_registration", user="w")
    assert not v.allowed and v.reason == g.GLOBAL_RATE
    assert guard.usage("on") == {"activate_client": 3, "activate_account": 2}
    clock.now += 3600 - 3  # exactly one hour after the first attempt: it left the window
    assert guard.usage("on") == {"activate_client": 2, "activate_account": 2}
    assert check(guard, "flush_cached_registration", user="w").allowed
    guard.record("flush_cached_registration", "w@r", "on")
    v = check(guard, "activate_client", user="u9")  # per action 2 < 3, but 5 overall
    assert not v.allowed and v.reason == g.GLOBAL_RATE
    clock.now += 3600
    assert guard.usage("on") == {}
    assert check(guard, "activate_client", user="u9").allowed


def test_state_stays_bounded_under_a_flood() -> None:
    clock = FakeClock(1000.0)
    guard = Guard(
        rem_config(
            user_cooldown_seconds=86_400.0,
            max_changes_per_hour=10_000,
            max_changes_per_action_per_hour=10_000,
        ),
        clock=clock,
        max_cooldown_keys=100,
    )
    for i in range(5000):
        guard.record("activate_client", f"user{i}@r", "dry-run")
        clock.now += 0.01
    assert len(guard._cooldown) == 100
    assert guard.usage("dry-run") == {"activate_client": 5000}


# ------------------------------------------------------------ exact verdicts and edges


def test_every_verdict_says_its_mode_reason_and_detail(tmp_path: Path) -> None:
    clock = FakeClock(1000.0)
    switch = tmp_path / "remediation.disabled"
    guard = Guard(
        rem_config(
            actions=MappingProxyType({"create_client": "off"}),
            allow_realms=("pbx.sip.example.com",),
            kill_switch_file=str(switch),
            user_cooldown_seconds=600.0,
            max_changes_per_action_per_hour=1,
            max_changes_per_hour=2,
        ),
        clock=clock,
    )

    def refused(reason: str, detail: str, mode: str = "on") -> g.Verdict:
        return g.Verdict(False, mode, reason, detail)

    assert check(guard) == g.Verdict(True, "on", "ok", "allowed by policy")
    assert check(guard, "create_client") == refused(
        "mode_off", "remediation of create_client is off", "off"
    )
    scanner = (
        "the failure was classified as a scanner/attack; sipwatch never changes anything for it"
    )
    assert check(guard, attack=True) == refused("attack", scanner)
    assert check(guard, attack=True, mode="dry-run") == refused("attack", scanner, "dry-run")
    not_listed = "the user is not covered by remediation.allow_users / allow_realms"
    assert check(guard, realm="other.org") == refused("not_allowed", not_listed)
    guard.record("activate_client", "1001@pbx.sip.example.com", "on")
    clock.now += 120.4
    assert check(guard) == refused("cooldown", "changed 120s ago; cool-down is 600s")
    per_action = (
        "activate_client ran 1 times in the last hour (max_changes_per_action_per_hour = 1)"
    )
    assert check(guard, user="1002") == refused("action_rate_limit", per_action)
    guard.record("activate_account", "1003@pbx.sip.example.com", "on")
    overall = "2 changes in the last hour (max_changes_per_hour = 2)"
    assert check(guard, "flush_cached_registration", user="1004") == refused(
        "global_rate_limit", overall
    )
    switch.touch()
    assert check(guard, user="1005") == refused("kill_switch", f"kill switch {switch} exists")


def test_a_kill_switch_that_cannot_be_checked_stops_everything() -> None:
    # stat() fails (ENAMETOOLONG): sipwatch cannot tell whether the switch is there
    guard = Guard(rem_config(kill_switch_file="/tmp/" + "k" * 300), clock=FakeClock(1000.0))
    assert guard.kill_switch_active() is True
    v = check(guard)
    assert (v.allowed, v.reason) == (False, g.KILL_SWITCH)


def test_a_named_user_does_not_wave_through_the_other_names_of_the_change() -> None:
    guard = Guard(rem_config(allow_realms=(), allow_users=("alice",)), clock=FakeClock(1000.0))
    for names in (
        [("bob", "x.org"), ("mallory", "x.org")],  # the named user first, then one not allowed
        [("mallory", "x.org"), ("bob", "x.org")],
    ):
        v = guard.check(
            "create_client",
            names=names,
            cooldown_key="bob@x.org",
            attack=False,
            explicit_users={"bob"},
        )
        assert (v.allowed, v.reason) == (False, g.NOT_ALLOWED), names
    ok = guard.check(
        "create_client",
        names=[("bob", "x.org"), ("alice", "x.org")],
        cooldown_key="bob@x.org",
        attack=False,
        explicit_users={"bob"},
    )
    assert ok.allowed


def test_the_cooldown_ends_exactly_after_its_length_and_is_forgotten_then() -> None:
    clock = FakeClock(1000.0)
    guard = Guard(rem_config(user_cooldown_seconds=600.0), clock=clock)
    guard.record("activate_client", "1001@pbx.sip.example.com", "on")
    clock.now += 599.999
    assert check(guard).reason == g.COOLDOWN
    assert len(guard._cooldown) == 1
    clock.now = 1000.0 + 600.0
    assert check(guard).allowed
    assert len(guard._cooldown) == 0  # expired entries do not stay behind


def test_a_full_cooldown_table_forgets_the_least_recent_attempt() -> None:
    clock = FakeClock(1000.0)
    guard = Guard(rem_config(user_cooldown_seconds=3600.0), clock=clock, max_cooldown_keys=2)
    for user in ("a", "b", "a", "c"):  # "a" again: now the most recent, "b" the oldest
        guard.record("activate_client", f"{user}@pbx.sip.example.com", "on")
        clock.now += 1
    assert check(guard, user="a").reason == g.COOLDOWN
    assert check(guard, user="c").reason == g.COOLDOWN
    assert check(guard, user="b").allowed  # forgotten to keep the table bounded
    assert list(guard._cooldown) == [
        ("on", "a@pbx.sip.example.com"),
        ("on", "c@pbx.sip.example.com"),
    ]


def test_usage_reports_mode_on_unless_asked() -> None:
    guard = Guard(rem_config(), clock=FakeClock(1000.0))
    guard.record("activate_client", "a@r", "on")
    guard.record("activate_client", "b@r", "dry-run")
    guard.record("activate_account", "c@r", "dry-run")
    assert guard.usage() == {"activate_client": 1}
    assert guard.usage("dry-run") == {"activate_client": 1, "activate_account": 1}
