"""Tests of sipwatch.config: loading, env overrides, validation messages, secret masking."""

from __future__ import annotations

import io
import re
import subprocess
import textwrap
import tomllib
from pathlib import Path

import pytest

from sipwatch.cli.check_config import check_config_main
from sipwatch.config import (
    REMEDIATION_ACTIONS,
    Config,
    ConfigError,
    HostPort,
    Secret,
    load_config,
    locate_keys,
    mask_url,
    parse_config,
    parse_host_port,
    parse_mysql_url,
)
from tests.cli_support import run_cli
from tests.daemon_runner import clean_env
from tools import config_docs

ROOT = Path(__file__).resolve().parent.parent
SLACK_URL = "slack://T1JJ3T3L2/A1BRTD4JD/TIiajkdnlazkcOXrIdevi7FQ/#oncall"
SLACK_TOKEN = "TIiajkdnlazkcOXrIdevi7FQ"


def write(tmp_path: Path, text: str, name: str = "sipwatch.toml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
    return path


def problems_of(path: Path, environ: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_config(path, environ=environ or {})
    return [str(p) for p in info.value.problems]


# ---------------------------------------------------------------------------------------------
# zero-config and defaults
# ---------------------------------------------------------------------------------------------


def test_no_file_at_all_is_a_valid_configuration() -> None:
    config = load_config(None, environ={}, search_paths=())
    assert config.meta.source is None
    assert config.sources.docker.enabled is True
    assert config.sources.docker.url is None
    assert config.sources.docker.drachtio_services == ("drachtio-sbc",)
    assert config.sources.docker.registrar_services == ("registrar", "sbc-sip-sidecar")
    assert config.sources.docker.tail == "0"
    assert config.metrics.listen == "127.0.0.1:9466"  # loopback unless asked: the API names users
    assert (config.metrics.host, config.metrics.port) == ("127.0.0.1", 9466)
    assert config.sip.timer_f_seconds == 32.0
    assert config.database.url is None and config.database.target() is None
    assert config.remediation.mode == "off"
    assert config.remediation.mode_for("restart_registrar") == "off"
    assert config.alerts.targets == ()
    assert config.logging.level == "info" and config.logging.format == "auto"
    assert config.meta.warnings == ()
    assert config == Config()


def test_search_path_is_used_when_it_exists(tmp_path: Path) -> None:
    path = write(tmp_path, "[sip]\ntimer_f_seconds = 8\n")
    config = load_config(None, environ={}, search_paths=(tmp_path / "missing.toml", path))
    assert config.meta.source == str(path)
    assert config.sip.timer_f_seconds == 8.0


def test_sipwatch_config_env_names_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, "[metrics]\ntop_n = 5\n")
    config = load_config(None, environ={"SIPWATCH_CONFIG": str(path)}, search_paths=())
    assert config.metrics.top_n == 5


def test_explicit_missing_file_is_an_error(tmp_path: Path) -> None:
    missing = tmp_path / "nope.toml"
    with pytest.raises(ConfigError) as info:
        load_config(missing, environ={})
    assert str(info.value.problems[0]) == f"{missing}: file not found"
    with pytest.raises(ConfigError) as info:
        load_config(None, environ={"SIPWATCH_CONFIG": str(missing)}, search_paths=())
    assert "file not found (from $SIPWATCH_CONFIG)" in str(info.value)


def test_docker_host_replaces_only_the_default(tmp_path: Path) -> None:
    env = {"DOCKER_HOST": "tcp://10.0.0.5:2375"}
    config = load_config(None, environ=env, search_paths=())
    assert config.sources.docker.url == "tcp://10.0.0.5:2375"
    assert config.meta.origins["sources.docker.url"] == "environment variable DOCKER_HOST"
    path = write(tmp_path, '[sources.docker]\nurl = "unix:///run/docker.sock"\n')
    assert load_config(path, environ=env).sources.docker.url == "unix:///run/docker.sock"


def test_unusable_docker_host_is_reported_against_the_variable() -> None:
    with pytest.raises(ConfigError) as info:
        load_config(None, environ={"DOCKER_HOST": "ssh://me@host"}, search_paths=())
    (problem,) = info.value.problems
    assert problem.where == "environment variable DOCKER_HOST"
    assert problem.path == "sources.docker.url"
    assert "unix:///path/to/docker.sock" in problem.message


# ---------------------------------------------------------------------------------------------
# error messages: file, line, key path, expectation
# ---------------------------------------------------------------------------------------------


def test_invalid_toml_names_file_and_line(tmp_path: Path) -> None:
    path = write(tmp_path, '[sip]\ntimer_f_seconds = 32\n\n[metrics\nlisten = "x"\n')
    (problem,) = problems_of(path)
    assert problem.startswith(f"{path}:4: invalid TOML")


def test_unknown_keys_name_line_path_and_suggestion(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        [sources.docker]
        enabeld = false

        [[alerts.targets]]
        url = "json://127.0.0.1:9/hook"

        [[alerts.targets]]
        name = "second"
        urll = "json://127.0.0.1:9/hook"

        [remediation]
        mod = "on"
        listen = "1.2.3.4:5"
        frobnicate = 1
        """,
    )
    problems = problems_of(path)
    assert f"{path}:2: sources.docker.enabeld: unknown key; did you mean 'enabled'?" in problems
    assert f"{path}:9: alerts.targets[1].urll: unknown key; did you mean 'url'?" in problems
    assert f"{path}:12: remediation.mod: unknown key; did you mean 'mode'?" in problems
    assert (
        f"{path}:13: remediation.listen: unknown key; 'listen' belongs in metrics.listen "
        "or sources.hep.listen" in problems
    )
    frob = next(p for p in problems if "frobnicate" in p)
    assert frob.startswith(f"{path}:14: remediation.frobnicate: unknown key (known keys: mode,")
    assert len(problems) == 5


def test_unknown_top_level_section_is_suggested(tmp_path: Path) -> None:
    path = write(tmp_path, "[alert]\nmin_severity = 'critical'\n")
    assert problems_of(path) == [f"{path}:1: alert: unknown key; did you mean 'alerts'?"]


def test_type_range_and_enum_errors_say_what_was_expected(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        [sip]
        timer_f_seconds = "32"
        max_pending_transactions = 5

        [metrics]
        listen = "0.0.0.0:70000"
        top_n = true

        [database]
        connect_timeout = -1

        [remediation]
        mode = "dry_run"

        [alerts]
        min_severity = "warn"

        [[alerts.targets]]
        url = "json://127.0.0.1:9/hook"
        severities = ["info", "critcal"]

        [sources]
        timezone = "Mars/Olympus"
        """,
    )
    problems = problems_of(path)
    expected = [
        f'{path}:2: sip.timer_f_seconds: expected a number, got string "32"',
        f"{path}:3: sip.max_pending_transactions: expected a number >= 100, got integer 5",
        f'{path}:6: metrics.listen: expected "host:port" (e.g. "0.0.0.0:9466", '
        f'"127.0.0.1:9466" or "[::]:9466"); the port must be 1-65535, '
        f'got string "0.0.0.0:70000"',
        f"{path}:7: metrics.top_n: expected an integer, got boolean true",
        f"{path}:10: database.connect_timeout: expected a number > 0, got integer -1",
        f'{path}:13: remediation.mode: expected one of "off", "dry-run", "on", got string '
        f"\"dry_run\"; did you mean 'dry-run'?",
        f'{path}:16: alerts.min_severity: expected one of "info", "warning", "error", '
        f'"critical", got string "warn"; did you mean \'warning\'?',
        f'{path}:20: alerts.targets[0].severities[1]: expected one of "info", "warning", '
        f'"error", "critical", got string "critcal"; did you mean \'critical\'?',
    ]
    for line in expected:
        assert line in problems
    tz = next(p for p in problems if "timezone" in p)
    assert tz.startswith(f"{path}:23: sources.timezone: expected an IANA time zone name")
    # every problem is reported in one go, sorted by line
    assert len(problems) == len(expected) + 1
    lines = [int(re.match(rf"{re.escape(str(path))}:(\d+):", p).group(1)) for p in problems]  # type: ignore[union-attr]
    assert lines == sorted(lines)


def test_lines_inside_inline_arrays_and_tables(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        [sources.docker]
        drachtio_services = [
            "drachtio-sbc",
            "bad name",
        ]

        [remediation]
        actions = { restart_registrar = "on", restart_registrr = "on" }
        """,
    )
    problems = problems_of(path)
    assert any(
        p.startswith(f"{path}:2: sources.docker.drachtio_services: expected names")
        for p in problems
    )
    assert (
        f"{path}:8: remediation.actions.restart_registrr: unknown key; "
        "did you mean 'restart_registrar'?"
    ) in problems


def test_locator_handles_tricky_toml() -> None:
    text = textwrap.dedent(
        '''
        # comment [not.a.table]
        title = """
        [fake.table]
        x = 1
        """
        "quoted.key" = 'a [b] c'
        [a . b]  # spaced header
        c.d = [1, [2, 3], { e = 4 }]
        [[t]]
        k = 1
        [[t]]
        k = 2
        [t.sub]
        z = "}"
        '''
    ).lstrip("\n")
    tomllib.loads(text)  # the fixture itself must be valid TOML
    lines = locate_keys(text)
    assert lines[("title",)] == 2
    assert ("fake", "table") not in lines
    assert lines[("quoted.key",)] == 6
    assert lines[("a", "b")] == 7
    assert lines[("a", "b", "c", "d")] == 8
    assert lines[("a", "b", "c", "d", 2, "e")] == 8
    assert lines[("t", 0, "k")] == 10
    assert lines[("t", 1)] == 11
    assert lines[("t", 1, "k")] == 12
    assert lines[("t", 1, "sub", "z")] == 14


def test_missing_required_keys_point_at_their_table(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        [[sources.files]]
        path = "/var/log/a.log"

        [[sources.files]]
        format = "cri"
        """,
    )
    assert problems_of(path) == [
        f"{path}:4: sources.files[1].path: missing required key (expected a string)"
    ]


def test_target_without_url(tmp_path: Path) -> None:
    path = write(tmp_path, '[[alerts.targets]]\nname = "pager"\n')
    assert problems_of(path) == [
        f"{path}:1: alerts.targets[0].url: missing required key (expected url or url_file)"
    ]


def test_duplicate_target_names(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        [[alerts.targets]]
        name = "pager"
        url = "json://127.0.0.1:9/a"

        [[alerts.targets]]
        name = "pager"
        url = "json://127.0.0.1:9/b"
        """,
    )
    assert problems_of(path) == [
        f"{path}:6: alerts.targets[1].name: duplicate target name 'pager' (also alerts.targets[0])"
    ]


def test_targets_get_default_names(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        [[alerts.targets]]
        url = "json://127.0.0.1:9/a"
        [[alerts.targets]]
        url = "json://127.0.0.1:9/b"
        kind = "security"
        """,
    )
    targets = load_config(path, environ={}).alerts.targets
    assert [t.name for t in targets] == ["target1", "target2"]
    assert targets[1].kind == "security"


# ---------------------------------------------------------------------------------------------
# value parsers
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("0.0.0.0:9466", HostPort("0.0.0.0", 9466)),
        ("127.0.0.1:1", HostPort("127.0.0.1", 1)),
        ("localhost:65535", HostPort("localhost", 65535)),
        ("[::]:9466", HostPort("::", 9466)),
        ("[2001:db8::1]:80", HostPort("2001:db8::1", 80)),
        (":9466", HostPort("0.0.0.0", 9466)),
    ],
)
def test_host_port_parsing(text: str, expected: HostPort) -> None:
    assert parse_host_port(text) == expected


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("::1:9466", "brackets"),
        ("0.0.0.0", "port is missing"),
        ("0.0.0.0:0", "1-65535"),
        ("0.0.0.0:65536", "1-65535"),
        ("[::1:9466", "expected"),
        ("[nothex]:9466", "not an IPv6 address"),
        ("bad host:9466", "not a valid host"),
    ],
)
def test_host_port_rejections(text: str, fragment: str) -> None:
    with pytest.raises(ValueError, match=re.escape(fragment)):
        parse_host_port(text)


def test_ipv6_listen_round_trips_through_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, '[metrics]\nlisten = "[::]:9466"\n')
    config = load_config(path, environ={})
    assert config.metrics.listen == "[::]:9466"
    assert (config.metrics.host, config.metrics.port) == ("::", 9466)


def test_mysql_url_parsing() -> None:
    target = parse_mysql_url("mysql://jamb%40nes:p%2Fw%40rd@db.example:3307/jambones")
    assert (target.host, target.port, target.user, target.database) == (
        "db.example",
        3307,
        "jamb@nes",
        "jambones",
    )
    assert target.password is not None and target.password.reveal() == "p/w@rd"
    default = parse_mysql_url("mariadb://root@127.0.0.1")
    assert (default.port, default.database, default.password) == (3306, "jambones", None)
    for bad, fragment in [
        ("postgres://u:p@h/db", "scheme"),
        ("mysql:///db", "host is missing"),
        ("mysql://h:99999/db", "port"),
        ("mysql://h/db?ssl=1", "query parameters"),
    ]:
        with pytest.raises(ValueError, match=fragment):
            parse_mysql_url(bad)


def test_bad_secret_urls_never_echo_the_secret(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        f"""
        [database]
        url = "postgres://root:hunter2@db/jambones"

        [redis]
        url = "http://:hunter2@127.0.0.1:6379"

        [[alerts.targets]]
        url = "slack://onlyone{SLACK_TOKEN}"
        """,
    )
    problems = problems_of(path)
    assert len(problems) == 3
    text = "\n".join(problems)
    assert "hunter2" not in text and SLACK_TOKEN not in text
    assert f"{path}:2: database.url: expected mysql://user:password@host:port/database" in text
    assert f"{path}:5: redis.url: expected redis://" in text
    assert f"{path}:8: alerts.targets[0].url: expected an apprise notification URL" in text
    assert "apprise knows 'slack://' but rejected this URL" in text


def test_apprise_unknown_scheme_and_https(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        [[alerts.targets]]
        url = "nosuchservice://x/y"
        [[alerts.targets]]
        url = "https://example.com/hook"
        """,
    )
    problems = problems_of(path)
    assert "apprise has no service for scheme 'nosuchservice://'" in problems[0]
    assert "for a generic webhook use json://" in problems[1]


def test_redis_and_rules_dir_validation(tmp_path: Path) -> None:
    rules = tmp_path / "rules"
    rules.mkdir()
    path = write(
        tmp_path,
        f"""
        [redis]
        url = "rediss://:pw@redis.example:6380/1"
        [diagnosis]
        rules_dir = "{rules}"
        """,
    )
    config = load_config(path, environ={})
    assert config.redis.url == Secret("rediss://:pw@redis.example:6380/1")
    assert config.diagnosis.rules_dir == str(rules)
    bad = write(tmp_path, f'[diagnosis]\nrules_dir = "{tmp_path / "none"}"\n', "bad.toml")
    (problem,) = problems_of(bad)
    assert problem.startswith(f"{bad}:2: diagnosis.rules_dir: expected a directory")


def test_tail_accepts_numbers_and_all(tmp_path: Path) -> None:
    assert (
        load_config(
            write(tmp_path, "[sources.docker]\ntail = 200\n"), environ={}
        ).sources.docker.tail
        == "200"
    )
    assert (
        load_config(
            write(tmp_path, '[sources.docker]\ntail = "all"\n'), environ={}
        ).sources.docker.tail
        == "all"
    )
    (problem,) = problems_of(write(tmp_path, '[sources.docker]\ntail = "some"\n'))
    assert 'expected "all" or a number of lines >= 0' in problem


# ---------------------------------------------------------------------------------------------
# secrets from files, mutual exclusion
# ---------------------------------------------------------------------------------------------


def test_url_file_is_read_and_validated(tmp_path: Path) -> None:
    secret = tmp_path / "db_url"
    secret.write_text("mysql://sipwatch:s3cret@127.0.0.1:3306/jambones\n", encoding="utf-8")
    path = write(tmp_path, f'[database]\nurl_file = "{secret}"\n')
    config = load_config(path, environ={})
    assert config.database.url is not None
    assert config.database.url.reveal() == "mysql://sipwatch:s3cret@127.0.0.1:3306/jambones"
    assert config.database.url_file == str(secret)
    assert config.meta.origins["database.url"] == f"{path}:2 (url_file '{secret}')"

    secret.write_text("redis://wrong", encoding="utf-8")
    (problem,) = problems_of(path)
    assert problem.startswith(f"{path}:2 (url_file '{secret}'): database.url: expected mysql://")


def test_x_and_x_file_are_mutually_exclusive(tmp_path: Path) -> None:
    secret = tmp_path / "enc"
    secret.write_text("abc", encoding="utf-8")
    path = write(
        tmp_path,
        f"""
        [jambonz]
        encryption_secret = "inline"
        encryption_secret_file = "{secret}"
        """,
    )
    assert problems_of(path) == [
        f"{path}:3: jambonz.encryption_secret_file: set either 'encryption_secret' or "
        "'encryption_secret_file', not both"
    ]


def test_unreadable_and_empty_secret_files(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.write_text("\n", encoding="utf-8")
    path = write(
        tmp_path,
        f"""
        [redis]
        url_file = "{tmp_path / "missing"}"
        [jambonz]
        encryption_secret_file = "{empty}"
        """,
    )
    problems = problems_of(path)
    assert problems == [
        f"{path}:2: redis.url_file: cannot read secret file '{tmp_path / 'missing'}': "
        "No such file or directory",
        f"{path}:4: jambonz.encryption_secret_file: secret file '{empty}' is empty",
    ]


def test_target_url_file(tmp_path: Path) -> None:
    secret = tmp_path / "slack"
    secret.write_text(SLACK_URL, encoding="utf-8")
    path = write(tmp_path, f'[[alerts.targets]]\nurl_file = "{secret}"\n')
    (target,) = load_config(path, environ={}).alerts.targets
    assert target.url == Secret(SLACK_URL)


# ---------------------------------------------------------------------------------------------
# environment overrides
# ---------------------------------------------------------------------------------------------


def test_env_beats_file_beats_default(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        [metrics]
        listen = "127.0.0.1:9000"
        top_n = 7

        [logging]
        level = "warning"
        """,
    )
    env = {"SIPWATCH_LISTEN": "[::1]:9100", "SIPWATCH_LOG_FORMAT": "json"}
    config = load_config(path, environ=env)
    assert config.metrics.listen == "[::1]:9100"  # env over file
    assert config.metrics.top_n == 7  # file over default
    assert config.logging.level == "warning"  # file over default
    assert config.logging.format == "json"  # env over default
    assert config.metrics.series_ttl_seconds == 900.0  # default
    assert config.meta.origins["metrics.listen"] == "environment variable SIPWATCH_LISTEN"
    assert config.meta.origins["metrics.top_n"] == f"{path}:3"


def test_named_env_variables() -> None:
    env = {
        "SIPWATCH_DB_URL": "mysql://u:pw@db:3306/jambones",
        "SIPWATCH_REDIS_URL": "redis://127.0.0.1:6379/0",
        "SIPWATCH_JAMBONZ_ENCRYPTION_SECRET": "enc-secret",
        "SIPWATCH_LOG_LEVEL": "DEBUG",
        "SIPWATCH_REMEDIATION_MODE": "dry-run",
    }
    config = load_config(None, environ=env, search_paths=())
    target = config.database.target()
    assert target is not None and (target.host, target.user) == ("db", "u")
    assert config.redis.url == Secret("redis://127.0.0.1:6379/0")
    assert config.jambonz.encryption_secret == Secret("enc-secret")
    assert config.logging.level == "debug"
    assert config.remediation.mode == "dry-run"
    # dry-run with empty allow-lists is allowed but warned about
    assert any("allow_users" in w for w in config.meta.warnings)


def test_generic_env_form(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        [[alerts.targets]]
        name = "ops"
        url = "json://127.0.0.1:9/a"
        """,
    )
    env = {
        "SIPWATCH__SIP__TIMER_F_SECONDS": "20",
        "SIPWATCH__SOURCES__DOCKER__ENABLED": "false",
        "SIPWATCH__SOURCES__DOCKER__DRACHTIO_SERVICES": "drachtio, drachtio-sbc",
        "SIPWATCH__SOURCES__DOCKER__REGISTRAR_SERVICES": '["sidecar"]',
        "SIPWATCH__SOURCES__DOCKER__TAIL": "100",
        "SIPWATCH__ALERTS__TARGETS__0__URL": SLACK_URL,
        "SIPWATCH__REMEDIATION__ACTIONS__RESTART_REGISTRAR": "on",
        "SIPWATCH__REMEDIATION__ALLOW_REALMS": "*.example.com",
    }
    config = load_config(path, environ=env)
    assert config.sip.timer_f_seconds == 20.0
    assert config.sources.docker.enabled is False
    assert config.sources.docker.drachtio_services == ("drachtio", "drachtio-sbc")
    assert config.sources.docker.registrar_services == ("sidecar",)
    assert config.sources.docker.tail == "100"
    assert config.alerts.targets[0].url == Secret(SLACK_URL)
    assert config.alerts.targets[0].name == "ops"
    assert dict(config.remediation.actions) == {"restart_registrar": "on"}
    assert config.remediation.allow_realms == ("*.example.com",)


def test_generic_env_errors_name_the_variable() -> None:
    env = {
        "SIPWATCH__SIP__TIMER_F": "3",
        "SIPWATCH__METRICS__TOP_N": "many",
        "SIPWATCH__ALERTS__TARGETS__2__URL": "json://x",
        "SIPWATCH__ALERTS": "x",
        "SIPWATCH__REMEDIATION__ACTIONS__REBOOT": "on",
    }
    with pytest.raises(ConfigError) as info:
        load_config(None, environ=env, search_paths=())
    problems = [str(p) for p in info.value.problems]
    assert (
        "environment variable SIPWATCH__SIP__TIMER_F: sip.timer_f: unknown key 'timer_f' in "
        "sip; did you mean SIPWATCH__SIP__TIMER_F_SECONDS?"
    ) in problems
    assert (
        "environment variable SIPWATCH__METRICS__TOP_N: metrics.top_n: expected an integer, "
        'got string "many"'
    ) in problems
    assert (
        "environment variable SIPWATCH__ALERTS__TARGETS__2__URL: alerts.targets[2].url: "
        "alerts.targets[2] does not exist (the file defines 0); the environment can only "
        "change existing array entries"
    ) in problems
    assert (
        "environment variable SIPWATCH__ALERTS: alerts: names a table, not a setting; "
        "name one of its keys"
    ) in problems
    assert any(
        p.startswith(
            "environment variable SIPWATCH__REMEDIATION__ACTIONS__REBOOT: "
            "remediation.actions.reboot: unknown key"
        )
        for p in problems
    )


def test_named_and_generic_for_the_same_key_conflict() -> None:
    env = {"SIPWATCH_LISTEN": ":9000", "SIPWATCH__METRICS__LISTEN": ":9001"}
    with pytest.raises(ConfigError) as info:
        load_config(None, environ=env, search_paths=())
    assert str(info.value.problems[0]) == (
        "environment variable SIPWATCH_LISTEN: metrics.listen: also set by "
        "SIPWATCH__METRICS__LISTEN; set only one of them"
    )


def test_empty_env_value_unsets(tmp_path: Path) -> None:
    path = write(tmp_path, '[database]\nurl = "mysql://u:p@h/jambones"\n')
    config = load_config(path, environ={"SIPWATCH_DB_URL": ""})
    assert config.database.url is None


def test_env_url_discards_url_file_from_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, f'[database]\nurl_file = "{tmp_path / "does-not-exist"}"\n')
    config = load_config(path, environ={"SIPWATCH_DB_URL": "mysql://u:p@h/jambones"})
    assert config.database.url == Secret("mysql://u:p@h/jambones")
    assert config.database.url_file is None


def test_env_value_that_fails_validation_names_the_variable() -> None:
    with pytest.raises(ConfigError) as info:
        load_config(None, environ={"SIPWATCH_DB_URL": "mysql://u:topsecret@h:0/x"}, search_paths=())
    (problem,) = info.value.problems
    assert problem.where == "environment variable SIPWATCH_DB_URL"
    assert problem.line is None and problem.path == "database.url"
    assert "topsecret" not in str(problem)


# ---------------------------------------------------------------------------------------------
# cross-field rules and helpers
# ---------------------------------------------------------------------------------------------


def test_remediation_needs_the_database() -> None:
    with pytest.raises(ConfigError) as info:
        load_config(None, environ={"SIPWATCH_REMEDIATION_MODE": "on"}, search_paths=())
    assert info.value.problems[0].path == "remediation.mode"
    assert "needs the jambonz database" in info.value.problems[0].message


def test_remediation_mode_for_and_allow_lists(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        [database]
        url = "mysql://u:p@127.0.0.1/jambones"
        [jambonz]
        encryption_secret = "x"
        [remediation]
        mode = "dry-run"
        allow_users = ["100?@PBX.example.com", "alice"]
        allow_realms = ["*.trusted.net"]
        [remediation.actions]
        restart_registrar = "on"
        reencrypt_password = "off"
        """,
    )
    rem = load_config(path, environ={}).remediation
    assert rem.mode_for("restart_registrar") == "dry-run"  # capped by the global mode
    assert rem.mode_for("reencrypt_password") == "off"
    assert rem.mode_for("flush_cached_registration") == "dry-run"
    assert rem.allows("1001", "pbx.example.com")
    assert not rem.allows("10011", "pbx.example.com")
    assert not rem.allows("1001", "other.example.com")
    assert rem.allows("alice", "anything.org")
    assert rem.allows("bob", "SIP.Trusted.NET")
    assert not rem.allows("bob", "trusted.net.evil.com")
    assert set(REMEDIATION_ACTIONS) >= {"restart_registrar"}


def test_warnings_for_sourceless_and_secretless_configs() -> None:
    env = {"SIPWATCH__SOURCES__DOCKER__ENABLED": "false", "SIPWATCH_DB_URL": "mysql://u@h/j"}
    warnings = load_config(None, environ=env, search_paths=()).meta.warnings
    assert any("no log source is enabled" in w for w in warnings)
    assert any("encryption_secret is not set" in w for w in warnings)


# ---------------------------------------------------------------------------------------------
# masking
# ---------------------------------------------------------------------------------------------


def test_mask_url() -> None:
    assert mask_url("mysql://root:hunter2@db:3306/jambones") == "mysql://root:****@db:3306/jambones"
    assert mask_url("redis://:hunter2@127.0.0.1:6379/0") == "redis://:****@127.0.0.1:6379/0"
    assert mask_url("redis://127.0.0.1:6379/0") == "redis://127.0.0.1:6379/0"
    assert mask_url("https://h/x?token=abc&user=bob") == "https://h/x?token=****&user=bob"
    assert mask_url("mysql://u:p@h:notaport/x") == "****"


def test_describe_and_redacted_mask_every_secret(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        f"""
        [database]
        url = "mysql://sipwatch:hunter2@127.0.0.1:3306/jambones"
        [redis]
        url = "redis://:redispw@127.0.0.1:6379/0"
        [jambonz]
        encryption_secret = "enc-topsecret"
        [[alerts.targets]]
        name = "slack"
        url = "{SLACK_URL}"
        [[alerts.targets]]
        url = "json://bob:jsonpw@127.0.0.1:9/hook"
        """,
    )
    config = load_config(path, environ={})
    secrets = ["hunter2", "redispw", "enc-topsecret", SLACK_TOKEN, "jsonpw"]
    described = config.describe()
    redacted = repr(config.redacted())
    for text in (described, redacted, repr(config), str(config.database)):
        for secret in secrets:
            assert secret not in text
    assert (
        f'database.url = "mysql://sipwatch:****@127.0.0.1:3306/jambones"    # {path}:2'
    ) in described
    assert 'redis.url = "redis://:****@127.0.0.1:6379/0"' in described
    assert 'jambonz.encryption_secret = "****"' in described
    assert 'alerts.targets[0].url = "slack://T...2/A...D/T...Q/' in described
    assert "json://bob:****@127.0.0.1:9/****" in described
    assert 'alerts.targets[1].name = "target2"' in described
    assert config.redacted()["database"]["url"] == "mysql://sipwatch:****@127.0.0.1:3306/jambones"
    # the real values are still there for the code that needs them
    assert config.jambonz.encryption_secret == Secret("enc-topsecret")
    assert config.alerts.targets[0].url is not None
    assert config.alerts.targets[0].url.reveal() == SLACK_URL


def test_secret_repr_is_masked() -> None:
    secret = Secret("hunter2")
    assert "hunter2" not in repr(secret) and "hunter2" not in f"{secret}"
    assert secret.reveal() == "hunter2"
    assert secret == Secret("hunter2") and secret != Secret("other")


# ---------------------------------------------------------------------------------------------
# generated documentation and example
# ---------------------------------------------------------------------------------------------


def test_committed_docs_match_the_schema() -> None:
    committed = (ROOT / "docs" / "configuration.md").read_text(encoding="utf-8")
    assert committed == config_docs.render_markdown(), (
        "docs/configuration.md is stale: run python -m tools.config_docs > docs/configuration.md"
    )
    for name in ("SIPWATCH_DB_URL", "SIPWATCH__SECTION__KEY", "[[alerts.targets]]", "9466"):
        assert name in committed


def test_committed_example_matches_and_equals_defaults() -> None:
    example = ROOT / "examples" / "sipwatch.toml"
    assert example.read_text(encoding="utf-8") == config_docs.render_example(), (
        "examples/sipwatch.toml is stale: run python -m tools.config_docs --example > "
        "examples/sipwatch.toml"
    )
    config = load_config(example, environ={})
    assert config == Config()
    # every setting of the schema appears in the example, active or commented
    text = example.read_text(encoding="utf-8")
    for path, _value, _sf in Config().leaves():
        leaf = re.escape(path.rsplit(".", 1)[-1])
        assert re.search(rf"^(# )*({leaf} = |\[{re.escape(path)}\]$)", text, re.M), path


def test_example_blocks_are_valid_when_uncommented(tmp_path: Path) -> None:
    """Uncommenting every commented key and block of the example gives a valid config."""
    out = []
    for line in config_docs.render_example().splitlines():
        # "# key = ..." and "# [[table]]" lines, and the doc lines of commented blocks
        if re.match(r"^# (\[\[|[a-z_]+ = |#)", line):
            line = line[2:]
        out.append(line)
    text = "\n".join(out)
    # keys and their *_file alternatives are exclusive: keep the inline form
    text = re.sub(r"^(url_file|encryption_secret_file) = .*$", "", text, flags=re.M)
    text = text.replace('rules_dir = "/etc/sipwatch/rules"', f'rules_dir = "{tmp_path}"')
    web_config = tmp_path / "web-config.yml"
    web_config.write_text("basic_auth_users:\n  prometheus: $2b$04$" + "a" * 53 + "\n")
    text = text.replace('"/etc/sipwatch/web-config.yml"', f'"{web_config}"')
    config = parse_config(text, source="uncommented.toml", environ={})
    assert config.database.url is not None
    assert [t.name for t in config.alerts.targets] == ["oncall-slack"]
    assert config.sources.files[0].path == "/var/log/drachtio.log"
    assert config.remediation.actions["restart_registrar"] == "dry-run"


# ---------------------------------------------------------------------------------------------
# check-config
# ---------------------------------------------------------------------------------------------


def run_check(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return run_cli("check-config", *args, env=env, timeout=60)


def test_check_config_ok_subprocess(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        f"""
        [database]
        url = "mysql://sipwatch:hunter2@127.0.0.1:3306/jambones"
        [[alerts.targets]]
        url = "{SLACK_URL}"
        """,
    )
    env = clean_env() | {"SIPWATCH_LOG_LEVEL": "debug"}
    result = run_check([str(path)], env)
    assert result.returncode == 0, result.stderr
    first = result.stdout.splitlines()[0]
    assert first.startswith(f"config OK: {path} (listening on 127.0.0.1:9466, database configured")
    assert "1 alert target(s), remediation off" in first
    assert 'logging.level = "debug"    # environment variable SIPWATCH_LOG_LEVEL' in result.stdout
    assert "warning: jambonz.encryption_secret is not set" in result.stderr
    assert "hunter2" not in result.stdout + result.stderr
    assert SLACK_TOKEN not in result.stdout + result.stderr


def test_check_config_errors_subprocess(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        f"""
        [metrics]
        listen = "::1:9466"
        [[alerts.targets]]
        url = "slack://x{SLACK_TOKEN}"
        """,
    )
    result = run_check([str(path)], clean_env())
    assert result.returncode == 2
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert lines[0] == "config invalid: 2 problems"
    assert lines[1].startswith(f'  {path}:2: metrics.listen: expected "host:port"')
    assert lines[2].startswith(f"  {path}:4: alerts.targets[0].url: expected an apprise")
    # apprise's own error log repeats the URL; it must not reach the terminal
    assert SLACK_TOKEN not in result.stderr


def test_check_config_without_a_file_subprocess(tmp_path: Path) -> None:
    result = run_check([], clean_env())
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("config OK: no config file, built-in defaults")
    missing = run_check([str(tmp_path / "missing.toml")], clean_env())
    assert missing.returncode == 2
    assert f"{tmp_path / 'missing.toml'}: file not found" in missing.stderr


def test_check_config_main_in_process(tmp_path: Path) -> None:
    out, err = io.StringIO(), io.StringIO()
    path = write(tmp_path, "[sip]\ntimer_f_seconds = 0\n")
    assert check_config_main(str(path), environ={}, stdout=out, stderr=err) == 2
    assert f"{path}:2: sip.timer_f_seconds: expected a number > 0" in err.getvalue()
    out, err = io.StringIO(), io.StringIO()
    assert (
        check_config_main(
            None,
            environ={"SIPWATCH_CONFIG": str(path), "SIPWATCH__SIP__TIMER_F_SECONDS": "4"},
            stdout=out,
            stderr=err,
        )
        == 0
    )
    assert (
        "sip.timer_f_seconds = 4.0    # environment variable SIPWATCH__SIP__TIMER_F_SECONDS"
        in out.getvalue()
    )


def test_unreadable_and_non_utf8_files(tmp_path: Path) -> None:
    assert problems_of(tmp_path) == [f"{tmp_path}: cannot read the file: Is a directory"]
    latin = tmp_path / "latin1.toml"
    latin.write_bytes(b'[sources]\ntimezone = "Europe/Z\xfcrich"\n')
    assert problems_of(latin) == [f"{latin}: the file is not UTF-8"]
