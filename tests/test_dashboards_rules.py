"""Dashboards and alert rules checked against sipwatch's real exposition, with real promtool.

promtool comes from Debian's ``prometheus`` package via ``.ci/promtool.sh``.  Besides lint
and the rule unit tests, every dashboard query is evaluated by promtool over series built from
an actual sipwatch exposition, so a renamed metric or label breaks this test, not a dashboard
in production.
"""

from __future__ import annotations

import json
import re
import subprocess
from collections import defaultdict
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from sipwatch.daemon.stages import secret_state_collector
from sipwatch.diagnosis.secret_proof import SecretState, SecretStatus
from sipwatch.metrics import SipwatchMetrics, render_text
from sipwatch.model import AttemptOutcome, Direction, ServiceEvent, ServiceOrigin, Side
from tests.test_metrics import attempt, message, transaction

REPO = Path(__file__).resolve().parent.parent
DASHBOARD_DIR = REPO / "dashboards"
DASHBOARDS = sorted(DASHBOARD_DIR.glob("*.json"))
RULES = REPO / "prometheus" / "sipwatch-alerts.yml"
RULE_TESTS = REPO / "prometheus" / "sipwatch-alerts.test.yml"
PROMTOOL_SH = REPO / ".ci" / "promtool.sh"

TARGET_LABELS = {"job", "instance"}  # added by Prometheus at scrape time
DS_UID = "${datasource}"
# Grafana unit ids (packages/grafana-data/src/valueFormats/categories.ts) we allow.
GRAFANA_UNITS = {"percentunit", "s", "reqps", "cps", "ops", "short", "none", "bytes", "string"}
DRILLDOWN_USER = "alice@acme.example.com"

METRIC_RE = re.compile(r"\b((?:sipwatch|process)_[a-z0-9_]+)\b")
SELECTOR_RE = re.compile(r"\b([a-zA-Z_:][a-zA-Z0-9_:]*)\s*\{([^}]*)\}")
MATCHER_RE = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)\s*(?:=~|!~|!=|=)\s*"')
GROUPING_RE = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)")
LABEL_VALUES_RE = re.compile(r"label_values\(\s*(.+)\s*,\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*\)$")
VARIABLE_RE = re.compile(r"\$\{?([a-zA-Z_][a-zA-Z0-9_]*)")
QUERY_RESULT_RE = re.compile(r"query_result\((.*)\)$", re.S)
GRAFANA_MACROS = {"__interval", "__range", "__range_s"}
# A counter (or histogram bucket) read the one way that is exact at any zoom: its last scraped
# value minus its last scraped value one window earlier, or the whole value of a series born
# (or reset) inside the window.  Over a range (tables, stats) the current value is the
# instant one, so series sipwatch removed (a scanner's guesses) are not listed; per step
# (bars, rules) it is the last one in the step, so a failed scrape loses nothing.
_SEL = r"sipwatch_[a-z_]+(?:\{[^}]*\})?"
EXACT_WINDOW_RE = re.compile(
    rf"\((?P<sel>{_SEL}) - last_over_time\((?P=sel)\[1h\] offset \$__range\) >= 0 or (?P=sel)\)"
    rf"|\(last_over_time\((?P<isel>{_SEL})\[(?P<win>\$__interval|\d+[smh])\]\)"
    r" - last_over_time\((?P=isel)\[1h\] offset (?P=win)\) >= 0"
    r" or last_over_time\((?P=isel)\[(?P=win)\]\)\)"
)


# ----------------------------------------------------------------------------- helpers
def run(promtool: str, *args: str, stdin: str | None = None, cwd: Path | None = None) -> str:
    proc = subprocess.run(
        [promtool, *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=300,
        cwd=cwd,
        check=False,
    )
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output
    return output


def populated() -> SipwatchMetrics:
    """A SipwatchMetrics that went through every observe_* path with realistic events."""
    metrics = SipwatchMetrics()
    for src in ("drachtio", "registrar"):
        metrics.set_source_up(src, True)
        metrics.observe_lines(src, 1200)
        metrics.observe_record(src, "service", 40)
        metrics.observe_parse_error(src, "bad_json")
    metrics.observe_record("drachtio", "sip", 300)
    metrics.set_source_up("registrar", False)
    metrics.observe_message(message())
    metrics.observe_message(message(direction=Direction.SEND, is_request=False, status=401))
    metrics.observe_message(message(method="OPTIONS", truncated=True))
    metrics.observe_event(
        ServiceEvent(
            ts=1767268801.0,
            source="registrar",
            origin=ServiceOrigin.REGISTRAR,
            kind="auth_error",
            level=50,
            message="Error",
        )
    )
    metrics.observe_queue("parse", 12, 10_000)
    metrics.observe_queue_drop("parse")
    metrics.set_inflight(3, 5)

    metrics.observe_transaction(transaction(status=401, x_reason="", has_auth=False))
    metrics.observe_transaction(transaction(requests=2))
    metrics.observe_transaction(transaction(status=200, x_reason=""))
    metrics.observe_transaction(transaction(status=503, x_reason="", to_user="bob"))
    metrics.observe_transaction(transaction(status=0, timed_out=True, x_reason=""))
    metrics.observe_transaction(transaction(side=Side.OUTBOUND, status=200, x_reason=""))

    metrics.observe_attempt(attempt(outcome=AttemptOutcome.SUCCESS, status=200, x_reason=""))
    metrics.observe_attempt(attempt(to_user="alice"))  # 403 after challenge
    metrics.observe_attempt(
        attempt(to_user="carol", challenged=False, x_reason="Unknown or invalid realm")
    )
    metrics.observe_attempt(
        attempt(to_user="dave", outcome=AttemptOutcome.TIMEOUT, status=0, x_reason="")
    )
    for i in range(30):  # a scanner enumerating users
        metrics.observe_attempt(
            attempt(
                to_user=f"{1000 + i}",
                peer_ip="198.51.100.66",
                user_agent="friendly-scanner",
                outcome=AttemptOutcome.ABANDONED,
                status=401,
                x_reason="",
            )
        )
    metrics.observe_root_cause("wrong_password", "warning")
    metrics.observe_diagnosis_error("db_unavailable")
    metrics.observe_alert("slack", "sent")
    metrics.observe_remediation("flush_cached_registration", "dry_run")
    secret = secret_state_collector(metrics.registry)
    secret.source = lambda: SecretStatus(SecretState.MISMATCH, sampled=4)
    return metrics


@cache
def exposition() -> str:
    return render_text(populated().registry)


@cache
def sample_labels() -> dict[str, frozenset[str]]:
    """Sample name -> label names, from the populated exposition."""
    out: dict[str, set[str]] = defaultdict(set)
    for family in text_string_to_metric_families(exposition()):
        for s in family.samples:
            out[s.name] |= set(s.labels)
    return {name: frozenset(labels) for name, labels in out.items()}


def load_dashboard(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(path.read_text())
    return data


def dashboard_exprs() -> list[tuple[str, str]]:
    """(where, expr) for every target of every dashboard panel."""
    out = []
    for path in DASHBOARDS:
        for panel in load_dashboard(path)["panels"]:
            for t in panel.get("targets", []):
                out.append((f"{path.name}:{panel['title']}:{t['refId']}", t["expr"]))
    return out


def variable_queries() -> list[tuple[str, str]]:
    out = []
    for path in DASHBOARDS:
        for var in load_dashboard(path)["templating"]["list"]:
            if var["type"] == "query":
                out.append((f"{path.name}:${var['name']}", var["query"]))
    return out


def variable_promql(query: str) -> str | None:
    """The PromQL inside a ``query_result(...)`` variable query (None for label_values)."""
    match = QUERY_RESULT_RE.match(query.strip())
    return match.group(1) if match else None


def rule_exprs() -> list[tuple[str, str]]:
    doc = yaml.safe_load(RULES.read_text())
    return [
        (rule.get("alert") or rule["record"], rule["expr"])
        for group in doc["groups"]
        for rule in group["rules"]
    ]


def grafana_to_promql(expr: str) -> str:
    """Expand Grafana macros and variables the way a Grafana query would."""
    expr = expr.replace("$__range_s", "600").replace("$__range", "10m")
    expr = expr.replace("$__interval", "1m")
    expr = expr.replace("$user", DRILLDOWN_USER)
    return re.sub(r"\$(job|instance|side)\b", ".*", expr)


# ----------------------------------------------------------------------------- promtool
def test_promtool_script_is_idempotent(promtool: str) -> None:
    again = subprocess.run(
        [str(PROMTOOL_SH)], capture_output=True, text=True, timeout=60, check=True
    )
    assert again.stdout.strip() == promtool
    assert promtool.startswith(str(REPO / ".tools") + "/")
    assert "promtool" in run(promtool, "--version")


def test_promtool_check_metrics_is_clean(promtool: str) -> None:
    text = render_text(populated().registry)
    assert run(promtool, "check", "metrics", stdin=text).strip() == ""


def test_promtool_check_rules(promtool: str) -> None:
    out = run(promtool, "check", "rules", str(RULES))
    declared = sum(len(g["rules"]) for g in yaml.safe_load(RULES.read_text())["groups"])
    assert declared >= 11
    assert f"SUCCESS: {declared} rules found" in out


def test_promtool_test_rules(promtool: str) -> None:
    out = run(promtool, "test", "rules", RULE_TESTS.name, cwd=RULE_TESTS.parent)
    assert "SUCCESS" in out


def test_every_alert_has_a_unit_test() -> None:
    tests = yaml.safe_load(RULE_TESTS.read_text())["tests"]
    tested = {
        case["alertname"]
        for t in tests
        for case in t.get("alert_rule_test", [])
        if case.get("exp_alerts")
    }
    assert tested == {name for name, _ in rule_exprs()}


def test_rule_test_series_have_sipwatch_label_sets() -> None:
    """The synthetic series in the rule tests look exactly like sipwatch's own."""
    labels = sample_labels()
    for t in yaml.safe_load(RULE_TESTS.read_text())["tests"]:
        for series in t["input_series"]:
            match = SELECTOR_RE.match(series["series"])
            assert match, series
            name, matchers = match.groups()
            used = set(MATCHER_RE.findall(matchers)) - TARGET_LABELS
            if name == "up":  # Prometheus' own per-target series
                assert used == set(), series
                continue
            assert name in labels, name
            assert used == labels[name], (name, used, labels[name])


def test_dashboard_queries_are_valid_promql(promtool: str, tmp_path: Path) -> None:
    exprs = [e for _, e in dashboard_exprs()]
    exprs += [p for _, q in variable_queries() if (p := variable_promql(q)) is not None]
    rules = [
        {"record": f"sipwatch_dashboard:expr{i}", "expr": grafana_to_promql(expr)}
        for i, expr in enumerate(exprs)
    ]
    path = tmp_path / "dashboard-exprs.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboards", "rules": rules}]}))
    assert f"SUCCESS: {len(rules)} rules found" in run(promtool, "check", "rules", str(path))


def test_dashboard_queries_return_data_on_a_real_exposition(promtool: str, tmp_path: Path) -> None:
    """Feed sipwatch's exposition to promtool as series; every panel query must return data."""
    input_series = []
    for family in text_string_to_metric_families(exposition()):
        for s in family.samples:
            labels = {**s.labels, "job": "sipwatch", "instance": "sbc1:9108"}
            selector = s.name + "{" + ",".join(f'{k}="{v}"' for k, v in labels.items()) + "}"
            growing = family.type in ("counter", "histogram") and not s.name.endswith("_created")
            v = max(s.value, 1.0)
            values = f"0+{v:g}x20" if growing else f"{s.value:g}x20"
            input_series.append({"series": selector, "values": values})
    exprs = dashboard_exprs() + [
        (where, promql)
        for where, query in variable_queries()
        if (promql := variable_promql(query)) is not None
    ]
    rules = [
        {"alert": f"DashboardExpr{i}", "expr": f"count({grafana_to_promql(expr)}) > 0"}
        for i, (_, expr) in enumerate(exprs)
    ]
    (tmp_path / "rules.yml").write_text(
        yaml.safe_dump({"groups": [{"name": "dashboards", "rules": rules}]})
    )
    tests = {
        "rule_files": ["rules.yml"],
        "evaluation_interval": "1m",
        "tests": [
            {
                "interval": "1m",
                "input_series": input_series,
                "alert_rule_test": [
                    {
                        "eval_time": "15m",
                        "alertname": f"DashboardExpr{i}",
                        "exp_alerts": [{"exp_labels": {}}],
                    }
                    for i in range(len(exprs))
                ],
            }
        ],
    }
    (tmp_path / "tests.yml").write_text(yaml.safe_dump(tests))
    proc = subprocess.run(
        [promtool, "test", "rules", "tests.yml"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    if proc.returncode != 0:
        empty = sorted(
            {
                int(n)
                for n in re.findall(r"alertname: DashboardExpr(\d+)", proc.stdout + proc.stderr)
            }
        )
        pytest.fail("panels without data: " + "; ".join(exprs[i][0] for i in empty))


# ----------------------------------------------------------------------------- names/labels
@pytest.mark.parametrize(
    ("where", "expr"),
    dashboard_exprs() + variable_queries() + rule_exprs(),
    ids=lambda x: x[:60],
)
def test_metric_and_label_names_exist_in_exposition(where: str, expr: str) -> None:
    labels = sample_labels()
    names = set(METRIC_RE.findall(expr))
    assert names, f"{where}: no sipwatch metric in {expr!r}"
    missing = names - set(labels)
    assert not missing, f"{where}: not in the exposition: {sorted(missing)}"
    for name, matchers in SELECTOR_RE.findall(expr):
        if name == "label_values":
            continue
        assert name in labels, f"{where}: {name} is not a sipwatch metric"
        unknown = set(MATCHER_RE.findall(matchers)) - labels[name] - TARGET_LABELS
        assert not unknown, f"{where}: {name} has no label {sorted(unknown)}"
    available = set().union(*(labels[n] for n in names)) | TARGET_LABELS
    for group in GROUPING_RE.findall(expr):
        used = {part.strip() for part in group.split(",") if part.strip()}
        assert used <= available, f"{where}: grouping by unknown labels {used - available}"
    lv = LABEL_VALUES_RE.search(expr.strip())
    if lv:
        name = METRIC_RE.findall(lv.group(1))[0]
        assert lv.group(2) in labels[name] | TARGET_LABELS, where


# ----------------------------------------------------------------------------- structure
@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.name)
def test_dashboard_structure(path: Path) -> None:
    d = load_dashboard(path)
    assert d["schemaVersion"] == 39
    assert d["uid"] and d["title"] and d["id"] is None
    # One way to pick the data source - the variable - so the picker works after an import
    # too (an __inputs entry would make the import bake one data source into every panel).
    assert "__inputs" not in d
    variables = {v["name"]: v for v in d["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    assert [v["name"] for v in d["templating"]["list"] if v["type"] == "datasource"] == [
        "datasource"
    ]
    for var in d["templating"]["list"]:
        if var["type"] == "query":
            assert var["datasource"] == {"type": "prometheus", "uid": DS_UID}, var["name"]
    assert "${DS_" not in path.read_text()

    ids = [p["id"] for p in d["panels"]]
    assert len(ids) == len(set(ids))
    cells: dict[tuple[int, int], str] = {}
    for panel in d["panels"]:
        pos = panel["gridPos"]
        assert all(isinstance(pos[k], int) for k in ("h", "w", "x", "y")), panel["title"]
        assert pos["w"] > 0 and pos["h"] > 0 and pos["x"] >= 0 and pos["x"] + pos["w"] <= 24
        for x in range(pos["x"], pos["x"] + pos["w"]):
            for y in range(pos["y"], pos["y"] + pos["h"]):
                assert (x, y) not in cells, f"{panel['title']} overlaps {cells[(x, y)]}"
                cells[(x, y)] = panel["title"]
        if panel["type"] in ("row", "text"):
            continue
        assert panel["datasource"] == {"type": "prometheus", "uid": DS_UID}, panel["title"]
        assert panel["fieldConfig"]["defaults"]["unit"] in GRAFANA_UNITS, panel["title"]
        assert panel.get("description"), panel["title"]
        targets = panel["targets"]
        assert targets, panel["title"]
        assert len({t["refId"] for t in targets}) == len(targets)
        for t in targets:
            assert t["expr"].strip()
            assert t["datasource"] == {"type": "prometheus", "uid": DS_UID}
            used = set(VARIABLE_RE.findall(t["expr"])) - GRAFANA_MACROS
            assert used <= set(variables), f"{panel['title']}: undefined {used - set(variables)}"
            if "sipwatch_" in t["expr"]:
                assert 'job=~"$job"' in t["expr"] and 'instance=~"$instance"' in t["expr"]


def test_overview_covers_the_issue() -> None:
    d = load_dashboard(DASHBOARD_DIR / "sipwatch-overview.json")
    titles = {p["title"] for p in d["panels"]}
    for wanted in (
        "REGISTER success rate",
        "Failures by status",
        "Failures by X-Reason",
        "Top failing users",
        "Top failing IPs",
        "REGISTER latency quantiles",
        "Scanner User-Agents",
        "Usernames tried per IP",
        "Source state",
        "Challenge ratio",
    ):
        assert wanted in titles
    units = {
        p["title"]: p["fieldConfig"]["defaults"]["unit"] for p in d["panels"] if "targets" in p
    }
    assert units["REGISTER success rate"] == "percentunit"
    assert units["REGISTER latency quantiles"] == "s"
    assert units["Attempts in range"] == "short"
    users = next(p for p in d["panels"] if p["title"] == "Top failing users")
    links = [
        link["url"]
        for o in users["fieldConfig"]["overrides"]
        for prop in o["properties"]
        if prop["id"] == "links"
        for link in prop["value"]
    ]
    user_uid = load_dashboard(DASHBOARD_DIR / "sipwatch-user.json")["uid"]
    assert links and all(f"/d/{user_uid}/" in url and "var-user=" in url for url in links)


def test_user_drilldown_has_a_single_user_variable_ranked_by_failures() -> None:
    """The user list is ordered by failures in the range (Grafana keeps the query's order
    with sort 0), not alphabetically - so scanner guesses like "0000" or "admin", which are
    never counted per user anyway, cannot head it."""
    d = load_dashboard(DASHBOARD_DIR / "sipwatch-user.json")
    user = next(v for v in d["templating"]["list"] if v["name"] == "user")
    assert user["multi"] is False and user["includeAll"] is False
    assert 'user!="other"' in user["query"]
    assert user["query"].startswith("query_result(sort_desc(") and user["sort"] == 0
    assert re.fullmatch(user["regex"].strip("/"), 'user="1001@acme.example.com"')
    exprs = [t["expr"] for p in d["panels"] for t in p.get("targets", [])]
    assert sum('user="$user"' in e for e in exprs) >= 4


@pytest.mark.parametrize(("where", "expr"), dashboard_exprs() + rule_exprs(), ids=lambda x: x[:60])
def test_every_counter_panel_and_rule_counts_exactly(where: str, expr: str) -> None:
    """No rate()/increase() on sipwatch's counters: they extrapolate (fractions such as 370.2),
    never see a series' first increment (a single failure stays invisible) and, over
    $__rate_interval windows wider than a step, count each event in several points.  Every
    counter is read through EXACT_WINDOW_RE: a difference of two scraped values one step or
    one range apart, or the whole value when the series was born or reset inside the window
    (tests/test_prometheus_e2e.py checks the numbers against a real Prometheus)."""
    counters = {
        name
        for name in METRIC_RE.findall(expr)
        if name.startswith("sipwatch_") and (name.endswith("_total") or name.endswith("_bucket"))
    }
    assert not re.search(r"\b(rate|irate|increase|delta|idelta)\(", expr), where
    wrapped = {
        METRIC_RE.findall(m.group("sel") or m.group("isel"))[0]
        for m in EXACT_WINDOW_RE.finditer(expr)
    }
    assert counters <= wrapped, f"{where}: {sorted(counters - wrapped)} read without a window"
    rest = EXACT_WINDOW_RE.sub("W", expr)
    assert not counters & set(METRIC_RE.findall(rest)), f"{where}: a counter read raw"


def test_dashboard_uids_are_unique() -> None:
    uids = [load_dashboard(p)["uid"] for p in DASHBOARDS]
    assert len(uids) == len(set(uids)) == 2


def test_provisioning_examples() -> None:
    dash = yaml.safe_load((DASHBOARD_DIR / "provisioning" / "dashboards.yaml").read_text())
    assert dash["apiVersion"] == 1
    (provider,) = dash["providers"]
    assert provider["type"] == "file"
    assert provider["options"]["path"].startswith("/")
    ds = yaml.safe_load((DASHBOARD_DIR / "provisioning" / "datasource.yaml").read_text())
    assert ds["apiVersion"] == 1
    (source,) = ds["datasources"]
    assert source["type"] == "prometheus"
    assert source["isDefault"] is True
