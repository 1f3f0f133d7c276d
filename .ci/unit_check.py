"""Required directives of systemd/sipwatch.service.

``systemd-analyze verify`` (run by .ci/deploy-lint.sh) proves the unit parses and
``systemd-analyze security`` scores its exposure, but neither knows sipwatch's contract: how
it is started and reloaded, where its secrets come from, and the hardening that
docs/deployment.md promises.  A drop of any line below fails CI instead of silently
weakening the service.

Usage: python .ci/unit_check.py [sipwatch.service]   (exit 1 and one line per problem)
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

#: directive -> the value it must have (every assignment of a directive is collected;
#: the required value must be among them).
REQUIRED: dict[str, str] = {
    "Type": "exec",
    "User": "sipwatch",
    "ExecStart": "/opt/sipwatch/bin/sipwatch run --config /etc/sipwatch/sipwatch.toml",
    "ExecReload": "/bin/kill -HUP $MAINPID",
    "Restart": "on-failure",
    "EnvironmentFile": "-/etc/sipwatch/sipwatch.env",
    "StandardOutput": "journal",
    "StateDirectory": "sipwatch",
    "NoNewPrivileges": "yes",
    "ProtectSystem": "strict",
    "PrivateTmp": "yes",
    "PrivateDevices": "yes",
    "CapabilityBoundingSet": "",
    "AmbientCapabilities": "",
    "RestrictAddressFamilies": "AF_UNIX AF_INET AF_INET6",
    "SystemCallFilter": "@system-service",
    "SystemCallArchitectures": "native",
    "ProtectKernelTunables": "yes",
    "ProtectKernelModules": "yes",
    "ProtectKernelLogs": "yes",
    "ProtectControlGroups": "yes",
    "LockPersonality": "yes",
    "MemoryDenyWriteExecute": "yes",
    "RestrictNamespaces": "yes",
    "RestrictSUIDSGID": "yes",
    "RestrictRealtime": "yes",
}
#: directives that must be present with one of these values
ONE_OF: dict[str, tuple[str, ...]] = {
    # pm2 logs live under /home/admin: either /home read-only, or an empty /home with only
    # the log directory bound in (the unit's choice), never full access.
    "ProtectHome": ("yes", "read-only", "tmpfs"),
}
#: directives that must be present with a value of this form
PATTERN: dict[str, re.Pattern[str]] = {
    # a delay between restarts, so a crash loop does not spin (StartLimit* then stops it)
    "RestartSec": re.compile(r"^[1-9][0-9]*(s|sec|min)?$"),
    # room for the web server's connection cap, every followed file, the database and Redis
    # pools and the HEP sockets, far above what a flood of scrapes can take (at least 4096)
    "LimitNOFILE": re.compile(r"^([4-9][0-9]{3}|[1-9][0-9]{4,})$"),
}
#: (directive, value) pairs that must not be active
FORBIDDEN: tuple[tuple[str, str], ...] = (
    # root-equivalent; documented commented out, for Docker sources only
    ("SupplementaryGroups", "docker"),
    ("User", "root"),
    ("Type", "notify"),  # sipwatch sends no sd_notify: the start would time out
    ("DynamicUser", "yes"),  # file ACLs for the pm2 logs need a stable UID
)
_ASSIGNMENT = re.compile(r"^([A-Za-z][A-Za-z0-9]*)=(.*)$")


def parse(text: str) -> dict[str, list[str]]:
    """Directive -> every value assigned to it (comments dropped, continuations joined)."""
    values: dict[str, list[str]] = {}
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith(("#", ";"))):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line = pending + line
        pending = ""
        if line.startswith("["):
            continue
        match = _ASSIGNMENT.match(line)
        if match:
            values.setdefault(match.group(1), []).append(match.group(2).strip())
    return values


def check_text(text: str) -> list[str]:
    """All missing or forbidden directives; empty means the unit passes."""
    values = parse(text)
    problems = []
    for key, wanted in REQUIRED.items():
        if wanted not in values.get(key, []):
            shown = wanted if wanted else "(empty)"
            problems.append(f"missing {key}={shown}")
    for key, allowed in ONE_OF.items():
        if not any(v in allowed for v in values.get(key, [])):
            problems.append(f"{key} must be one of {', '.join(allowed)}")
    for key, pattern in PATTERN.items():
        if not any(pattern.match(v) for v in values.get(key, [])):
            problems.append(f"{key} is missing or not of the form {pattern.pattern}")
    for key, bad in FORBIDDEN:
        if any(bad in v.split() for v in values.get(key, [])):
            problems.append(f"{key}={bad} must not be active")
    return problems


def main(argv: list[str]) -> int:
    path = Path(argv[0]) if argv else Path("systemd/sipwatch.service")
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        print(f"{path}: cannot read: {exc.strerror}", file=sys.stderr)
        return 1
    problems = check_text(text)
    for problem in problems:
        print(f"{path}: {problem}", file=sys.stderr)
    if not problems:
        print(f"{path}: required directives OK")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
