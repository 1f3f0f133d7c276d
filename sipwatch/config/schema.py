"""sipwatch configuration: one TOML file plus environment overrides, validated once at start.

Why it is strict: sipwatch runs unattended on an SBC, and a typo that silently turns off
alerting is worse than refusing to start.  So unknown keys are errors (with a "did you mean"),
and every error names the file, the key path (``alerts.targets[1].url``), the line when the
file has one, and what was expected.  All problems are reported at once, not one per run.

Why every setting has a default: on a stock jambonz Docker host, ``sipwatch run`` with no
config file at all follows the drachtio and registrar containers and serves metrics.  The
database, Redis and alert settings only add diagnosis, alerts and remediation on top.

Precedence is environment > file > built-in default.  The one exception is ``DOCKER_HOST``:
it is not sipwatch's own variable, so it only replaces the *default* of
``sources.docker.url`` and a value in the file wins over it.

The schema is the frozen dataclasses below.  Each field documents itself through
``setting()`` metadata, and ``tools.config_docs`` renders the reference and the example
file from it, so the documentation cannot drift from the code.

Secrets (database and Redis URLs, the jambonz encryption secret, apprise URLs) are held in
``Secret`` objects whose ``repr``/``str`` are masked, so printing or logging a config object
never leaks them; ``Config.describe()`` and ``Config.redacted()`` give masked views.
"""

# ruff: noqa: RUF009 - setting() is a dataclasses.field() wrapper that carries the docs

from __future__ import annotations

import dataclasses
import fnmatch
import ipaddress
import json
import re
import types
import typing
import zoneinfo
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, tzinfo
from pathlib import Path
from typing import Any, Literal, get_args, get_origin, get_type_hints
from urllib.parse import unquote, urlsplit

from sipwatch.config.secrets import Secret, mask_value, quiet_apprise
from sipwatch.remediation.catalog import ACTION_IDS

# ---------------------------------------------------------------------------------------------
# Constants other modules rely on
# ---------------------------------------------------------------------------------------------

#: Where ``load_config(None)`` looks when neither a path nor $SIPWATCH_CONFIG is given.
DEFAULT_CONFIG_PATHS: tuple[Path, ...] = (Path("/etc/sipwatch/sipwatch.toml"),)
#: Environment variable naming the config file.
CONFIG_PATH_ENV = "SIPWATCH_CONFIG"
#: Prefix of the generic ``SIPWATCH__SECTION__KEY=value`` override form.
GENERIC_ENV_PREFIX = "SIPWATCH__"
#: Port 9466 is in the Prometheus exporter range (9100-9999, fully allocated on the
#: Prometheus wiki since 2023, so no number there is guaranteed unique) and is not used by any
#: jambonz component (drachtio 9022, HEP 9060, Homer 9080, node-exporter 9100).  Loopback by
#: default: /api/failures serves usernames, IPs and User-Agents, so exposing it is a choice
#: (the container image sets SIPWATCH_LISTEN=0.0.0.0:9466 and publishes the port on loopback).
DEFAULT_LISTEN = "127.0.0.1:9466"

#: The one severity scale (least severe first): the root-cause rules' ``severity``, the word
#: in the daemon's log line and the ``[ERROR]`` of an alert are the same word.
Severity = Literal["info", "warning", "error", "critical"]
SEVERITIES: tuple[str, ...] = get_args(Severity)
RemediationMode = Literal["off", "dry-run", "on"]
REMEDIATION_MODES: tuple[str, ...] = get_args(RemediationMode)
#: The remediation actions sipwatch knows (declared once, in ``sipwatch.remediation.catalog``).
#: ``remediation.actions`` keys must be one of these.
REMEDIATION_ACTIONS: tuple[str, ...] = ACTION_IDS
FileFormat = Literal["auto", "plain", "cri"]
#: ``sources.kubernetes.enabled``: a boolean, or "auto" (follow the jambonz pods when
#: sipwatch finds itself in a pod and no source is configured explicitly).
AutoBool = Literal["auto"] | bool
AlertKind = Literal["all", "registration", "security", "system"]
RegistrarFlavour = Literal["auto", "sidecar", "legacy"]
LogLevel = Literal["debug", "info", "warning", "error", "critical"]
LogFormat = Literal["auto", "json", "console"]


KeyPath = tuple[str | int, ...]


def format_path(path: KeyPath) -> str:
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + part
    return out


# ---------------------------------------------------------------------------------------------
# Small value parsers: each raises ValueError("expected ...") with a message for the operator
# ---------------------------------------------------------------------------------------------

_HOSTNAME = re.compile(r"^(?=.{1,253}$)[A-Za-z0-9_](?:[A-Za-z0-9_.-]*[A-Za-z0-9_])?$")


@dataclass(frozen=True, slots=True)
class HostPort:
    host: str  # IPv6 literals without brackets
    port: int

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


def parse_host_port(text: str) -> HostPort:
    """Parse ``host:port``, ``[v6]:port`` or ``:port`` (all interfaces)."""
    expected = 'expected "host:port" (e.g. "0.0.0.0:9466", "127.0.0.1:9466" or "[::]:9466")'
    if text.startswith("["):
        close = text.find("]")
        if close < 0 or text[close + 1 : close + 2] != ":":
            raise ValueError(expected)
        host, port_text = text[1:close], text[close + 2 :]
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise ValueError(f"{expected}; '{host}' is not an IPv6 address") from None
    else:
        host, sep, port_text = text.rpartition(":")
        if not sep:
            raise ValueError(f"{expected}; the port is missing")
        if ":" in host:
            raise ValueError(f'{expected}; write IPv6 addresses in brackets, e.g. "[{host}]:…"')
        if host == "":
            host = "0.0.0.0"  # noqa: S104 - ":port" means all interfaces, as documented
        elif not _HOSTNAME.match(host):
            raise ValueError(f"{expected}; '{host}' is not a valid host name or address")
    if not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
        raise ValueError(f"{expected}; the port must be 1-65535")
    return HostPort(host, int(port_text))


def _parse_listen(raw: Any) -> str:
    if not isinstance(raw, str):
        raise ValueError('expected "host:port"')
    return str(parse_host_port(raw))


@dataclass(frozen=True, slots=True)
class MysqlTarget:
    """The connection parameters a ``mysql://`` URL names (for asyncmy.create_pool)."""

    host: str
    port: int
    user: str
    password: Secret | None
    database: str


def parse_mysql_url(url: str) -> MysqlTarget:
    """``mysql://user:password@host:port/database`` (also ``mariadb://``).

    User and password are percent-decoded, so a password with ``@`` or ``/`` is written
    ``%40`` / ``%2F``.  The database defaults to ``jambones``, jambonz's schema name.
    """
    expected = "expected mysql://user:password@host:port/database"
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise ValueError(f"{expected}; the port is not a number in 1-65535") from None
    if port == 0:
        raise ValueError(f"{expected}; the port is not a number in 1-65535")
    if parts.scheme not in ("mysql", "mariadb"):
        raise ValueError(f"{expected}; the scheme must be mysql:// or mariadb://")
    if not parts.hostname:
        raise ValueError(f"{expected}; the host is missing")
    if parts.query or parts.fragment:
        raise ValueError(f"{expected}; query parameters are not supported")
    database = unquote(parts.path.lstrip("/")) or "jambones"
    if "/" in database:
        raise ValueError(f"{expected}; the path must be just the database name")
    password = parts.password
    return MysqlTarget(
        host=parts.hostname,
        port=3306 if port is None else port,
        user=unquote(parts.username or "root"),
        password=Secret(unquote(password)) if password is not None else None,
        database=database,
    )


def _check_mysql_url(value: Secret) -> Secret:
    parse_mysql_url(value.reveal())
    return value


def _check_redis_url(value: Secret) -> Secret:
    from redis.connection import parse_url

    url = value.reveal()
    scheme = url.partition("://")[0]
    if scheme not in ("redis", "rediss", "unix"):
        raise ValueError(
            "expected redis://[:password@]host:port/db, rediss:// (TLS) or unix:///path.sock"
        )
    try:
        parse_url(url)  # type: ignore[no-untyped-call]
    except ValueError:
        raise ValueError(
            "expected redis://[:password@]host:port/db; redis could not parse it"
        ) from None
    return value


def _check_docker_url(value: str) -> str:
    scheme, sep, rest = value.partition("://")
    if not sep or scheme not in ("unix", "tcp", "http", "https") or not rest:
        raise ValueError(
            "expected unix:///path/to/docker.sock, tcp://host:port or http(s)://host:port"
        )
    return value


_APPRISE_EXPECTED = (
    "expected an apprise notification URL such as slack://TokenA/TokenB/TokenC/#channel, "
    "mailtos://user:pass@host?to=oncall@example.com or json://host:port/path"
)


def _check_apprise_url(value: Secret) -> Secret:
    """Parse with apprise itself (nothing is sent).  The message never echoes the URL."""
    import apprise

    url = value.reveal()
    with quiet_apprise():
        plugin = apprise.Apprise.instantiate(url)
    if plugin is not None:
        return value
    scheme = url.partition("://")[0].lower() if "://" in url else ""
    if not scheme:
        raise ValueError(f"{_APPRISE_EXPECTED}; the value has no scheme://")
    if scheme in ("http", "https"):
        raise ValueError(
            f"{_APPRISE_EXPECTED}; apprise does not recognise this https URL as a service "
            "(for a generic webhook use json://, jsons:// or form://)"
        )
    if scheme not in apprise.NotificationManager():  # type: ignore[no-untyped-call]
        raise ValueError(f"{_APPRISE_EXPECTED}; apprise has no service for scheme '{scheme}://'")
    raise ValueError(
        f"{_APPRISE_EXPECTED}; apprise knows '{scheme}://' but rejected this URL "
        "(a token or address is missing or malformed)"
    )


def _parse_tail(raw: Any) -> str:
    if isinstance(raw, int) and not isinstance(raw, bool) and raw >= 0:
        return str(raw)
    if isinstance(raw, str) and (raw == "all" or raw.isdigit()):
        return raw
    raise ValueError('expected "all" or a number of lines >= 0 ("0" = only new lines)')


def _check_timezone(value: str) -> str:
    get_timezone(value)
    return value


def get_timezone(name: str) -> tzinfo:
    """The tzinfo for an IANA name; "UTC" works even without the system tz database."""
    if name.upper() == "UTC":
        return UTC
    try:
        return zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise ValueError(
            f'expected an IANA time zone name such as "UTC" or "Europe/Berlin"; \'{name}\' '
            "is not in the time zone database"
        ) from None


_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


def _check_names(value: tuple[str, ...]) -> tuple[str, ...]:
    for item in value:
        if not _NAME.match(item):
            raise ValueError(
                f"expected names made of letters, digits, '_', '.', '-'; got '{item[:60]}'"
            )
    return value


def _check_non_empty_names(value: tuple[str, ...]) -> tuple[str, ...]:
    if not value:
        raise ValueError("expected at least one name")
    return _check_names(value)


def _check_name(value: str) -> str:
    _check_names((value,))
    return value


def _check_target_name(value: str) -> str:
    return _check_name(value) if value else value


def _check_web_config(value: str) -> str:
    from sipwatch.web.auth import WebConfigError, load_web_config

    try:
        load_web_config(value)
    except WebConfigError as exc:
        raise ValueError(str(exc)) from None
    return value


def _check_dir(value: str) -> str:
    if not Path(value).is_dir():
        raise ValueError(f"expected a directory; '{value}' does not exist or is not a directory")
    return value


def _check_nonblank(value: str) -> str:
    if not value.strip():
        raise ValueError("expected a non-empty string")
    return value


def _check_lock_name(value: str) -> str:
    if not value or len(value) > 64:
        raise ValueError("expected 1-64 characters (MySQL GET_LOCK name limit)")
    return value


def _check_patterns(value: tuple[str, ...]) -> tuple[str, ...]:
    for pattern in value:
        if not pattern.strip():
            raise ValueError("expected non-empty glob patterns")
    return value


# ---------------------------------------------------------------------------------------------
# Schema machinery
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SettingMeta:
    """How one setting is documented, overridden and validated (see ``setting()``)."""

    doc: str
    env: str | None = None  # named environment override
    mask: str | None = None  # a secret; how to show it: "url", "apprise" or "text"
    parse: Callable[[Any], Any] | None = None  # replaces the type check (raw TOML value in)
    check: Callable[[Any], Any] | None = None  # runs after the type check
    minimum: float | None = None
    maximum: float | None = None
    positive: bool = False  # > 0
    example: str | None = None  # TOML text for the example file, when there is no default
    default_doc: str | None = None  # how to describe a computed default
    file_for: str | None = None  # this "<x>_file" key supplies the secret <x>
    keys: tuple[str, ...] | None = None  # the allowed keys of a table-valued setting


def setting(
    default: Any = dataclasses.MISSING,
    *,
    doc: str,
    factory: Callable[[], Any] | None = None,
    env: str | None = None,
    mask: str | None = None,
    parse: Callable[[Any], Any] | None = None,
    check: Callable[[Any], Any] | None = None,
    minimum: float | None = None,
    maximum: float | None = None,
    positive: bool = False,
    example: str | None = None,
    default_doc: str | None = None,
    file_for: str | None = None,
    keys: tuple[str, ...] | None = None,
) -> Any:
    meta = SettingMeta(
        doc=doc,
        env=env,
        mask=mask,
        parse=parse,
        check=check,
        minimum=minimum,
        maximum=maximum,
        positive=positive,
        example=example,
        default_doc=default_doc,
        file_for=file_for,
        keys=keys,
    )
    metadata = {"sipwatch": meta}
    if factory is not None:
        return field(default_factory=factory, metadata=metadata)
    return field(default=default, metadata=metadata)


def secret_file(of: str, what: str, example: str, note: str = "") -> Any:
    """The ``*_file`` companion of secret setting ``of``: read ``what`` from a file instead
    (a Docker or systemd secret), so the secret need not stand in the config or the
    environment."""
    return setting(
        None, doc=f"Read {what} from this file instead{note}.", file_for=of, example=example
    )


def connect_timeout_setting() -> Any:
    """How long to wait for a connection to a dependency (the database, Redis)."""
    return setting(5.0, doc="Seconds to wait for a connection.", positive=True, maximum=300)


@dataclass(frozen=True, slots=True)
class SchemaField:
    name: str
    type: Any
    meta: SettingMeta
    default: Any  # dataclasses.MISSING when required

    @property
    def required(self) -> bool:
        return self.default is dataclasses.MISSING


_SCHEMA_CACHE: dict[type, tuple[SchemaField, ...]] = {}


def schema_fields(cls: type) -> tuple[SchemaField, ...]:
    """The documented settings of a schema dataclass, in declaration order."""
    cached = _SCHEMA_CACHE.get(cls)
    if cached is not None:
        return cached
    hints = get_type_hints(cls)
    result = []
    for f in dataclasses.fields(cls):
        meta = f.metadata.get("sipwatch")
        if meta is None:
            continue
        if f.default is not dataclasses.MISSING:
            default = f.default
        elif f.default_factory is not dataclasses.MISSING:
            default = f.default_factory()
        else:
            default = dataclasses.MISSING
        result.append(SchemaField(f.name, hints[f.name], meta, default))
    _SCHEMA_CACHE[cls] = tuple(result)
    return _SCHEMA_CACHE[cls]


def unwrap_optional(tp: Any) -> tuple[Any, bool]:
    """``X | None`` -> (X, True); anything else -> (tp, False)."""
    if get_origin(tp) in (typing.Union, types.UnionType):
        args = [a for a in get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return args[0], True
    return tp, False


def is_table_type(tp: Any) -> bool:
    return dataclasses.is_dataclass(tp) and isinstance(tp, type)


def table_array_item(tp: Any) -> type | None:
    """The item dataclass of ``tuple[Item, ...]`` (an array of tables), else None."""
    if get_origin(tp) is tuple:
        args = get_args(tp)
        if args and is_table_type(args[0]):
            return typing.cast(type, args[0])
    return None


# ---------------------------------------------------------------------------------------------
# The schema
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DockerSourceConfig:
    """Follow jambonz containers through the Docker Engine API.

    Containers are found by their compose service label, so renamed or recreated containers
    are picked up without configuration.  drachtio-server writes its SIP dumps to stderr, the
    registrar (sbc-sip-sidecar) writes pino JSON to stdout.
    """

    enabled: bool = setting(True, doc="Read container logs from the Docker Engine.")
    url: str | None = setting(
        None,
        doc="Docker Engine endpoint: unix:///path/docker.sock, tcp://host:port or "
        "http(s)://host:port.  The DOCKER_HOST environment variable replaces the default "
        "(but not a value set here).",
        check=_check_docker_url,
        default_doc="$DOCKER_HOST, else the local socket",
        example='"unix:///var/run/docker.sock"',
    )
    project: str | None = setting(
        None,
        doc="Only watch containers of this compose project (label "
        "com.docker.compose.project).  Unset: any project.",
        check=_check_name,
        example='"jambonz"',
    )
    drachtio_services: tuple[str, ...] = setting(
        ("drachtio-sbc",),
        doc="Compose service names whose logs are drachtio-server's (SIP message dumps).",
        check=_check_non_empty_names,
    )
    registrar_services: tuple[str, ...] = setting(
        ("registrar", "sbc-sip-sidecar"),
        doc="Compose service names of the jambonz registrar (sbc-sip-sidecar, or "
        "sbc-registrar on old installs).",
        check=_check_names,
    )
    tail: str = setting(
        "0",
        doc='How many existing lines to read when attaching to a container: "0" = only new '
        'lines, a number, or "all".',
        parse=_parse_tail,
    )


def _parse_auto_bool(raw: Any) -> AutoBool:
    if isinstance(raw, bool):
        return raw
    if raw == "auto":
        return "auto"
    if raw in ("true", "false"):  # from the environment
        return bool(raw == "true")
    raise ValueError('expected true, false or "auto"')


_LABEL_SELECTOR = re.compile(r"^[A-Za-z0-9_./-]+(?:\s*(?:=|==|!=)\s*[A-Za-z0-9_.-]*)?$")


def _check_label_selector(value: str) -> str:
    """An equality-based label selector (``app=x,tier!=y``): what the pod list API takes."""
    terms = [t.strip() for t in value.split(",")]
    if not value.strip() or not all(_LABEL_SELECTOR.match(t) for t in terms):
        raise ValueError('expected a label selector such as "app=jambonz-sbc-sip"')
    return value


_DNS_LABEL = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$")


def _check_dns_label(value: str) -> str:
    if not _DNS_LABEL.match(value):
        raise ValueError(
            "expected a Kubernetes name: lower-case letters, digits and '-', at most 63"
        )
    return value


def _check_optional_dns_label(value: str) -> str:
    return _check_dns_label(value) if value else value


@dataclass(frozen=True)
class KubernetesSourceConfig:
    """Follow jambonz pods' container logs through the Kubernetes API (jambonz Helm chart).

    drachtio-server is the ``drachtio`` container of the ``jambonz-sbc-sip`` DaemonSet (one pod
    per SBC node), the registrar the ``sbc-registrar`` container of the ``sbc-register``
    Deployment.  Every pod is followed on its own and reported under its own name; pods that
    appear later (rolling update, node added) are attached, deleted ones detached.  Needs
    get/list/watch on pods and get on pods/log in the namespace (deploy/kubernetes).
    """

    enabled: AutoBool = setting(
        "auto",
        doc="true: always follow pods (and the Docker source is off unless "
        'sources.docker.enabled or url is set); false: never; "auto": when sipwatch runs in '
        "a pod (service account present) and no other source is configured.",
        parse=_parse_auto_bool,
    )
    namespace: str = setting(
        "",
        doc="Namespace of the jambonz pods.",
        env="SIPWATCH_K8S_NAMESPACE",
        check=_check_optional_dns_label,
        default_doc="the pod's own namespace (service account), else the kubeconfig "
        'context\'s, else "default"',
        example='"jambonz"',
    )
    drachtio_selector: str = setting(
        "app=jambonz-sbc-sip",
        doc="Label selector of the pods that run drachtio-server.",
        check=_check_label_selector,
    )
    drachtio_container: str = setting(
        "drachtio",
        doc="The drachtio-server container in those pods.",
        check=_check_dns_label,
    )
    registrar_selector: str = setting(
        "app=sbc-register",
        doc="Label selector of the registrar pods (empty: do not follow the registrar).",
        check=lambda v: _check_label_selector(v) if v else v,
    )
    registrar_container: str = setting(
        "sbc-registrar",
        doc="The registrar container in those pods.",
        check=_check_dns_label,
    )
    kubeconfig: str | None = setting(
        None,
        doc="kubeconfig file to use outside a cluster.",
        default_doc="in a pod its service account, else $KUBECONFIG, else ~/.kube/config",
        example='"/etc/sipwatch/kubeconfig"',
    )
    context: str | None = setting(
        None,
        doc="kubeconfig context.",
        default_doc="the kubeconfig's current-context",
        example='"jambonz-prod"',
    )
    tail: str = setting(
        "0",
        doc='How many existing lines to read from the pods found at start: "0" = only new '
        'lines, a number, or "all".  Pods that start later are read from their first line.',
        parse=_parse_tail,
    )
    since_seconds: int | None = setting(
        None,
        doc="Instead of tail: read the pods found at start from this many seconds back.",
        minimum=1,
        maximum=30 * 86_400,
        example="300",
    )


@dataclass(frozen=True)
class FileSourceConfig:
    """A log file to read, e.g. a pm2 log of a VM install or a saved ``docker logs`` dump."""

    path: str = setting(
        doc="Path of the log file.", check=_check_nonblank, example='"/var/log/drachtio.log"'
    )
    format: FileFormat = setting(
        "auto",
        doc='How lines are framed: "plain" (drachtio / pino lines as written), "cri" (the '
        "kubelet's container log files under /var/log/pods: `<time> stdout|stderr F|P "
        '<text>`, partial lines joined, stdout and stderr kept apart), or "auto": "cri" when '
        "the first line looks like one.",
    )
    follow: bool = setting(
        True,
        doc="Keep reading as the file grows, and reopen it when it is rotated (like tail -F); "
        "false reads it once.",
    )


#: Private and loopback networks: where a HEP capture agent (drachtio on the SBC) normally is.
DEFAULT_HEP_ALLOW: tuple[str, ...] = (
    "127.0.0.0/8",
    "::1/128",
    "10.0.0.0/8",
    "172.16.0.0/12",
    "192.168.0.0/16",
    "fc00::/7",
)
HepSipTruth = Literal["hep", "logs"]


def _check_networks(value: tuple[str, ...]) -> tuple[str, ...]:
    """Addresses or CIDR networks; a network with host bits set is a typo, not a wish."""
    bad = []
    for item in value:
        try:
            ipaddress.ip_network(item, strict=True)
        except ValueError:
            try:
                loose = ipaddress.ip_network(item, strict=False)
            except ValueError:
                bad.append(f"'{item[:60]}' is neither")
            else:
                bad.append(f"'{item[:60]}' has host bits set; did you mean \"{loose}\"?")
    if bad:
        raise ValueError(
            'expected IP addresses or networks such as "10.0.0.0/8" or "2001:db8::/32"; '
            + "; ".join(bad)
        )
    return value


def parse_udp_url(text: str) -> HostPort:
    """``udp://host:port`` (a HEP forward target; brackets around an IPv6 address)."""
    scheme, sep, rest = text.partition("://")
    if not sep or scheme.lower() != "udp" or not rest or "/" in rest:
        raise ValueError(
            'expected "udp://host:port" (e.g. "udp://homer:9060"); HEP is forwarded over UDP'
        )
    if rest.startswith(":"):
        raise ValueError('expected "udp://host:port"; the host is missing')
    return parse_host_port(rest)


def _check_forward(value: tuple[str, ...]) -> tuple[str, ...]:
    for item in value:
        parse_udp_url(item)
    if len(set(value)) != len(value):
        raise ValueError("a forward target is listed twice (it would get every packet twice)")
    return value


@dataclass(frozen=True)
class HepSourceConfig:
    """Receive drachtio's own capture feed: HEP (Homer Encapsulation Protocol) v3 or v2 over
    UDP, sent by drachtio-server with ``--homer host:port --homer-id N``.

    Every SIP message drachtio sends or receives arrives as one packet, byte-exact, with no
    dependence on log levels, log rotation or access to the containers, and one sipwatch can
    take the feed of many SBC nodes (the capture id names the node).  The port is open to
    whoever can reach it, so packets are accepted only from ``allow_networks``.  Forward
    targets keep Homer fed: drachtio can send to one capture server only.
    """

    listen: str | None = setting(
        None,
        doc='Address to receive HEP on, "host:port" (drachtio\'s --homer port, 9060 by '
        'convention) or "[::]:port".  Unset: no HEP source.',
        env="SIPWATCH_HEP_LISTEN",
        parse=_parse_listen,
        example='"0.0.0.0:9060"',
    )
    tcp: bool = setting(
        False,
        doc="Also accept HEP over TCP on the same address (HEP3 framed by its length; for "
        "capture agents other than drachtio, which sends UDP only).",
    )
    allow_networks: tuple[str, ...] = setting(
        DEFAULT_HEP_ALLOW,
        doc="Senders (IP addresses or CIDR networks) whose packets are accepted; others are "
        "dropped and counted.  Default: loopback and the private ranges.",
        check=_check_networks,
    )
    auth_key: Secret | None = setting(
        None,
        doc="When set, only packets carrying this HEP auth key (chunk 0x000e) are accepted.  "
        "drachtio cannot send one: set it only when every sender is a capture agent that "
        "can (heplify, Kamailio, OpenSIPS).",
        env="SIPWATCH_HEP_AUTH_KEY",
        mask="text",
        example='"the-capture-agents-auth-key"',
    )
    forward: tuple[str, ...] = setting(
        (),
        doc='Re-send every accepted packet, unchanged, to these "udp://host:port" targets '
        "(Homer / heplify-server), so adopting sipwatch does not cost the Homer feed.  "
        "Sending never delays intake: a target that cannot keep up loses packets (counted).",
        check=_check_forward,
    )
    receive_buffer_bytes: int = setting(
        16 << 20,
        doc="Socket receive buffer (as the kernel counts it: a 600-byte SIP packet takes about "
        "1,500 bytes): what absorbs a burst while sipwatch is busy; 16 MiB holds about 11,000 "
        "packets, a 0.2 s stall at 50,000 packets/s.  Linux caps it at net.core.rmem_max "
        "(which must then be at least half this value) unless sipwatch has CAP_NET_ADMIN; "
        "the size granted is exported as sipwatch_hep_receive_buffer_bytes.",
        minimum=64 << 10,
        maximum=1 << 30,
    )
    sbc_addresses: tuple[str, ...] = setting(
        (),
        doc="The SBC's own SIP addresses (IPs or CIDR networks): a packet from one of them "
        "is a message the SBC sent.  Empty: learned per capture agent (the address that "
        "talks with many peers is the SBC's).",
        check=_check_networks,
    )
    max_agents: int = setting(
        32,
        doc="Most capture agents (SBC nodes) tracked by id; packets of further ids are "
        'counted under the node "other" (a sender can claim any id).',
        minimum=1,
        maximum=1024,
    )
    sip_truth: HepSipTruth = setting(
        "hep",
        doc="When a node is covered by both HEP and log sources, which one counts its SIP "
        'messages: "hep" (log sources then contribute only their registrar and service '
        'lines) or "logs" (HEP packets of that node are then not analysed, only forwarded).',
    )


@dataclass(frozen=True)
class SourcesConfig:
    """Where log lines come from."""

    stdin: bool = setting(
        False, doc="Also read log lines from standard input (e.g. `docker logs -f x |`)."
    )
    timezone: str = setting(
        "UTC",
        doc="Time zone of drachtio's log timestamps (it logs local time without an offset; "
        "containers normally run in UTC).",
        check=_check_timezone,
    )
    idle_flush_seconds: float = setting(
        0.5,
        doc="After this long without new bytes a source counts as idle and the last "
        "buffered log record is treated as complete.",
        positive=True,
        maximum=60,
    )
    silence_seconds: float = setting(
        300.0,
        doc="A log stream that carried SIP steadily and then nothing for this long counts as "
        "down (sipwatch_source_up 0, /readyz 503): a busy SBC's drachtio log does not go "
        "quiet.  0 turns the check off.",
        minimum=0,
        maximum=86_400,
    )
    busy_messages_per_minute: float = setting(
        6.0,
        doc='What "steadily" means for silence_seconds: the stream\'s SIP messages per minute, '
        "averaged over the 10 minutes before it went quiet.",
        positive=True,
        maximum=1_000_000,
    )
    checkpoints: bool = setting(
        True,
        doc="Save where each followed log stands (file offset, container or pod log entry) "
        "in the state directory, and resume from there after a restart: lines logged while "
        "sipwatch was down are counted, lines already counted are not.  Needs a state "
        "directory; `sipwatch replay` never uses checkpoints.",
    )
    state_directory: str | None = setting(
        None,
        doc="Directory for sipwatch's state (positions.json).  Created if missing; must be "
        "writable and kept across restarts (a volume in a container).",
        env="SIPWATCH_STATE_DIRECTORY",
        check=_check_nonblank,
        default_doc="$STATE_DIRECTORY (set by systemd's StateDirectory=), else none: "
        "checkpoints off",
        example='"/var/lib/sipwatch"',
    )
    checkpoint_interval_seconds: float = setting(
        1.0,
        doc="How often changed positions are written.  After a crash or SIGKILL a restart "
        "counts again at most what was read in this time; SIGTERM saves them all.",
        minimum=1,
        maximum=300,
    )
    docker: DockerSourceConfig = setting(doc="See [sources.docker].", factory=DockerSourceConfig)
    kubernetes: KubernetesSourceConfig = setting(
        doc="See [sources.kubernetes].", factory=KubernetesSourceConfig
    )
    hep: HepSourceConfig = setting(doc="See [sources.hep].", factory=HepSourceConfig)
    files: tuple[FileSourceConfig, ...] = setting(
        (), doc="Log files to read ([[sources.files]] tables)."
    )


@dataclass(frozen=True)
class SipConfig:
    """SIP transaction tracking.  The limits bound memory when a scanner floods the SBC."""

    timer_f_seconds: float = setting(
        32.0,
        doc="A REGISTER with no final response after this long counts as timed out "
        "(RFC 3261 Timer F = 64*T1 = 32 s).",
        positive=True,
        maximum=600,
    )
    max_pending_transactions: int = setting(
        100_000,
        doc="Most REGISTER transactions awaiting a response; the oldest are dropped (and "
        "counted) beyond this.",
        minimum=100,
        maximum=10_000_000,
    )
    max_pending_attempts: int = setting(
        100_000,
        doc="Most registration attempts (REGISTER -> 401 -> REGISTER chains) held open at "
        "once; the oldest are dropped (and counted) beyond this.",
        minimum=100,
        maximum=10_000_000,
    )


@dataclass(frozen=True)
class MetricsConfig:
    """The HTTP server for Prometheus /metrics, /healthz and the API."""

    listen: str = setting(
        DEFAULT_LISTEN,
        doc='Address to listen on: "host:port", "[::]:port" for IPv6, ":port" for all IPv4 '
        "interfaces.",
        env="SIPWATCH_LISTEN",
        parse=_parse_listen,
    )
    top_n: int = setting(
        20,
        doc="Per-user and per-source-IP failure series kept at most (the worst N); keeps "
        "Prometheus cardinality bounded whatever the traffic.",
        minimum=1,
        maximum=1000,
    )
    series_ttl_seconds: float = setting(
        900.0,
        doc="Drop a per-user/per-IP series after this long without new events.",
        minimum=10,
    )
    web_config_file: str | None = setting(
        None,
        doc="TLS and basic authentication for the HTTP endpoints, in the format of the "
        "Prometheus exporter-toolkit web configuration file (tls_server_config, "
        "basic_auth_users with bcrypt hashes).  /healthz and /readyz stay open for probes.",
        env="SIPWATCH_WEB_CONFIG_FILE",
        check=_check_web_config,
        example='"/etc/sipwatch/web-config.yml"',
    )
    max_connections: int = setting(
        64,
        doc="Most open HTTP connections; more are answered 503 and closed, so a flood of "
        "idle connections cannot use up sipwatch's file descriptors.",
        minimum=4,
        maximum=10_000,
    )
    idle_timeout_seconds: float = setting(
        10.0,
        doc="Close an HTTP connection that has not sent a complete request (or idles between "
        "requests) for this long.",
        positive=True,
        maximum=300,
    )

    @property
    def host(self) -> str:
        return parse_host_port(self.listen).host

    @property
    def port(self) -> int:
        return parse_host_port(self.listen).port


@dataclass(frozen=True)
class DatabaseConfig:
    """The jambonz MySQL database (read to diagnose failures; written only by remediation).

    Unset means no database checks: sipwatch still counts and alerts, with causes taken from
    the logs alone.
    """

    url: Secret | None = setting(
        None,
        doc="mysql://user:password@host:port/database (percent-encode special characters "
        "in the password).",
        env="SIPWATCH_DB_URL",
        mask="url",
        check=_check_mysql_url,
        example='"mysql://sipwatch:password@127.0.0.1:3306/jambones"',
    )
    url_file: str | None = secret_file(
        "url", "the URL", '"/run/secrets/sipwatch_db_url"', " (e.g. a Docker or systemd secret)"
    )
    connect_timeout: float = connect_timeout_setting()
    read_timeout: float = setting(
        10.0, doc="Seconds to wait for a query result.", positive=True, maximum=3600
    )
    pool_size: int = setting(2, doc="Most open connections.", minimum=1, maximum=32)

    def target(self) -> MysqlTarget | None:
        return parse_mysql_url(self.url.reveal()) if self.url is not None else None


@dataclass(frozen=True)
class RedisConfig:
    """The jambonz Redis (live registrations).  Unset means no registration-state checks."""

    url: Secret | None = setting(
        None,
        doc="redis://[:password@]host:port/db, rediss:// for TLS, or unix:///path.sock.",
        env="SIPWATCH_REDIS_URL",
        mask="url",
        check=_check_redis_url,
        example='"redis://127.0.0.1:6379/0"',
    )
    url_file: str | None = secret_file("url", "the URL", '"/run/secrets/sipwatch_redis_url"')
    connect_timeout: float = connect_timeout_setting()
    read_timeout: float = setting(
        5.0, doc="Seconds to wait for a reply.", positive=True, maximum=300
    )


@dataclass(frozen=True)
class JambonzConfig:
    """Facts about the jambonz installation that change how failures are explained."""

    encryption_secret: Secret | None = setting(
        None,
        doc="jambonz ENCRYPTION_SECRET (or JWT_SECRET when that is unset), needed to check "
        "SIP client passwords stored in the database.",
        env="SIPWATCH_JAMBONZ_ENCRYPTION_SECRET",
        mask="text",
        example='"the-ENCRYPTION_SECRET-of-the-api-server"',
    )
    encryption_secret_file: str | None = secret_file(
        "encryption_secret", "the encryption secret", '"/run/secrets/jambonz_encryption_secret"'
    )
    registrar_flavour: RegistrarFlavour = setting(
        "auto",
        doc='Which registrar answers REGISTER: "sidecar" (sbc-sip-sidecar, jambonz >= 0.8.4), '
        '"legacy" (sbc-registrar), or "auto" to detect it from its log lines.',
    )
    hosting: bool = setting(
        False,
        doc="true when jambonz runs in hosted mode (JAMBONES_HOSTING set): unknown realms are "
        "rejected and device limits apply.",
    )


@dataclass(frozen=True)
class DiagnosisConfig:
    """Root-cause diagnosis of registration failures."""

    enabled: bool = setting(True, doc="Diagnose failures (needs [database] for most causes).")
    rules_dir: str | None = setting(
        None,
        doc="Directory of root-cause rule files.",
        check=_check_dir,
        default_doc="the rules shipped with sipwatch",
        example='"/etc/sipwatch/rules"',
    )
    cache_ttl_seconds: float = setting(
        30.0,
        doc="How long database and Redis lookups are reused for the same user/realm.",
        minimum=0,
        maximum=3600,
    )
    webhook_probes: bool = setting(
        False,
        doc="Call an account's registration webhook to check that it answers (sends an HTTP "
        "request to a customer endpoint, hence off by default).",
    )
    webhook_timeout_seconds: float = setting(
        5.0, doc="Timeout of a webhook probe.", positive=True, maximum=60
    )
    scanner_distinct_users: int = setting(
        10,
        doc="A source IP that fails with this many distinct usernames within the window is "
        "reported as a scanner, not as a misconfigured device.",
        minimum=2,
        maximum=100_000,
    )
    scanner_window_seconds: float = setting(
        60.0, doc="The scanner detection window.", positive=True, maximum=86_400
    )


@dataclass(frozen=True)
class AlertTargetConfig:
    """One notification destination (any apprise URL: Slack, e-mail, PagerDuty, webhook...)."""

    name: str = setting(
        "",
        doc="Name used in logs and metrics (never the URL).",
        check=_check_target_name,
        default_doc='"target1", "target2", ... by position',
        example='"oncall-slack"',
    )
    url: Secret | None = setting(
        None,
        doc="apprise URL (see https://github.com/caronc/apprise/wiki).  It holds tokens, so "
        "sipwatch never prints it unmasked.",
        mask="apprise",
        check=_check_apprise_url,
        example='"slack://TokenA/TokenB/TokenC/#oncall"',
    )
    url_file: str | None = secret_file(
        "url", "the apprise URL", '"/run/secrets/sipwatch_slack_url"'
    )
    severities: tuple[Severity, ...] = setting(
        (),
        doc='Only these severities ("info", "warning", "error", "critical").  Empty: all at '
        "or above alerts.min_severity.",
    )
    causes: tuple[str, ...] = setting(
        (),
        doc="Only alerts with these root-cause ids (see the rules).  Empty: every cause.",
        check=_check_names,
    )
    kind: AlertKind = setting(
        "all",
        doc='Which alerts: "registration" (device/trunk registration failures), "security" '
        '(scanners, brute force), "system" (sipwatch lost a log source, database down) or '
        '"all".',
    )


@dataclass(frozen=True)
class AlertsConfig:
    """Push notifications.  No targets means no notifications (metrics still work)."""

    min_severity: Severity = setting(
        "warning",
        doc='Lowest severity that is sent: "info", "warning", "error" or "critical" (the '
        "severities of the root-cause rules).",
    )
    throttle_seconds: float = setting(
        900.0,
        doc="After a notice about a problem (a cause for one device, one scanner source, one "
        "system fault), say nothing more about it for this long; then send an update if it "
        "continues.  A problem that ends does not shorten this.",
        minimum=0,
        maximum=7 * 86_400,
    )
    group_wait_seconds: float = setting(
        0.25,
        doc="A new problem is sent after this short wait, so that problems raised at the same "
        "moment go out as one message.  Keep it small: it adds to the time to know.",
        minimum=0,
        maximum=60,
    )
    group_window_seconds: float = setting(
        30.0,
        doc="Flood grouping: at most 3 messages per cause within this window; new problems of "
        "that cause arriving meanwhile are sent together as one message when it ends.",
        minimum=0,
        maximum=3600,
    )
    resolve_notices: bool = setting(
        True,
        doc="Send a notice when a problem ends: the device registers again, devices register "
        "again after a registrar outage, a scanner goes quiet, a log source or the database "
        "is back.",
    )
    quiet_seconds: float = setting(
        300.0,
        doc="A scanner incident, and a registrar outage no device has registered after, ends "
        "after this long without a new failure.",
        positive=True,
        maximum=86_400,
    )
    max_queue: int = setting(
        1000,
        doc="Most alerts waiting to be sent; the oldest are dropped (and counted) beyond this.",
        minimum=1,
        maximum=1_000_000,
    )
    retry_max: int = setting(
        3, doc="Retries of a failed delivery (with backoff).", minimum=0, maximum=20
    )
    timeout_seconds: float = setting(
        10.0, doc="Timeout of one delivery.", positive=True, maximum=300
    )
    spool_size: int = setting(
        200,
        doc="Per target, most undelivered messages kept after the retries failed; they are "
        "sent, oldest first, once the target answers again.  The oldest are dropped (counted "
        'as result="dropped") beyond this; 0 keeps none.',
        minimum=0,
        maximum=100_000,
    )
    targets: tuple[AlertTargetConfig, ...] = setting(
        (), doc="Destinations ([[alerts.targets]] tables)."
    )


@dataclass(frozen=True)
class RemediationConfig:
    """Automatic fixes.  Off by default; "dry-run" logs and audits what would be done.

    A change is applied only when the mode allows it, the user or realm is allow-listed, the
    rate limits and cooldown are not exhausted, the kill-switch file does not exist, and this
    sipwatch instance holds the leader lock.
    """

    mode: RemediationMode = setting(
        "off", doc='"off", "dry-run" or "on".', env="SIPWATCH_REMEDIATION_MODE"
    )
    actions: Mapping[str, RemediationMode] = setting(
        doc='Per-action mode ([remediation.actions] table, e.g. restart_registrar = "off").  '
        "An action never runs in a stronger mode than remediation.mode.",
        factory=lambda: types.MappingProxyType({}),
        keys=REMEDIATION_ACTIONS,
    )
    allow_users: tuple[str, ...] = setting(
        (),
        doc='Glob patterns of AORs that may be changed, e.g. "*@pbx.example.com" or '
        '"100?@example.com".  Empty: none.',
        check=_check_patterns,
    )
    allow_realms: tuple[str, ...] = setting(
        (),
        doc="Glob patterns of SIP realms in which any user may be changed, e.g. "
        '"*.example.com".  Empty: none.',
        check=_check_patterns,
    )
    max_changes_per_hour: int = setting(
        10, doc="Most changes per hour, all actions together.", minimum=1, maximum=10_000
    )
    max_changes_per_action_per_hour: int = setting(
        5, doc="Most changes per hour of any one action.", minimum=1, maximum=10_000
    )
    user_cooldown_seconds: float = setting(
        3600.0,
        doc="After a change to a user, leave that user alone for this long.",
        minimum=0,
        maximum=30 * 86_400,
    )
    kill_switch_file: str = setting(
        "/etc/sipwatch/remediation.disabled",
        doc="While this file exists nothing is applied (touch it to stop remediation at once).",
        check=_check_nonblank,
    )
    audit_table: bool = setting(
        True, doc="Record every decision (applied or not) in an audit table in the database."
    )
    leader_lock_name: str = setting(
        "sipwatch-remediation",
        doc="MySQL GET_LOCK name that makes sure only one sipwatch instance remediates.",
        check=_check_lock_name,
    )

    def mode_for(self, action: str) -> str:
        """The effective mode of an action: its own mode, capped by the global mode."""
        own = self.actions.get(action, self.mode)
        rank = REMEDIATION_MODES.index
        return REMEDIATION_MODES[min(rank(self.mode), rank(own))]

    def allows(self, user: str, realm: str) -> bool:
        """Whether the allow-lists cover ``user@realm`` (realms compare case-insensitively;
        SIP user parts are case-sensitive)."""
        realm = realm.lower()
        aor = f"{user}@{realm}"
        if any(fnmatch.fnmatchcase(realm, p.lower()) for p in self.allow_realms):
            return True
        for pattern in self.allow_users:
            p_user, at, p_realm = pattern.rpartition("@")
            if not at:  # a bare username pattern matches in any realm
                if fnmatch.fnmatchcase(user, pattern):
                    return True
            elif fnmatch.fnmatchcase(aor, f"{p_user}@{p_realm.lower()}"):
                return True
        return False


@dataclass(frozen=True)
class LoggingConfig:
    """sipwatch's own log output (one JSON object per line unless on a terminal)."""

    level: LogLevel = setting(
        "info", doc='"debug", "info", "warning", "error" or "critical".', env="SIPWATCH_LOG_LEVEL"
    )
    format: LogFormat = setting(
        "auto",
        doc='"json", "console" (human-readable), or "auto": console on a terminal, else json.',
        env="SIPWATCH_LOG_FORMAT",
    )


@dataclass(frozen=True)
class ConfigMeta:
    """Where the configuration came from (not part of the schema)."""

    source: str | None = None  # the file, or None for built-in defaults
    origins: Mapping[str, str] = field(default_factory=dict)  # "a.b[0].c" -> "file:12" / env
    warnings: tuple[str, ...] = ()


@dataclass(frozen=True)
class Config:
    """The whole, validated configuration.  Build it with ``load_config()``."""

    sources: SourcesConfig = setting(doc="Log sources.", factory=SourcesConfig)
    sip: SipConfig = setting(doc="SIP transaction tracking.", factory=SipConfig)
    metrics: MetricsConfig = setting(doc="Metrics and HTTP server.", factory=MetricsConfig)
    database: DatabaseConfig = setting(doc="jambonz MySQL.", factory=DatabaseConfig)
    redis: RedisConfig = setting(doc="jambonz Redis.", factory=RedisConfig)
    jambonz: JambonzConfig = setting(doc="jambonz installation.", factory=JambonzConfig)
    diagnosis: DiagnosisConfig = setting(doc="Diagnosis.", factory=DiagnosisConfig)
    alerts: AlertsConfig = setting(doc="Alerts.", factory=AlertsConfig)
    remediation: RemediationConfig = setting(doc="Remediation.", factory=RemediationConfig)
    logging: LoggingConfig = setting(doc="Logging.", factory=LoggingConfig)
    meta: ConfigMeta = field(default_factory=ConfigMeta, compare=False, repr=False)

    def leaves(self) -> Iterator[tuple[str, Any, SchemaField]]:
        """Every setting as (key path, value, schema field), in schema order."""
        yield from _leaves(self, ())

    def redacted(self) -> dict[str, Any]:
        """A JSON-able dict of the configuration with every secret masked (for logs)."""
        return typing.cast(dict[str, Any], _redacted(self))

    def describe(self) -> str:
        """One ``key = value`` line per setting, secrets masked, with where each non-default
        value came from.  What ``sipwatch check-config`` prints."""
        lines = []
        for path, value, sf in self.leaves():
            text = _render_value(value, sf.meta)
            origin = self.meta.origins.get(path)
            lines.append(f"{path} = {text}" + (f"    # {origin}" if origin else ""))
        return "\n".join(lines)


def _leaves(obj: Any, path: tuple[str | int, ...]) -> Iterator[tuple[str, Any, SchemaField]]:
    for sf in schema_fields(type(obj)):
        value = getattr(obj, sf.name)
        sub = (*path, sf.name)
        if is_table_type(sf.type):
            yield from _leaves(value, sub)
        elif table_array_item(sf.type) is not None:
            for i, item in enumerate(value):
                yield from _leaves(item, (*sub, i))
        else:
            yield format_path(sub), value, sf


def _redacted(obj: Any) -> Any:
    out: dict[str, Any] = {}
    for sf in schema_fields(type(obj)):
        value = getattr(obj, sf.name)
        if is_table_type(sf.type):
            out[sf.name] = _redacted(value)
        elif table_array_item(sf.type) is not None:
            out[sf.name] = [_redacted(item) for item in value]
        elif value is not None and sf.meta.mask:
            out[sf.name] = mask_value(value, sf.meta.mask)
        elif isinstance(value, tuple):
            out[sf.name] = list(value)
        elif isinstance(value, Mapping):
            out[sf.name] = dict(value)
        else:
            out[sf.name] = value
    return out


def _render_value(value: Any, meta: SettingMeta) -> str:
    if value is None:
        return f"(unset: {meta.default_doc})" if meta.default_doc else "(unset)"
    if meta.mask:
        return json.dumps(mask_value(value, meta.mask))
    return toml_value(value)


def toml_value(value: Any) -> str:
    """A Python value as TOML text (for describe() and the generated example file)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, tuple | list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, Mapping):
        inner = ", ".join(f"{k} = {toml_value(v)}" for k, v in value.items())
        return "{ " + inner + " }" if inner else "{}"
    raise TypeError(f"no TOML form for {type(value).__name__}")
