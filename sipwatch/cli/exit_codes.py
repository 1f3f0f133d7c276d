"""The exit codes of every ``sipwatch`` command: one definition, one table.

Scripts and systemd units act on these numbers, so they are stable and mean the same thing in
every command.  Each command declares which of them it can return (``COMMAND_EXIT_CODES``);
its ``--help`` lists exactly those (``help_epilog``), the README's table is rendered from
this module (``markdown_table``) and a test runs every command into each of its codes
(``tests/test_exit_codes.py``): a code no command can reach is not listed.
"""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    """What a ``sipwatch`` command's exit status means (``meaning`` says it in words)."""

    OK = 0
    PROBLEM = 1
    USAGE = 2
    UNAVAILABLE = 3
    FAILED = 4
    REFUSED = 5
    NOT_REGISTERED = 6
    INTERRUPTED = 130

    @property
    def meaning(self) -> str:
        return _DOCS[self]


_DOCS: dict[ExitCode, str] = {
    ExitCode.OK: "done: report printed, change applied and verified, or nothing to do",
    ExitCode.PROBLEM: "nothing was changed: declined, the action cannot act here, or no cause "
    "has an action",
    ExitCode.USAGE: "bad arguments, configuration or rules (also: the listen address in use)",
    ExitCode.UNAVAILABLE: "input unreadable, or database/Redis/Docker unreachable or without "
    "the jambonz tables",
    ExitCode.FAILED: "the change failed or could not be verified (rolled back)",
    ExitCode.REFUSED: "a safety check refused the change (unproven secret, implicit target, "
    "attack traffic, policy)",
    ExitCode.NOT_REGISTERED: "applied, but the device did not register within --wait",
    ExitCode.INTERRUPTED: "interrupted (Ctrl-C)",
}

_E = ExitCode
#: Which codes each command can return.  A test drives every command into every code listed.
COMMAND_EXIT_CODES: dict[str, tuple[ExitCode, ...]] = {
    "replay": (_E.OK, _E.USAGE, _E.UNAVAILABLE, _E.INTERRUPTED),
    "diagnose": (_E.OK, _E.USAGE, _E.UNAVAILABLE, _E.INTERRUPTED),
    "fix": (
        _E.OK,
        _E.PROBLEM,
        _E.USAGE,
        _E.UNAVAILABLE,
        _E.FAILED,
        _E.REFUSED,
        _E.NOT_REGISTERED,
        _E.INTERRUPTED,
    ),
    "check-config": (_E.OK, _E.USAGE),
    # SIGINT and SIGTERM both stop the daemon cleanly (0); a listen address in use is a
    # configuration problem (USAGE, and the unit's RestartPreventExitStatus=2).
    "run": (_E.OK, _E.USAGE),
}


def help_epilog(command: str) -> str:
    """The ``exit codes:`` block appended to a command's ``--help``."""
    lines = ["exit codes:"]
    for code in COMMAND_EXIT_CODES[command]:
        lines.append(f"  {int(code):<3d} {code.meaning}")
    return "\n".join(lines)


def markdown_table() -> str:
    """The README's exit-code table (a test compares the README with this)."""
    rows = ["| code | meaning | commands |", "|---|---|---|"]
    for code in ExitCode:
        commands = [c for c, codes in COMMAND_EXIT_CODES.items() if code in codes]
        rows.append(f"| {int(code)} | {code.meaning} | {', '.join(commands)} |")
    return "\n".join(rows)
