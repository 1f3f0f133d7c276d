"""The named checks rules can use, and the evidence each one contributes.

A check is a tri-state fact about one symptom: True, False or None (could not be decided -
no database, probe disabled, no secret...).  Rules refer to checks by name; the loader
rejects unknown names, and the fact collector (``facts.py``) computes them.  Keeping the list
here lets both sides agree without importing each other.
"""

from __future__ import annotations

from types import MappingProxyType

_CHECKS: dict[str, tuple[str, tuple[str, ...]]] = {
    # name: (what it means, evidence keys it brings into a cause)
    "ip_used_as_domain": (
        "the Request-URI or To host is an IP address, not a SIP realm",
        ("domain", "request_uri_host"),
    ),
    "scanner_signal": (
        "the request looks like a SIP scanner: many usernames from one IP, a scanner "
        "User-Agent, or a garbage username",
        (
            "source_ip",
            "scanner_reasons",
            "distinct_users_from_ip",
            "failures_from_ip",
            "user_agent",
        ),
    ),
    "account_found": (
        "an account owns the To host (or its parent domain) as sip_realm",
        (
            "tried_realms",
            "account_sid",
            "account_name",
            "matched_realm",
            "via_parent_domain",
            "similar_realms",
        ),
    ),
    "account_active": (
        "the realm's account has is_active = 1",
        ("account_sid", "account_active", "deactivated_reason"),
    ),
    "account_has_webhook": (
        "the registrar authenticates this realm through a registration webhook",
        ("registration_webhook", "webhook_method", "webhook_source"),
    ),
    "realm_served_by_sp_hook": (
        "legacy registrar only: a service provider's root_domain webhook serves the realm",
        ("registration_webhook", "webhook_source"),
    ),
    "legacy_hook_found": (
        "legacy registrar only: lookupAuthHook finds a registration webhook for the realm",
        ("registration_webhook", "webhook_source", "account_sid"),
    ),
    "client_found": (
        "a clients row exists for the account and the Authorization (or To) username",
        ("account_sid", "lookup_username", "lookup_username_source", "client_rows", "other_realms"),
    ),
    "client_active": (
        "the client row jambonz uses (the first one) has is_active = 1",
        ("client_sid", "client_active"),
    ),
    "client_duplicate": (
        "more than one clients row has this username in the account",
        ("client_rows", "client_sid", "client_sids", "client_rows_active"),
    ),
    "client_password_encrypted": (
        "the stored password has jambonz's encrypted {iv, content} form",
        ("client_sid", "password_form"),
    ),
    "client_password_decrypts": (
        "the configured ENCRYPTION_SECRET/JWT_SECRET decrypts the stored password",
        ("client_sid", "decrypt_result", "other_clients_decrypting", "legacy_crypto"),
    ),
    "webhook_reachable": (
        "the registration webhook accepted a connection and answered in time",
        ("registration_webhook", "webhook_probe", "webhook_probe_detail", "webhook_probe_ms"),
    ),
    "webhook_http_ok": (
        "the registration webhook answered HTTP 200",
        ("registration_webhook", "webhook_probe", "webhook_http_status"),
    ),
    "webhook_response_valid": (
        "the registration webhook answered JSON with a string 'status'",
        ("registration_webhook", "webhook_probe", "webhook_probe_detail"),
    ),
    "registration_cached": (
        "Redis holds a registration (user:<aor>) for this AOR right now",
        ("registered_now", "cached_proxy", "cached_protocol", "cached_expires_in"),
    ),
    "db_would_reject": (
        "the database state means a fresh REGISTER for this AOR would be refused",
        ("db_reject_reason",),
    ),
}

CHECKS = MappingProxyType({name: desc for name, (desc, _) in _CHECKS.items()})
CHECK_EVIDENCE = MappingProxyType({name: keys for name, (_, keys) in _CHECKS.items()})

# Symptom fields a rule's match section may test, and the evidence they bring.
MATCH_EVIDENCE = MappingProxyType(
    {
        "status": ("status",),
        "x_reason": ("x_reason",),
        "challenged": ("challenged",),
        "registrar_events": ("registrar_events",),
    }
)
