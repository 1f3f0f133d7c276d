"""What the operator sees, end to end: a real Prometheus scraping a real `sipwatch run`.

`sipwatch run` follows a drachtio log and a registrar log that this test writes, phase by
phase: normal registrations, a 403 storm, one-off probes, a username-spraying scanner, a
scanner announcing itself by User-Agent, a registrar outage (503s with drachtio's "No
connected clients" lines), REGISTER timeouts and a parse error.  Diagnosis runs against a
database that is not there (a closed loopback port), alerts go to a local HTTP receiver
through apprise, remediation runs in dry-run mode.

Prometheus (Debian's package, ``.ci/prometheus.sh``) scrapes sipwatch every second on
loopback, with the shipped alert rules loaded.  Then every expression of every dashboard
panel, of every dashboard variable and of every alert rule is run through Prometheus' HTTP
API and must return without error and with the right numbers:

* the scenario's own numbers where the log decides them (15 failures of the storm user, 1 of
  each probe, 30 of the scanner's IP, 6 503s, 4 timeouts, 1 parse error ...);
* for every panel, the value at a zoom where one window covers the whole run equals the same
  expression over the raw counters (sipwatch's own totals);
* for every count panel, the points of a range query add up to the raw total at two different
  step widths - the number shown does not depend on the zoom.

Bounded: the scenario is a few hundred SIP messages; waiting is polling with deadlines.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import re
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml

from tests.alert_receivers import HttpReceiver
from tests.daemon_runner import clean_env, free_port
from tools.synth import Device, Scenario, challenge_header

ROOT = Path(__file__).resolve().parent.parent
DASHBOARDS = sorted((ROOT / "dashboards").glob("*.json"))
RULES = ROOT / "prometheus" / "sipwatch-alerts.yml"
DOMAIN = "acme.sip.example.com"
ANSWER = 0.00015  # seconds between a request and its answer: a fast SBC, 150 us
_SEL = r"sipwatch_[a-z_]+(?:\{[^}]*\})?"
EXACT_WINDOW_RE = re.compile(  # the two exact-window forms (tests/test_dashboards_rules.py)
    rf"\((?P<sel>{_SEL}) - last_over_time\((?P=sel)\[1h\] offset \$__range\) >= 0 or (?P=sel)\)"
    rf"|\(last_over_time\((?P<isel>{_SEL})\[(?P<win>\$__interval|\d+[smh])\]\)"
    r" - last_over_time\((?P=isel)\[1h\] offset (?P=win)\) >= 0"
    r" or last_over_time\((?P=isel)\[(?P=win)\]\)\)"
)
QUERY_RESULT_RE = re.compile(r"query_result\((.*)\)$", re.S)


# =============================================================================== the scenario
class FastSbc(Scenario):
    """drachtio's log of an SBC that answers in ``ANSWER`` seconds, stamped with wall time."""

    def tick(self, seconds: float = ANSWER) -> float:
        return super().tick(seconds)


def device(user: str, ip: str, **kw: Any) -> Device:
    return Device(user, DOMAIN, ip, **kw)


HEALTHY = [device(f"100{i}", f"203.0.113.{20 + i}") for i in range(5)]
STORM = device("3003", "203.0.113.30", user_agent="Linphone/5.2.5")
PROBES = [device(f"90{i}", f"198.51.100.{40 + i}", user_agent="Zoiper") for i in range(5)]
SPRAY_IP = "185.243.5.17"
UA_SCANNER_IP = "185.243.5.99"
OUTAGE = [device(f"700{i}", f"203.0.113.{70 + i}") for i in range(3)]
LOST = [device(f"800{i}", f"203.0.113.{80 + i}") for i in range(4)]


def phase_normal(sc: FastSbc) -> None:
    first, *others = HEALTHY
    request = first.register()  # UDP: the first REGISTER is retransmitted once
    sc.recv(first, request)
    sc.recv(first, request)
    sc.send(first, first.response(request, 401, "Unauthorized", [challenge_header(DOMAIN)]))
    request = first.register(auth=True)
    sc.recv(first, request)
    sc.send(first, first.response(request, 200, "OK"))
    for dev in others:
        sc.register_ok(dev)


def phase_storm(sc: FastSbc) -> None:
    for _ in range(15):  # a phone with a wrong password, retrying
        sc.register_rejected(STORM, 403, "Forbidden", "Invalid credentials", challenged=True)


def phase_probes(sc: FastSbc) -> None:
    for dev in PROBES:  # five one-off probes, each from its own address
        sc.register_rejected(dev, 403, "Forbidden", "Unknown or invalid realm", challenged=False)


def phase_scanners(sc: FastSbc) -> None:
    for n in range(30):  # sprays usernames, no tell-tale User-Agent
        bot = device(f"{n:04d}", SPRAY_IP, port=5070 + n, user_agent="pjsip")
        sc.register_rejected(bot, 403, "Forbidden", None, challenged=False)
    for n in range(12):  # announces itself
        bot = device(f"admin{n}", UA_SCANNER_IP, port=6000 + n, user_agent="friendly-scanner")
        sc.register_rejected(bot, 404, "Not Found", None, challenged=False)


def phase_outage(sc: FastSbc) -> None:
    sc.pino(
        50,
        "Error connecting to drachtio server",
        err={"type": "Error", "message": "connect ECONNREFUSED 10.0.0.5:9022"},
    )
    for _ in range(2):
        for dev in OUTAGE:
            req = dev.register()
            sc.recv(dev, req)
            sc.log("No connected clients found to handle incoming register request")
            sc.send(dev, dev.response(req, 503, "Service Unavailable"))
    sc.pino(30, "connected to drachtio listening on 10.0.0.5:9022")


def phase_timeouts(sc: FastSbc) -> None:
    for dev in LOST:  # received, never answered
        sc.recv(dev, dev.register())


PHASES: list[tuple[str, Callable[[FastSbc], None]]] = [
    ("normal", phase_normal),
    ("storm", phase_storm),
    ("probes", phase_probes),
    ("scanners", phase_scanners),
    ("outage", phase_outage),
    ("timeouts", phase_timeouts),
]

# What the log says, counted by hand from the phases above.
USER_FAILURES = (
    {f"{STORM.user}@{DOMAIN}": 15.0}
    | {f"{d.user}@{DOMAIN}": 1.0 for d in PROBES}
    | {f"{d.user}@{DOMAIN}": 2.0 for d in OUTAGE}
    | {f"{d.user}@{DOMAIN}": 1.0 for d in LOST}
)
IP_FAILURES = (
    {STORM.ip: 15.0, SPRAY_IP: 30.0, UA_SCANNER_IP: 12.0}
    | {d.ip: 1.0 for d in PROBES}
    | {d.ip: 2.0 for d in OUTAGE}
    | {d.ip: 1.0 for d in LOST}
)
FAILURES_BY_STATUS = {"403": 15 + 5 + 30.0, "404": 12.0, "503": 6.0, "timeout": 4.0}
ATTEMPTS = 5 + sum(FAILURES_BY_STATUS.values())


# =============================================================================== processes


def sipwatch_config(tmp: Path, port: int, hook: str) -> str:
    return f"""
[sources]
idle_flush_seconds = 0.2
[sources.docker]
enabled = false
[[sources.files]]
path = "{tmp / "drachtio.log"}"
follow = true
[[sources.files]]
path = "{tmp / "registrar.log"}"
follow = true
[sip]
timer_f_seconds = 2
[metrics]
listen = "127.0.0.1:{port}"
[database]
url = "mysql://sipwatch@127.0.0.1:{free_port()}/jambones"
connect_timeout = 1
[diagnosis]
enabled = true
[alerts]
group_window_seconds = 0.2
[[alerts.targets]]
name = "ops"
url = "{hook}"
[remediation]
mode = "dry-run"
[logging]
format = "json"
"""


def prometheus_config(sipwatch_port: int) -> str:
    return yaml.safe_dump(
        {
            "global": {
                "scrape_interval": "1s",
                "scrape_timeout": "900ms",
                "evaluation_interval": "1s",
            },
            "rule_files": [str(RULES)],
            "scrape_configs": [
                {
                    "job_name": "sipwatch",
                    "static_configs": [{"targets": [f"127.0.0.1:{sipwatch_port}"]}],
                }
            ],
        }
    )


@contextlib.contextmanager
def running(cmd: list[str], log: Path, **kw: Any) -> Any:
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, **kw)
        try:
            yield proc
        finally:
            proc.terminate()
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)


async def poll(what: str, check: Callable[[], Any], timeout: float = 30.0) -> Any:
    """Await ``check()`` (a coroutine function) until it returns something truthy."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        with contextlib.suppress(aiohttp.ClientError, OSError):
            last = await check()
            if last:
                return last
        await asyncio.sleep(0.2)
    raise AssertionError(f"{what}: not reached in {timeout}s (last: {last!r})")


# =============================================================================== Prometheus API
@dataclass
class Prom:
    http: aiohttp.ClientSession
    url: str
    queries: int = 0

    async def api(self, path: str, **params: str) -> Any:
        self.queries += 1
        async with self.http.get(self.url + path, params=params) as resp:
            body = await resp.json()
        assert resp.status == 200 and body["status"] == "success", (params, body)
        assert not body.get("warnings"), (params, body["warnings"])
        return body["data"]

    async def instant(self, expr: str, at: float) -> list[dict[str, Any]]:
        data = await self.api("/api/v1/query", query=expr, time=f"{at:.3f}")
        assert data["resultType"] in ("vector", "scalar"), data
        if data["resultType"] == "scalar":
            return [{"metric": {}, "value": data["result"]}]
        return list(data["result"])

    async def series(self, expr: str, start: float, end: float, step: float) -> list[Any]:
        data = await self.api(
            "/api/v1/query_range",
            query=expr,
            start=f"{start:.3f}",
            end=f"{end:.3f}",
            step=f"{step:g}",
        )
        return list(data["result"])


def by_labels(result: list[dict[str, Any]], *labels: str) -> dict[Any, float]:
    out: dict[Any, float] = {}
    for r in result:
        key = tuple(r["metric"].get(k, "") for k in labels)
        out[key[0] if len(key) == 1 else key] = float(r["value"][1])
    return out


def value_of(result: list[dict[str, Any]]) -> float:
    assert len(result) == 1, result
    return float(result[0]["value"][1])


# =============================================================================== Grafana
@dataclass(frozen=True)
class Zoom:
    """What Grafana substitutes for one time range and step."""

    range_s: int
    interval_s: int
    user: str = ""
    scrape_s: int = 1

    def promql(self, expr: str) -> str:
        # Grafana: $__rate_interval = max($__interval + scrape interval, 4 x scrape interval)
        rate_s = max(self.interval_s + self.scrape_s, 4 * self.scrape_s)
        expr = expr.replace("$__rate_interval", f"{rate_s}s")
        expr = expr.replace("$__range_s", str(self.range_s))
        expr = expr.replace("$__range", f"{self.range_s}s")
        expr = expr.replace("$__interval", f"{self.interval_s}s")
        expr = expr.replace("$user", self.user)
        return re.sub(r"\$(job|instance|side)\b", ".*", expr)


def raw(expr: str) -> str:
    """The expression over the raw counters: every exact window replaced by its counter."""
    return EXACT_WINDOW_RE.sub(lambda m: f"({m.group('sel') or m.group('isel')})", expr)


@dataclass(frozen=True)
class Target:
    dashboard: str
    panel: str
    ref: str
    expr: str
    instant: bool
    counts: bool  # a per-interval count (bars): its points add up over the range


def dashboard_targets() -> list[Target]:
    out = []
    for path in DASHBOARDS:
        for panel in json.loads(path.read_text())["panels"]:
            for t in panel.get("targets", []):
                expr = t["expr"]
                counts = (
                    panel["type"] == "timeseries"
                    and panel["fieldConfig"]["defaults"].get("custom", {}).get("drawStyle")
                    == "bars"
                )
                out.append(
                    Target(path.name, panel["title"], t["refId"], expr, t.get("instant"), counts)
                )
    return out


def variable_queries() -> list[tuple[str, str, str]]:
    out = []
    for path in DASHBOARDS:
        for var in json.loads(path.read_text())["templating"]["list"]:
            if var["type"] == "query":
                out.append((path.name, var["name"], var["query"]))
    return out


# =============================================================================== the run
@dataclass
class Run:
    prom: Prom
    metrics_url: str
    t_start: float  # wall time before Prometheus' first scrape of sipwatch
    t_end: float = 0.0  # a time at which Prometheus has scraped everything
    receiver: HttpReceiver | None = None
    exposition: str = ""
    sipwatch: subprocess.Popen[bytes] | None = None


async def fetch(http: aiohttp.ClientSession, url: str) -> str:
    async with http.get(url) as resp:
        return await resp.text()


def sample_sum(exposition: str, name: str, **match: str) -> float:
    from prometheus_client.parser import text_string_to_metric_families

    total = 0.0
    for family in text_string_to_metric_families(exposition):
        for s in family.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in match.items()):
                total += s.value
    return total


@contextlib.asynccontextmanager
async def scenario_run(tmp: Path, prometheus: str) -> AsyncIterator[Run]:
    sip_port, prom_port = free_port(), free_port()
    (tmp / "drachtio.log").write_text("")
    (tmp / "registrar.log").write_text("")
    env = clean_env()
    async with HttpReceiver() as receiver, aiohttp.ClientSession() as http:
        (tmp / "sipwatch.toml").write_text(sipwatch_config(tmp, sip_port, receiver.url("/hook")))
        (tmp / "prometheus.yml").write_text(prometheus_config(sip_port))
        prom_cmd = [
            prometheus,
            f"--config.file={tmp / 'prometheus.yml'}",
            f"--storage.tsdb.path={tmp / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{prom_port}",
            "--log.level=warn",
        ]
        run_cmd = [sys.executable, "-m", "sipwatch", "run", "--config", str(tmp / "sipwatch.toml")]
        prom = Prom(http, f"http://127.0.0.1:{prom_port}")
        with (
            running(prom_cmd, tmp / "prometheus.out"),
            running(run_cmd, tmp / "sipwatch.out", cwd=ROOT, env=env) as sipwatch,
        ):
            t_start = time.time()
            metrics_url = f"http://127.0.0.1:{sip_port}/metrics"
            await poll("prometheus ready", lambda: _ok(http, prom.url + "/-/ready"))
            await poll("sipwatch up", lambda: _ok(http, metrics_url))
            run = Run(prom, metrics_url, t_start, receiver=receiver, sipwatch=sipwatch)
            await poll("first scrape", lambda: _scraped(run, "sipwatch_build_info", 1.0))
            yield run


async def _ok(http: aiohttp.ClientSession, url: str) -> bool:
    async with http.get(url) as resp:
        return resp.status == 200


async def _scraped(run: Run, expr: str, want: float) -> bool:
    result = await run.prom.instant(f"sum({expr})", time.time())
    return bool(result) and float(result[0]["value"][1]) == want


async def miss_scrapes(run: Run) -> None:
    """Freeze sipwatch for a few scrape intervals: the scrapes time out and Prometheus marks
    every sipwatch series stale - as on a network blip or a daemon busy with a flood.  A
    window that starts inside the gap must not count a counter's whole history again."""
    assert run.sipwatch is not None
    run.sipwatch.send_signal(signal.SIGSTOP)
    try:
        await poll("a failed scrape", lambda: _scraped(run, 'up{job="sipwatch"}', 0.0), 20)
        await asyncio.sleep(2.0)
    finally:
        run.sipwatch.send_signal(signal.SIGCONT)
    await poll("scraping again", lambda: _scraped(run, 'up{job="sipwatch"}', 1.0), 20)


async def drive(run: Run, tmp: Path) -> None:
    """Write the phases one by one; after each, wait until sipwatch counted it and Prometheus
    scraped it, so the counters grow in steps that range queries must add up."""
    messages = 0.0
    for name, phase in PHASES:
        sc = FastSbc(time.time())
        phase(sc)
        with open(tmp / "registrar.log", "a") as f:
            f.write("".join(sc.registrar))
            if name == "outage":
                f.write('{"level":50,"time":17723664000,"msg":"truncated\n')  # a parse error
        with open(tmp / "drachtio.log", "a") as f:
            f.write("".join(sc.drachtio))
        messages += sum(1 for r in sc.drachtio if " bytes " in r.split("\n", 1)[0])
        want_attempts = {
            "normal": 5.0,
            "storm": 20.0,
            "probes": 25.0,
            "scanners": 67.0,
            "outage": 73.0,
            "timeouts": ATTEMPTS,
        }[name]

        async def counted(messages: float = messages, want: float = want_attempts) -> bool:
            text = await fetch(run.prom.http, run.metrics_url)
            return (
                sample_sum(text, "sipwatch_sip_messages_total") == messages
                and sample_sum(text, "sipwatch_register_attempts_total") == want
            )

        await poll(f"sipwatch counted phase {name}", counted)
        await poll(
            f"prometheus scraped phase {name}",
            lambda want=want_attempts: _scraped(run, "sipwatch_register_attempts_total", want),
        )
        if name == "probes":
            await miss_scrapes(run)
    # Let the diagnosis, alerts and remediation settle, then make sure Prometheus has the
    # final exposition: two scrapes after it stopped changing.
    assert run.receiver is not None
    await run.receiver.wait_for(1, timeout=30)
    stable = ""
    for _ in range(60):
        await asyncio.sleep(1.0)
        text = await fetch(run.prom.http, run.metrics_url)
        text = "\n".join(x for x in text.splitlines() if not x.startswith("process_"))
        if text == stable:
            break
        stable = text
    await asyncio.sleep(2.5)
    run.t_end = time.time()
    run.exposition = await fetch(run.prom.http, run.metrics_url)


# =============================================================================== the checks
async def check_scenario_numbers(run: Run, whole: Zoom) -> None:
    """The panels that show what the log says, against the numbers counted by hand."""
    p, at = run.prom, run.t_end
    targets = {(t.dashboard, t.panel, t.ref): t for t in dashboard_targets()}

    async def panel(title: str, ref: str = "A", dash: str = "sipwatch-overview.json") -> Any:
        return await p.instant(whole.promql(targets[(dash, title, ref)].expr), at)

    users = by_labels(await panel("Top failing users"), "user")
    assert users == USER_FAILURES  # the probes' single failures are there; no scanner name
    assert by_labels(await panel("Top failing IPs"), "ip") == IP_FAILURES
    assert value_of(await panel("Attempts in range")) == ATTEMPTS
    assert value_of(await panel("REGISTER success rate")) == pytest.approx(5 / ATTEMPTS)
    assert value_of(await panel("Failing users")) == len(USER_FAILURES)
    assert value_of(await panel("Sources down")) == 0
    assert by_labels(await panel("Failures by status"), "status") == FAILURES_BY_STATUS
    transactions = by_labels(await panel("Transactions by final status"), "side", "status")
    assert transactions[("inbound", "503")] == 6
    assert transactions[("inbound", "timeout")] == 4
    assert transactions[("inbound", "401")] == 5 + 15  # challenges of the normal and the storm
    assert by_labels(await panel("Scanner User-Agents"), "tool") == {"sipvicious": 12.0}
    assert by_labels(await panel("Parse errors"), "kind") == {"pino_json": 1.0}
    # nearly every answer took 150 us (a 503 after drachtio's log line 250 us): the quantiles
    # resolve it - with a lowest bucket of 1 ms they all read 0.5 ms, whatever the SBC does
    p50, p90, p99 = [
        value_of(await panel("REGISTER latency quantiles", ref)) for ref in ("A", "B", "C")
    ]
    assert 0.0001 < p50 <= p90 <= 0.00025
    assert p90 <= p99 <= 0.0005

    # the per-user drill-down: the list starts with the worst user, never with a scanner guess
    (query,) = [q for d, n, q in variable_queries() if n == "user"]
    match = QUERY_RESULT_RE.match(query)
    assert match
    listed = [r["metric"]["user"] for r in await p.instant(whole.promql(match.group(1)), at)]
    assert listed[0] == f"{STORM.user}@{DOMAIN}"
    assert set(listed) == set(USER_FAILURES)
    user_dash = "sipwatch-user.json"
    for dev, failures in ((STORM, 15.0), (PROBES[0], 1.0)):
        zoom = Zoom(whole.range_s, whole.interval_s, user=f"{dev.user}@{DOMAIN}")
        t = targets[(user_dash, "Failures in range", "A")]
        assert value_of(await p.instant(zoom.promql(t.expr), at)) == failures
        t = targets[(user_dash, "State", "A")]
        assert value_of(await p.instant(zoom.promql(t.expr), at)) == 1


async def check_against_raw_counters(run: Run, whole: Zoom) -> int:
    """At a zoom where one window covers the whole run, every panel and variable equals its
    expression over the raw counters; returns how many expressions were checked."""
    p, at = run.prom, run.t_end
    exprs = [(f"{t.dashboard}:{t.panel}:{t.ref}", t.expr) for t in dashboard_targets()]
    for dash, name, query in variable_queries():
        match = QUERY_RESULT_RE.match(query)
        if match:
            exprs.append((f"{dash}:${name}", match.group(1)))
        else:
            values = await p.api("/api/v1/series", **{"match[]": _label_values_selector(query)})
            assert values, f"{dash}:${name}: no series for {query}"
    user = f"{STORM.user}@{DOMAIN}"
    zoom = Zoom(whole.range_s, whole.interval_s, user=user)
    empty = []
    for where, expr in exprs:
        shown = await p.instant(zoom.promql(expr), at)
        truth = await p.instant(zoom.promql(raw(expr)), at)
        if not shown:
            empty.append(where)
        assert _values(shown) == pytest.approx(_values(truth), rel=1e-12, nan_ok=True), where
    assert not empty, f"panels without data: {empty}"
    return len(exprs)


def _label_values_selector(query: str) -> str:
    match = re.match(r"label_values\((.*),\s*[a-z_]+\)$", query)
    assert match, query
    return re.sub(r"\$(job|instance|side)\b", ".*", match.group(1))


def _values(result: list[dict[str, Any]]) -> dict[str, float]:
    return {json.dumps(r["metric"], sort_keys=True): float(r["value"][1]) for r in result}


async def check_zoom_independence(run: Run) -> int:
    """The points of every count panel add up to the raw total, at two step widths (one
    grid for both: start and end on multiples of 10 s, as Grafana aligns to the step)."""
    p = run.prom
    user = f"{STORM.user}@{DOMAIN}"
    start = math.floor(run.t_start / 10) * 10 - 10
    end = math.floor(run.t_end / 10) * 10
    checked = 0
    for t in dashboard_targets():
        if not t.counts:
            continue
        totals = []
        for step in (2, 5):
            zoom = Zoom(0, step, user=user)
            points = await p.series(zoom.promql(t.expr), start, end, step)
            sums = {
                json.dumps(s["metric"], sort_keys=True): sum(float(v) for _, v in s["values"])
                for s in points
            }
            truth = _values(await p.instant(zoom.promql(raw(t.expr)), end))
            assert sums == pytest.approx(truth), (t.panel, t.ref, step)
            totals.append(sums)
        assert totals[0] == totals[1], t.panel
        checked += 1
    return checked


async def check_alert_rules(run: Run) -> None:
    """Every alert rule's expression, evaluated by Prometheus over the run, against the
    scenario (the `for:` durations are promtool's business, prometheus/*.test.yml)."""
    p, at = run.prom, run.t_end
    want: dict[str, dict[tuple[str, ...], float]] = {
        "SipwatchHigh403Rate": {("inbound",): 50 / ATTEMPTS},
        "SipwatchUserFailing": {(u,): 1.0 for u in USER_FAILURES},
        "SipwatchScannerDetected": {(SPRAY_IP,): 30.0},
        "SipwatchScannerUserAgent": {("sipvicious",): 12.0},
        "SipwatchRegistrar503": {(): 6.0},
        "SipwatchRegisterTimeouts": {(): 4.0},
        "SipwatchCarrierRegisterTimeouts": {},
        "SipwatchSourceDown": {},
        "SipwatchDown": {},
        "SipwatchQueueDrops": {},
        "SipwatchJambonzSecretMismatch": {},  # the scenario's database is unreachable
    }
    keys = {
        "SipwatchHigh403Rate": ("side",),
        "SipwatchUserFailing": ("user",),
        "SipwatchScannerDetected": ("ip",),
        "SipwatchScannerUserAgent": ("tool",),
    }
    doc = yaml.safe_load(RULES.read_text())
    rules = {r["alert"]: r["expr"] for g in doc["groups"] for r in g["rules"]}
    assert set(rules) == set(want)
    for name, expr in rules.items():
        result = await p.instant(expr, at)
        labels = keys.get(name, ())
        got = {tuple(r["metric"][k] for k in labels): float(r["value"][1]) for r in result}
        assert got == pytest.approx(want[name]), name
    # and Prometheus itself evaluates the loaded rules without error
    groups = (await p.api("/api/v1/rules"))["groups"]
    loaded = [r for g in groups for r in g["rules"]]
    assert {r["name"] for r in loaded} == set(want)
    assert all(r["health"] == "ok" for r in loaded), [r for r in loaded if r["health"] != "ok"]


# =============================================================================== the test
async def test_every_dashboard_panel_and_alert_rule_shows_the_truth(
    prometheus_binary: str, tmp_path: Path
) -> None:
    async with scenario_run(tmp_path, prometheus_binary) as run:
        await drive(run, tmp_path)
        # a zoom at which one window covers the whole run (and nothing before it)
        span = math.ceil(run.t_end - run.t_start) + 30
        whole = Zoom(range_s=span, interval_s=span)
        await check_scenario_numbers(run, whole)
        checked = await check_against_raw_counters(run, whole)
        zoomed = await check_zoom_independence(run)
        await check_alert_rules(run)
        assert checked >= len(dashboard_targets()) and zoomed >= 20

        assert sample_sum(run.exposition, "sipwatch_alerts_total", result="sent") >= 1
