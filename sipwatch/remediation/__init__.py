"""Remediation: fix what the diagnosis found, safely, on request or automatically.

* ``catalog``  - the declaration of every action (import-free: config, rules and --help);
* ``actions``  - one class per action: plan (masked SQL, before/after), apply (transactional,
  idempotent), verify; encrypting actions prove the jambonz secret first;
* ``guard``    - policy: modes, allow-lists, never for attacks, budgets, cool-down, kill switch;
* ``audit``    - JSON log line plus the optional ``sipwatch_audit`` table;
* ``leader``   - MySQL ``GET_LOCK`` leadership so one instance in a cluster acts;
* ``auto``     - the daemon's :class:`AutoRemediator`;
* ``fix_flow`` - ``sipwatch fix``, the operator's command.

See docs/remediation.md.
"""
