"""Every root cause, end to end: seeded jambonz rows in MariaDB, registrations in Redis,
registration webhooks on a local HTTP server, and the real rule files."""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Callable
from typing import Any

import pytest

from sipwatch.diagnosis.crypto import encrypt
from sipwatch.diagnosis.db import Database, DbSettings
from sipwatch.diagnosis.engine import Diagnosis, DiagnosisEngine
from sipwatch.diagnosis.jambonz import JambonzDb
from sipwatch.diagnosis.redis_store import RegistrationStore
from sipwatch.diagnosis.rules import Rule, default_rules_dir, load_rules
from sipwatch.diagnosis.symptom import Symptom
from tests.jambonz_db import (
    TEST_SECRET,
    RedisSeeder,
    Seeder,
    WebhookServer,
    closed_port,
    create_database,
    drop_database,
    schema_statements,
    unique_name,
    unique_realm,
)

CREDS_403 = {"status": 403, "x_reason": "Invalid credentials", "challenged": True}


class Metrics:
    def __init__(self) -> None:
        self.causes: list[tuple[str, str]] = []
        self.errors: list[str] = []

    def observe_root_cause(self, cause_id: str, severity: str) -> None:
        self.causes.append((cause_id, severity))

    def observe_diagnosis_error(self, kind: str) -> None:
        self.errors.append(kind)


@pytest.fixture(scope="module")
def rules() -> list[Rule]:
    return load_rules(default_rules_dir())


EngineFactory = Callable[..., DiagnosisEngine]


@pytest.fixture
def make_engine(
    rules: list[Rule], jambonz_db: JambonzDb, registration_store: RegistrationStore
) -> EngineFactory:
    def make(**kw: Any) -> DiagnosisEngine:
        options: dict[str, Any] = {
            "db": jambonz_db,
            "redis": registration_store,
            "secret": TEST_SECRET,
            "metrics": Metrics(),
            "probe_timeout": 1.0,
        }
        options.update(kw)
        return DiagnosisEngine(rules, **options)

    return make


def ids(d: Diagnosis) -> list[str]:
    return [c.id for c in d.causes]


def cause(d: Diagnosis, cause_id: str) -> Any:
    found = [c for c in d.causes if c.id == cause_id]
    assert found, f"{cause_id} not in {ids(d)}"
    return found[0]


async def healthy(seeder: Seeder, user: str = "alice") -> tuple[str, str]:
    realm = unique_realm()
    acct = await seeder.account(realm)
    await seeder.client(acct, user)
    return realm, acct


# ------------------------------------------------------------------------ negative cases


async def test_healthy_user_has_no_cause(
    seeder: Seeder, redis_seeder: RedisSeeder, make_engine: EngineFactory
) -> None:
    realm, _ = await healthy(seeder)
    await redis_seeder.register(f"alice@{realm}")
    engine = make_engine()
    for symptom in (
        Symptom("alice", realm),
        Symptom("alice", realm, status=200, challenged=True, x_reason=""),
        Symptom("alice", realm, status=401, challenged=False),
    ):
        d = await engine.diagnose(symptom)
        assert d.causes == [], ids(d)
        assert d.unknown == []
        assert d.registered_now is True and d.flavour == "sidecar"


async def test_healthy_webhook_account_has_no_cause(
    seeder: Seeder, webhook_server: WebhookServer, make_engine: EngineFactory
) -> None:
    realm = unique_realm()
    await seeder.account(realm, hook_sid=await seeder.webhook(webhook_server.url("fail")))
    d = await make_engine().diagnose(Symptom("alice", realm, status=200))
    assert d.causes == []


# ---------------------------------------------------------------------- log-level causes


async def test_realm_is_ip(make_engine: EngineFactory) -> None:
    d = await make_engine().diagnose(
        Symptom("alice", "203.0.113.5", status=403, challenged=False, x_reason="")
    )
    assert ids(d) == ["realm_is_ip"]  # realm_unknown is suppressed
    assert cause(d, "realm_is_ip").confidence == "confirmed"


async def test_realm_is_ip_from_request_uri_only(
    seeder: Seeder, make_engine: EngineFactory
) -> None:
    realm, _ = await healthy(seeder)
    d = await make_engine().diagnose(
        Symptom("alice", realm, status=403, challenged=False, request_uri_host="203.0.113.5")
    )
    assert ids(d) == ["realm_is_ip"]


async def test_registrar_down(seeder: Seeder, make_engine: EngineFactory) -> None:
    realm, _ = await healthy(seeder)
    d = await make_engine().diagnose(Symptom("alice", realm, status=503))
    assert ids(d) == ["registrar_down"]
    c = cause(d, "registrar_down")
    assert c.severity == "critical" and c.remediation == "restart_registrar"
    assert c.fix_command == (
        f"sipwatch fix --user alice --domain {realm} --action restart_registrar"
    )
    d = await make_engine(db=None).diagnose(
        Symptom("alice", realm, registrar_events=frozenset({"no_connected_clients"}))
    )
    assert ids(d) == ["registrar_down"]


@pytest.mark.parametrize(
    "symptom_kw",
    [
        {"distinct_users_from_ip": 25},
        {"user_agent": "friendly-scanner"},
        {"user_agent": "Mozilla SIPVicious 0.3"},
        {"user": "admin' OR 1=1 --"},
    ],
)
async def test_scanner(seeder: Seeder, make_engine: EngineFactory, symptom_kw: Any) -> None:
    realm = unique_realm()
    await seeder.account(realm)
    kw = {"user": "admin", "domain": realm, "source_ip": "192.0.2.66", **CREDS_403, **symptom_kw}
    metrics = Metrics()
    d = await make_engine(metrics=metrics).diagnose(Symptom(**kw))
    assert ids(d)[0] == "scanner"
    assert "client_missing" not in ids(d) and "credentials_rejected" not in ids(d)
    assert d.attack is True
    assert ("scanner", "warning") in metrics.causes
    assert any("attacker-shaped" in u for u in d.unknown)


async def test_one_numeric_user_on_ip_domain_is_a_misconfigured_phone(
    make_engine: EngineFactory,
) -> None:
    """A phone configured with the SBC's IP as domain: fix the phone, it is no attack."""
    d = await make_engine().diagnose(Symptom("1001", "198.51.100.9", status=403, challenged=False))
    assert ids(d) == ["realm_is_ip"]


async def test_numeric_users_on_ip_domain_from_one_ip_are_a_scanner(
    make_engine: EngineFactory,
) -> None:
    d = await make_engine().diagnose(
        Symptom(
            "1001",
            "198.51.100.9",
            source_ip="185.0.0.9",
            status=403,
            challenged=False,
            distinct_users_from_ip=3,
        )
    )
    assert ids(d) == ["scanner"]


async def test_numeric_user_of_a_real_realm_is_not_a_scanner(
    seeder: Seeder, make_engine: EngineFactory
) -> None:
    realm, _ = await healthy(seeder, user="1001")
    d = await make_engine().diagnose(Symptom("1001", realm, **CREDS_403))
    assert ids(d) == ["credentials_mismatch"]


# ------------------------------------------------------------------------ database causes


async def test_realm_unknown_with_similar_realms(
    seeder: Seeder, make_engine: EngineFactory
) -> None:
    base = f"t{secrets.token_hex(4)}.net"
    await seeder.account(f"acme.{base}")
    d = await make_engine().diagnose(
        Symptom(
            "alice",
            f"acne.{base}",
            status=403,
            challenged=False,
            x_reason="Unknown or invalid realm",
        )
    )
    assert ids(d) == ["realm_unknown"]
    c = cause(d, "realm_unknown")
    assert c.confidence == "confirmed" and c.remediation == "set_account_realm"
    assert c.evidence["similar_realms"] == [f"acme.{base}"]
    assert c.evidence["tried_realms"] == [f"acne.{base}", base]
    assert f"acme.{base}" in c.summary


async def test_realm_unknown_suggests_a_typo_fix(
    seeder: Seeder, make_engine: EngineFactory
) -> None:
    tag = secrets.token_hex(4)
    await seeder.account(f"acme{tag}.sip.example.com")
    d = await make_engine().diagnose(Symptom("bob", f"acme{tag}.sip.exmaple.com"))
    assert ids(d) == ["realm_unknown"]
    assert f"acme{tag}.sip.example.com" in cause(d, "realm_unknown").evidence["similar_realms"]


async def test_realm_of_parent_domain_is_found(seeder: Seeder, make_engine: EngineFactory) -> None:
    realm, _ = await healthy(seeder)
    d = await make_engine().diagnose(Symptom("alice", f"dev.{realm}"))
    assert d.causes == []


async def test_account_inactive(seeder: Seeder, make_engine: EngineFactory) -> None:
    realm = unique_realm()
    acct = await seeder.account(realm, active=False, deactivated_reason="trial ended")
    await seeder.client(acct, "alice")
    d = await make_engine().diagnose(
        Symptom(
            "alice", realm, status=403, challenged=False, x_reason="Account has been deactivated"
        )
    )
    assert ids(d) == ["account_inactive"]
    c = cause(d, "account_inactive")
    assert c.evidence["deactivated_reason"] == "trial ended"
    assert c.remediation == "activate_account"
    assert "trial ended" in c.summary


async def test_client_missing(seeder: Seeder, make_engine: EngineFactory) -> None:
    realm, _ = await healthy(seeder)
    other_realm = unique_realm("other")
    user = f"carol-{secrets.token_hex(3)}"  # the database is shared: other realms are ours
    await seeder.client(await seeder.account(other_realm), user)
    d = await make_engine().diagnose(Symptom(user, realm, **CREDS_403))
    assert ids(d) == ["client_missing"]
    c = cause(d, "client_missing")
    assert c.evidence["other_realms"] == [other_realm]
    assert c.evidence["client_rows"] == 0
    assert c.fix_command == (
        f"sipwatch fix --user {user} --domain {realm} --action create_client --generate"
    )


async def test_client_missing_uses_the_authorization_username(
    seeder: Seeder, make_engine: EngineFactory
) -> None:
    realm, _ = await healthy(seeder)
    d = await make_engine().diagnose(Symptom("alice", realm, auth_username="alice2", **CREDS_403))
    assert ids(d) == ["client_missing"]
    assert cause(d, "client_missing").evidence["lookup_username"] == "alice2"


async def test_client_inactive(seeder: Seeder, make_engine: EngineFactory) -> None:
    realm = unique_realm()
    acct = await seeder.account(realm)
    await seeder.client(acct, "dave", active=False)
    d = await make_engine().diagnose(Symptom("dave", realm, **CREDS_403))
    assert ids(d) == ["client_inactive"]
    assert cause(d, "client_inactive").remediation == "activate_client"


async def test_client_duplicate(seeder: Seeder, make_engine: EngineFactory) -> None:
    realm = unique_realm()
    acct = await seeder.account(realm)
    prefix = f"{secrets.token_hex(4)}-0000-0000-0000-0000000000"
    await seeder.client(acct, "erin", password="first", sid=f"{prefix}e1")
    await seeder.client(acct, "erin", password="second", sid=f"{prefix}e2")
    d = await make_engine().diagnose(Symptom("erin", realm, **CREDS_403))
    assert ids(d) == ["client_duplicate"]
    c = cause(d, "client_duplicate")
    assert c.evidence["client_rows"] == 2
    assert c.evidence["client_sid"].endswith("e1")


async def test_client_password_plaintext(seeder: Seeder, make_engine: EngineFactory) -> None:
    realm = unique_realm()
    acct = await seeder.account(realm)
    await seeder.client(acct, "frank", stored="frankpass")
    d = await make_engine().diagnose(Symptom("frank", realm, status=500, challenged=True))
    assert ids(d) == ["client_password_plaintext"]  # the log-only fallback is hidden
    c = cause(d, "client_password_plaintext")
    assert c.evidence["password_form"] == "plaintext"
    assert c.remediation == "reencrypt_password"
    assert "frankpass" not in repr(d)


async def test_client_password_undecryptable(seeder: Seeder, make_engine: EngineFactory) -> None:
    realm = unique_realm()
    acct = await seeder.account(realm)
    await seeder.client(acct, "gina", stored=encrypt("gina-pw", "the-api-servers-other-secret"))
    await seeder.client(acct, "henry")  # encrypted with TEST_SECRET
    d = await make_engine().diagnose(Symptom("gina", realm, status=500, challenged=True))
    assert ids(d) == ["client_password_undecryptable"]
    # the other encrypted passwords of the database decrypt: this row is the odd one out
    ok, sampled = (
        cause(d, "client_password_undecryptable").evidence["other_clients_decrypting"].split("/")
    )
    assert 1 <= int(ok) <= int(sampled)


async def test_credentials_mismatch(seeder: Seeder, make_engine: EngineFactory) -> None:
    realm, _ = await healthy(seeder)
    d = await make_engine().diagnose(Symptom("alice", realm, source_ip="198.51.100.3", **CREDS_403))
    assert ids(d) == ["credentials_mismatch"]
    assert cause(d, "credentials_mismatch").confidence == "confirmed"
    # Without the secret the password check is unknown: still the likely cause, suspected.
    d = await make_engine(secret=None).diagnose(Symptom("alice", realm, **CREDS_403))
    assert ids(d) == ["credentials_mismatch"]
    assert cause(d, "credentials_mismatch").confidence == "suspected"
    assert any("secret" in u for u in d.unknown)


async def test_credentials_mismatch_with_only_a_status(
    seeder: Seeder, make_engine: EngineFactory
) -> None:
    realm, _ = await healthy(seeder)
    d = await make_engine().diagnose(Symptom("alice", realm, status=403))
    assert ids(d) == ["credentials_mismatch"]


async def test_legacy_crypto_secret(seeder: Seeder, make_engine: EngineFactory) -> None:
    realm = unique_realm()
    acct = await seeder.account(realm)
    await seeder.client(acct, "ivan", stored=encrypt("ivan-pw", TEST_SECRET, legacy_ctr=True))
    d = await make_engine(legacy_crypto=True).diagnose(Symptom("ivan", realm, **CREDS_403))
    assert ids(d) == ["credentials_mismatch"]
    d = await make_engine().diagnose(Symptom("ivan", realm, **CREDS_403))
    assert ids(d) == ["client_password_undecryptable"]


async def test_webhook_missing_on_legacy(seeder: Seeder, make_engine: EngineFactory) -> None:
    realm, _ = await healthy(seeder)
    symptom = Symptom(
        "alice", realm, status=403, challenged=False, x_reason="Unknown or invalid realm"
    )
    d = await make_engine(registrar_flavour="legacy").diagnose(symptom)
    assert ids(d) == ["webhook_missing"]
    # auto: only sbc-registrar refuses a realm that has an account before challenging.
    d = await make_engine().diagnose(symptom)
    assert ids(d) == ["webhook_missing"] and d.flavour == "legacy"
    # Same account on the sidecar without any symptom: nothing wrong.
    d = await make_engine(registrar_flavour="sidecar").diagnose(Symptom("alice", realm))
    assert d.causes == []


async def test_legacy_realm_served_by_service_provider_hook(
    seeder: Seeder, webhook_server: WebhookServer, make_engine: EngineFactory
) -> None:
    root = f"sp{secrets.token_hex(4)}.com"
    hook = await seeder.webhook(webhook_server.url("fail"))
    await seeder.service_provider(root_domain=root, registration_hook_sid=hook)
    d = await make_engine(registrar_flavour="legacy").diagnose(
        Symptom("alice", f"acme.{root}", **CREDS_403)
    )
    assert ids(d) == ["webhook_denied"]
    assert cause(d, "webhook_denied").evidence["webhook_source"] == "service_provider"


@pytest.mark.parametrize(
    ("behaviour", "expected", "status"),
    [
        ("notfound", "webhook_http_error", 404),
        ("html", "webhook_bad_response", 500),
        ("empty", "webhook_bad_response", 500),
        ("fail", "webhook_denied", 403),
    ],
)
async def test_webhook_causes(
    seeder: Seeder,
    webhook_server: WebhookServer,
    make_engine: EngineFactory,
    behaviour: str,
    expected: str,
    status: int,
) -> None:
    realm = unique_realm()
    hook = await seeder.webhook(webhook_server.url(behaviour), username="hu", password="hookpw9")
    await seeder.account(realm, hook_sid=hook)
    kw: dict[str, Any] = {"status": status, "challenged": True}
    if status == 403:
        kw["x_reason"] = "Invalid credentials"
    d = await make_engine().diagnose(Symptom("alice", realm, **kw))
    assert ids(d) == [expected]
    c = cause(d, expected)
    assert c.evidence["registration_webhook"] == webhook_server.url(behaviour)
    assert "hookpw9" not in repr(d)
    # The probe sent dummy credentials, never the device's.
    body = webhook_server.requests[-1]["body"]
    assert '"username":"sipwatch-probe"' in body


async def test_webhook_unreachable(seeder: Seeder, make_engine: EngineFactory) -> None:
    realm = unique_realm()
    hook = await seeder.webhook(f"http://127.0.0.1:{closed_port()}/reg")
    await seeder.account(realm, hook_sid=hook)
    d = await make_engine().diagnose(Symptom("alice", realm, status=500, challenged=True))
    assert ids(d) == ["webhook_unreachable"]
    assert cause(d, "webhook_unreachable").severity == "critical"


async def test_webhook_hanging_is_unreachable_within_the_probe_timeout(
    seeder: Seeder, webhook_server: WebhookServer, make_engine: EngineFactory
) -> None:
    realm = unique_realm()
    await seeder.account(realm, hook_sid=await seeder.webhook(webhook_server.url("hang")))
    start = time.monotonic()
    d = await make_engine(probe_timeout=0.5).diagnose(Symptom("alice", realm, status=0))
    assert ids(d) == ["webhook_unreachable"]
    assert time.monotonic() - start < 3.0


async def test_webhook_probes_can_be_turned_off(
    seeder: Seeder, webhook_server: WebhookServer, make_engine: EngineFactory
) -> None:
    realm = unique_realm()
    await seeder.account(realm, hook_sid=await seeder.webhook(webhook_server.url("notfound")))
    before = len(webhook_server.requests)
    d = await make_engine(webhook_probes=False).diagnose(Symptom("alice", realm, **CREDS_403))
    assert len(webhook_server.requests) == before
    assert ids(d) == ["webhook_denied"]
    assert cause(d, "webhook_denied").confidence == "suspected"
    assert any(u.startswith("webhook: probes disabled") for u in d.unknown), d.unknown


async def test_stale_cached_registration(
    seeder: Seeder, redis_seeder: RedisSeeder, make_engine: EngineFactory
) -> None:
    realm = unique_realm()
    acct = await seeder.account(realm)
    await seeder.client(acct, "jane", active=False)
    await redis_seeder.register(f"jane@{realm}", proxy="sip:198.51.100.20:5062")
    d = await make_engine().diagnose(Symptom("jane", realm))
    assert ids(d) == ["client_inactive", "stale_cached_registration"]
    c = cause(d, "stale_cached_registration")
    assert c.evidence["cached_proxy"] == "sip:198.51.100.20:5062"
    assert c.evidence["db_reject_reason"] == "client is deactivated"
    assert c.remediation == "flush_cached_registration"
    assert d.registered_now is True


async def test_stale_cached_registration_of_a_deactivated_account(
    seeder: Seeder, redis_seeder: RedisSeeder, make_engine: EngineFactory
) -> None:
    realm = unique_realm()
    acct = await seeder.account(realm, active=False)
    await seeder.client(acct, "kim")
    await redis_seeder.register(f"kim@{realm}")
    d = await make_engine().diagnose(Symptom("kim", realm))
    assert ids(d) == ["account_inactive", "stale_cached_registration"]


# --------------------------------------------------------------- attacker-shaped input


@pytest.mark.parametrize(
    ("user", "domain_suffix"),
    [
        ("alice' OR '1'='1", ""),
        ("%", ""),
        ("_lice", ""),
        ("al%", ""),
        ("用户😀", ""),
        ("a" * 10240, ""),
        ("bad\udcffuser", ""),
        ("nul\x00user", ""),
        ("alice", "%"),
        ("alice", "'; DROP TABLE accounts; --"),
    ],
)
async def test_attacker_shaped_input_is_handled_safely(
    seeder: Seeder, make_engine: EngineFactory, database: Database, user: str, domain_suffix: str
) -> None:
    realm, _ = await healthy(seeder)
    domain = realm + domain_suffix
    engine = make_engine()
    d = await engine.diagnose(Symptom(user, domain, source_ip="192.0.2.9", **CREDS_403))
    # Never matched as alice, never an exception, tables intact.
    assert "credentials_mismatch" not in ids(d)
    assert d.causes, "an attacker-shaped request still gets an explanation"
    rows = await database.fetch_all(
        "SELECT COUNT(*) AS n FROM accounts WHERE sip_realm = %s", (realm,)
    )
    assert rows == [{"n": 1}]
    for c in d.causes:
        if c.fix_command:
            # Placeholders are shell-quoted: one token per value.
            import shlex

            parts = shlex.split(c.fix_command)
            assert parts[:2] == ["sipwatch", "fix"]
            assert parts[parts.index("--user") + 1] in (user, "alice")


async def test_user_like_pattern_does_not_match_other_clients(
    seeder: Seeder, make_engine: EngineFactory
) -> None:
    realm, _ = await healthy(seeder)
    for user in ("_lice", "al%", "%"):
        d = await make_engine().diagnose(Symptom(user, realm, **CREDS_403))
        assert ids(d) == ["client_missing"], user


# ------------------------------------------------------------------------- degradation


async def test_database_unavailable_degrades_to_log_only(rules: list[Rule]) -> None:
    db = Database(DbSettings(port=closed_port(), password="pw-unused-123", database="jambones"))
    metrics = Metrics()
    engine = DiagnosisEngine(rules, db=JambonzDb(db), redis=None, secret=None, metrics=metrics)
    try:
        start = time.monotonic()
        d = await engine.diagnose(
            Symptom(
                "alice",
                "acme.example.com",
                status=403,
                challenged=False,
                x_reason="Account has been deactivated",
            )
        )
        assert time.monotonic() - start < 2.0
        assert ids(d) == ["account_inactive"]
        assert cause(d, "account_inactive").confidence == "suspected"
        assert "db_unavailable" in d.errors and metrics.errors.count("db_unavailable") == 1
        assert any(u.startswith("database: db_unavailable") for u in d.unknown)
        assert "pw-unused-123" not in repr(d)
        d = await engine.diagnose(Symptom("alice", "acme.example.com", **CREDS_403))
        assert ids(d) == ["credentials_rejected"]
    finally:
        await db.close()


async def test_slow_database_times_out_without_hanging(
    rules: list[Rule], silent_server: int
) -> None:
    db = Database(
        DbSettings(port=silent_server, connect_timeout=0.3, read_timeout=0.5, query_timeout=0.8)
    )
    metrics = Metrics()
    engine = DiagnosisEngine(rules, db=JambonzDb(db), redis=None, secret=None, metrics=metrics)
    try:
        start = time.monotonic()
        results = await asyncio.gather(
            *(engine.diagnose(Symptom(f"u{i}", "acme.example.com", status=503)) for i in range(20))
        )
        assert time.monotonic() - start < 3.0
        for d in results:
            assert ids(d) == ["registrar_down"]
            assert "timeout" in d.errors
        assert "timeout" in metrics.errors
    finally:
        await db.close()


async def test_missing_tables_are_reported(rules: list[Rule]) -> None:
    name = unique_name()
    keep = [s for s in schema_statements() if "clients" not in s]
    await create_database(name, keep)
    db = Database(DbSettings(database=name))
    metrics = Metrics()
    try:
        from tests.jambonz_db import Seeder as _Seeder
        from tests.jambonz_db import admin_connect

        conn = await admin_connect(name)
        realm = unique_realm()
        await _Seeder(conn).account(realm)
        conn.close()
        engine = DiagnosisEngine(rules, db=JambonzDb(db), redis=None, secret=None, metrics=metrics)
        d = await engine.diagnose(Symptom("alice", realm, **CREDS_403))
        assert "missing_table" in d.errors and metrics.errors == ["missing_table"]
        assert any("clients" in u for u in d.unknown)
        assert ids(d) == ["credentials_rejected"]
    finally:
        await db.close()
        await drop_database(name)


async def test_redis_unavailable_is_unknown(
    seeder: Seeder, jambonz_db: JambonzDb, rules: list[Rule]
) -> None:
    realm = unique_realm()
    acct = await seeder.account(realm)
    await seeder.client(acct, "lou", active=False)
    store = RegistrationStore.from_url(f"redis://127.0.0.1:{closed_port()}/0", timeout=0.3)
    metrics = Metrics()
    engine = DiagnosisEngine(rules, db=jambonz_db, redis=store, secret=TEST_SECRET, metrics=metrics)
    try:
        d = await engine.diagnose(Symptom("lou", realm))
        assert ids(d) == ["client_inactive"]
        assert d.registered_now is None
        assert metrics.errors == ["redis_unavailable"]
        assert any(u.startswith("redis: unavailable") for u in d.unknown)
    finally:
        await store.close()


class CountingDatabase(Database):
    def __init__(self, settings: DbSettings) -> None:
        super().__init__(settings)
        self.queries = 0

    async def fetch_all(self, sql: str, params: Any = ()) -> list[dict[str, Any]]:
        self.queries += 1
        return await super().fetch_all(sql, params)


async def test_flood_is_served_from_the_cache(
    seeder: Seeder, db_settings: DbSettings, rules: list[Rule]
) -> None:
    realm = unique_realm()
    acct = await seeder.account(realm)
    await seeder.client(acct, "mia", active=False)
    db = CountingDatabase(db_settings)
    engine = DiagnosisEngine(rules, db=JambonzDb(db), redis=None, secret=TEST_SECRET)
    try:
        results = await asyncio.gather(
            *(engine.diagnose(Symptom("mia", realm, **CREDS_403)) for _ in range(100))
        )
        assert all(ids(d) == ["client_inactive"] for d in results)
        assert db.queries == 3  # one realm lookup, one secret proof, one clients lookup
        await engine.diagnose(Symptom("mia", realm, status=403))
        assert db.queries == 3
        uncached = DiagnosisEngine(
            rules, db=JambonzDb(db), redis=None, secret=TEST_SECRET, cache_ttl=0
        )
        await uncached.diagnose(Symptom("mia", realm))
        assert db.queries == 6
    finally:
        await db.close()


async def test_metrics_observe_each_cause(seeder: Seeder, make_engine: EngineFactory) -> None:
    realm = unique_realm()
    acct = await seeder.account(realm)
    await seeder.client(acct, "ned", active=False)
    metrics = Metrics()
    await make_engine(metrics=metrics).diagnose(Symptom("ned", realm))
    assert metrics.causes == [("client_inactive", "error")]
    assert metrics.errors == []


async def test_registrar_log_only_causes(make_engine: EngineFactory) -> None:
    engine = make_engine(db=None, redis=None)
    d = await engine.diagnose(
        Symptom("a", "acme.example.com", status=503, registrar_events=frozenset({"limits"}))
    )
    assert ids(d) == ["device_limit_reached"]
    d = await engine.diagnose(
        Symptom(
            "a",
            "acme.example.com",
            status=500,
            challenged=True,
            registrar_events=frozenset({"db_error"}),
        )
    )
    assert ids(d) == ["registrar_db_error"]
    d = await engine.diagnose(
        Symptom(
            "a",
            "acme.example.com",
            status=500,
            challenged=True,
            registrar_events=frozenset({"plaintext_password"}),
        )
    )
    assert ids(d) == ["client_password_plaintext"]
    assert cause(d, "client_password_plaintext").confidence == "suspected"
    d = await engine.diagnose(Symptom("a", "acme.example.com", status=500, challenged=True))
    assert ids(d) == ["registrar_internal_error"]
    d = await engine.diagnose(
        Symptom(
            "a",
            "acme.example.com",
            status=403,
            challenged=False,
            registrar_events=frozenset({"register_no_realm"}),
            request_uri_host="10.1.1.1",
        )
    )
    assert ids(d) == ["realm_is_ip"]
    d = await engine.diagnose(
        Symptom(
            "a",
            "acme.example.com",
            status=403,
            challenged=False,
            registrar_events=frozenset({"spammer"}),
        )
    )
    assert ids(d) == ["scanner"]
    d = await engine.diagnose(
        Symptom(
            "a",
            "acme.example.com",
            status=500,
            challenged=True,
            registrar_events=frozenset({"webhook_no_status"}),
        )
    )
    assert ids(d) == ["webhook_bad_response"]
