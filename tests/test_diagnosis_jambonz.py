"""The jambonz lookups mirror db-helpers, against the real schema in MariaDB."""

from __future__ import annotations

import secrets

from sipwatch.diagnosis.jambonz import JambonzDb, db_text, parent_domain, safe_url
from tests.jambonz_db import Seeder, unique_realm


def test_parent_domain_drops_one_label_only_beyond_two() -> None:
    assert parent_domain("a.b.example.com") == "b.example.com"
    assert parent_domain("b.example.com") == "example.com"
    assert parent_domain("example.com") is None


def test_db_text_rejects_values_no_column_can_hold() -> None:
    assert db_text("alice", 64) == "alice"
    assert db_text("a" * 65, 64) is None
    assert db_text("alice" + " " * 100, 64) is not None  # PAD SPACE: MySQL would match
    assert db_text("bad\udcff", 64) is None


def test_safe_url_strips_credentials_and_query() -> None:
    assert safe_url("https://u:pw@hooks.example.com:8443/reg?token=abc#x") == (
        "https://hooks.example.com:8443/reg?..."
    )


async def test_exact_realm_then_parent_never_grandparent(
    seeder: Seeder, jambonz_db: JambonzDb
) -> None:
    base = f"p{secrets.token_hex(4)}.example.com"
    acct = await seeder.account(base)
    exact = await jambonz_db.lookup_account_by_sip_realm(base)
    assert exact.account is not None and exact.account.account_sid == acct
    assert not exact.via_parent
    child = await jambonz_db.lookup_account_by_sip_realm(f"dev.{base}")
    assert child.account is not None and child.via_parent
    assert child.tried == (f"dev.{base}", base)
    grandchild = await jambonz_db.lookup_account_by_sip_realm(f"x.dev.{base}")
    assert grandchild.account is None
    assert grandchild.tried == (f"x.dev.{base}", f"dev.{base}")


async def test_account_with_registration_webhook(seeder: Seeder, jambonz_db: JambonzDb) -> None:
    realm = unique_realm()
    hook = await seeder.webhook("https://u:hookpw@hooks.example.com/reg", "GET", "u", "hookpw")
    await seeder.account(realm, hook_sid=hook, active=False, deactivated_reason="unpaid")
    found = (await jambonz_db.lookup_account_by_sip_realm(realm)).account
    assert found is not None
    assert found.is_active is False and found.deactivated_reason == "unpaid"
    assert found.registration_hook is not None
    assert found.registration_hook.method == "GET"
    assert found.registration_hook.display_url == "https://hooks.example.com/reg"
    assert "hookpw" not in repr(found)


async def test_clients_in_server_order_including_duplicates(
    seeder: Seeder, jambonz_db: JambonzDb
) -> None:
    acct = await seeder.account(unique_realm())
    prefix = f"{secrets.token_hex(4)}-0000-0000-0000-00000000000"
    await seeder.client(acct, "alice", sid=f"{prefix}a", active=False)
    await seeder.client(acct, "alice", sid=f"{prefix}b")
    await seeder.client(acct, "bob")
    rows = await jambonz_db.lookup_clients(acct, "alice")
    assert [c.client_sid[-1] for c in rows] == ["a", "b"]
    assert rows[0].is_active is False
    assert "device-pw" not in repr(rows)
    assert await jambonz_db.lookup_clients(acct, "carol") == []


async def test_legacy_auth_hook_falls_back_to_service_provider_root_domain(
    seeder: Seeder, jambonz_db: JambonzDb
) -> None:
    root = f"r{secrets.token_hex(4)}.com"
    hook = await seeder.webhook("http://127.0.0.1:9/sp-hook")
    await seeder.service_provider(root_domain=root, registration_hook_sid=hook)
    got = await jambonz_db.lookup_auth_hook(f"anything.{root}")
    assert got.source == "service_provider" and got.matched == root
    assert got.webhook is not None and got.webhook.url.endswith("/sp-hook")
    # An account with its own hook wins; one without a hook is skipped (inner join).
    realm = f"acme.{root}"
    own = await seeder.webhook("http://127.0.0.1:9/own")
    await seeder.account(realm, hook_sid=own)
    got = await jambonz_db.lookup_auth_hook(realm)
    assert got.source == "account" and got.webhook is not None
    assert got.webhook.url.endswith("/own")
    assert got.webhook_secret == "wh-secret-0123456789"
    nohook = f"nohook.{root}"
    await seeder.account(nohook)
    assert (await jambonz_db.lookup_auth_hook(nohook)).source == "service_provider"
    assert (await jambonz_db.lookup_auth_hook(f"n{secrets.token_hex(4)}.org")).webhook is None


async def test_similar_realms_escape_like_wildcards(seeder: Seeder, jambonz_db: JambonzDb) -> None:
    tag = secrets.token_hex(3)
    await seeder.account(f"one.ex{tag}ample.com")
    await seeder.account(f"two.exa{tag}mple.com")
    found = await jambonz_db.similar_realms(f"typo.ex{tag}ample.com")
    assert found == [f"one.ex{tag}ample.com"]
    # '%' and '_' in the attacker's domain are literals, not wildcards.
    assert await jambonz_db.similar_realms(f"typo.ex%{tag}%.com") == []
    assert await jambonz_db.similar_realms(f"typo.ex_{tag}ample.com") == []


async def test_realms_with_client_and_other_passwords(
    seeder: Seeder, jambonz_db: JambonzDb
) -> None:
    realm_a, realm_b = unique_realm("a"), unique_realm("b")
    a = await seeder.account(realm_a)
    b = await seeder.account(realm_b)
    await seeder.client(b, "dora")
    assert await jambonz_db.realms_with_client("dora", a) == [realm_b]
    c1 = await seeder.client(a, "x1", stored="plain")
    await seeder.client(a, "x2")
    others = await jambonz_db.other_client_passwords(a, c1)
    assert len(others) == 1 and others[0] is not None and others[0].startswith('{"iv"')
    assert await jambonz_db.schema_version() == "0.9.6"
