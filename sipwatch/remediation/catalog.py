"""The remediation actions sipwatch knows: each one declared here, once, with what it does.

Why a separate, import-free module: the configuration schema (``[remediation.actions]`` keys),
the rule loader (``remediation:`` values) and ``sipwatch fix --help`` (``--action`` choices)
need the action ids, and must not pay for the implementations, which pull in asyncmy, redis,
aiohttp and cryptography (about a second of imports on a small host).

Adding an action: declare it here (``NEW = declare("new_action", ...)``), then implement it in
``sipwatch.remediation.actions`` with ``@implements(catalog.NEW)``.  Importing ``actions``
fails when a declared action has no implementation or an implementation names an action that
is not declared, so the two cannot drift.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Needs = Literal["database", "redis", "docker"]


@dataclass(frozen=True)
class ActionSpec:
    """One remediation action: its id (the rules' ``remediation:`` value) and its nature.

    ``encrypts``: it writes a client password in jambonz's encrypted form, so it must prove
    sipwatch's secret is the registrar's before writing (see ``sipwatch.diagnosis.secret``).
    """

    id: str
    needs: Needs
    summary: str
    encrypts: bool = False
    needs_password: bool = False


_DECLARED: dict[str, ActionSpec] = {}


def declare(
    action_id: str,
    *,
    needs: Needs,
    summary: str,
    encrypts: bool = False,
    needs_password: bool = False,
) -> ActionSpec:
    """Declare an action (once); the order of declaration is the order users see."""
    if action_id in _DECLARED:
        raise ValueError(f"remediation action {action_id!r} declared twice")
    spec = ActionSpec(action_id, needs, summary, encrypts, needs_password)
    _DECLARED[action_id] = spec
    return spec


CREATE_CLIENT = declare(
    "create_client",
    needs="database",
    summary="no clients row for the username: create one (encrypted, generated password)",
    encrypts=True,
    needs_password=True,
)
REENCRYPT_PASSWORD = declare(
    "reencrypt_password",
    needs="database",
    summary="clients.password stored in clear text: store the same password encrypted",
    encrypts=True,
)
ACTIVATE_CLIENT = declare(
    "activate_client", needs="database", summary="clients.is_active = 0: set it to 1"
)
ACTIVATE_ACCOUNT = declare(
    "activate_account",
    needs="database",
    summary="accounts.is_active = 0 without a deactivation reason: set it to 1",
)
SET_ACCOUNT_REALM = declare(
    "set_account_realm",
    needs="database",
    summary="no account owns the realm: set accounts.sip_realm of the account the operator names",
)
FLUSH_CACHED_REGISTRATION = declare(
    "flush_cached_registration",
    needs="redis",
    summary="DEL user:<aor> + ZREM active-user: force the next REGISTER to authenticate",
)
RESTART_REGISTRAR = declare(
    "restart_registrar",
    needs="docker",
    summary='drachtio answers 503 "no connected clients": restart the registrar container',
)

#: Every declared action id, in declaration order.
ACTION_IDS: tuple[str, ...] = tuple(_DECLARED)
#: The declarations by id.
ACTION_SPECS: dict[str, ActionSpec] = dict(_DECLARED)
