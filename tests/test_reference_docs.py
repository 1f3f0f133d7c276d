"""The generated references (docs/metrics.md, docs/rules.md) and the overview picture
(docs/overview.svg) against fresh renderings, the dashboards, the real exposition and the real
diagnosis engine, so none of them can drift from the code."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import xml.etree.ElementTree as ET
from collections.abc import Callable
from pathlib import Path
from typing import Literal

import pytest
from prometheus_client.parser import text_string_to_metric_families

from sipwatch.diagnosis.checks import CHECKS
from sipwatch.diagnosis.engine import DiagnosisEngine
from sipwatch.diagnosis.rules import Rule, SymptomPattern, load_rules, parse_rules
from sipwatch.diagnosis.symptom import Symptom
from sipwatch.metrics import (
    ALERT_RESULTS,
    DIAGNOSIS_ERROR_KINDS,
    RECORD_KINDS,
    REMEDIATION_RESULTS,
    SipwatchMetrics,
    render_text,
)
from sipwatch.replay.driver import replay_paths
from sipwatch.replay.report import to_json
from sipwatch.sip_meaning import SCANNER_USER_AGENTS, X_REASONS
from tools import reference_docs as rd
from tools.synth import Device, challenge_header, sip_dump

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
SVG_NS = "{http://www.w3.org/2000/svg}"
STALE = "is stale: run python -m tools.reference_docs --write"


@pytest.fixture(scope="module")
def metrics_md() -> str:
    return (DOCS / "metrics.md").read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def rules_md() -> str:
    return (DOCS / "rules.md").read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def svg_text() -> str:
    return (DOCS / "overview.svg").read_text(encoding="utf-8")


def svg_texts(svg: str) -> list[str]:
    """Every rendered line of text in document order; styled pieces (tspans) are joined by
    a space, as the gap the renderer leaves between them."""
    root = ET.fromstring(svg)
    out = []
    for el in root.iter(f"{SVG_NS}text"):
        spans = el.findall(f"{SVG_NS}tspan")
        out.append(" ".join(s.text or "" for s in spans) if spans else el.text or "")
    return out


# ------------------------------------------------------------------------ no drift


def test_committed_metrics_reference_is_fresh(metrics_md: str) -> None:
    assert metrics_md == rd.render_metrics(), f"docs/metrics.md {STALE}"


def test_committed_rules_reference_is_fresh(rules_md: str) -> None:
    assert rules_md == rd.render_rules(), f"docs/rules.md {STALE}"


def test_committed_overview_svg_is_fresh(svg_text: str) -> None:
    assert svg_text == rd.render_overview_svg(), f"docs/overview.svg {STALE}"


@pytest.mark.parametrize("document", sorted(rd.DOCUMENTS))
def test_cli_output_ignores_hash_seed_cwd_and_environment(document: str, tmp_path: Path) -> None:
    """Another process, another hash seed, another directory and a hostile environment
    (config file, database URL, top_n override) still print the committed bytes."""
    env = {
        **os.environ,
        "PYTHONHASHSEED": "4242",
        "SIPWATCH_CONFIG": str(tmp_path / "missing.toml"),
        "SIPWATCH_DB_URL": "mysql://root@127.0.0.1:1/nowhere",
        "SIPWATCH__METRICS__TOP_N": "3",
        "PYTHONPATH": str(ROOT),  # tools/ is a maintainer package, not installed
    }
    proc = subprocess.run(
        [sys.executable, "-m", "tools.reference_docs", document],
        capture_output=True,
        cwd=tmp_path,
        env=env,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr.decode()
    committed = (ROOT / rd.DOCUMENTS[document]).read_bytes()
    assert proc.stdout == committed


def test_cli_needs_a_document_or_write(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        rd.main([])
    assert exc.value.code == 2
    assert "name a document" in capsys.readouterr().err
    assert rd.main(["rules"]) == 0
    assert capsys.readouterr().out == rd.render_rules()


# ------------------------------------------------------------------------ metrics reference


def test_every_metric_of_the_dashboards_and_alert_rules_is_documented(metrics_md: str) -> None:
    used: dict[str, set[str]] = {}
    for path in sorted((ROOT / "dashboards").glob("*.json")):
        exprs: list[str] = []
        rd._query_texts(json.loads(path.read_text(encoding="utf-8")), exprs)
        used[path.name] = rd.metric_names_in("\n".join(exprs))
    alerts = (ROOT / "prometheus" / "sipwatch-alerts.yml").read_text(encoding="utf-8")
    used["sipwatch-alerts.yml"] = rd.metric_names_in(alerts)
    assert used["sipwatch-overview.json"], "the overview dashboard queries no metric?"
    for where, names in used.items():
        for name in sorted(names):
            assert f"`{name}`" in metrics_md, f"{name} (used in {where}) is not documented"


def test_every_family_of_the_real_exposition_has_a_section(metrics_md: str) -> None:
    """Independent of the generator's collector walk: parse the text exposition."""
    metrics = SipwatchMetrics()
    replay_paths([str(ROOT / p) for p in rd.EXAMPLE_LOGS], metrics=metrics)
    families = list(text_string_to_metric_families(render_text(metrics.registry)))
    assert len(families) > 30
    for family in families:
        suffix = {"counter": "_total", "info": "_info"}.get(family.type, "")
        name = family.name + suffix
        assert f"\n### {name}\n" in metrics_md, name
        section = metrics_md.split(f"\n### {name}\n", 1)[1].split("\n### ", 1)[0]
        for sample in family.samples:
            for label in sample.labels:
                if label != "le":
                    assert f"[`{label}`](#{label})" in section, (name, label)


def test_label_vocabularies_endpoints_and_bounds_are_listed(metrics_md: str) -> None:
    labels = metrics_md.split("\n## Labels\n", 1)[1]
    vocab = [label for _, label in X_REASONS] + [tool for _, tool in SCANNER_USER_AGENTS]
    vocab += [*RECORD_KINDS, *ALERT_RESULTS, *REMEDIATION_RESULTS, *DIAGNOSIS_ERROR_KINDS]
    vocab += [r.id for r in load_rules(ROOT / "rules")]
    for value in vocab:
        assert f"`{value}`" in labels, value
    for path in ("/metrics", "/healthz", "/readyz", "/api/failures"):
        assert f"`GET {path}`" in metrics_md, path
    bounds = metrics_md.split("\n## Cardinality bounds\n", 1)[1].split("\n## ", 1)[0]
    assert "(default 20, per side)" in bounds
    assert "(default 900 s)" in bounds


CAP_FEEDERS: dict[str, tuple[str, Callable[[SipwatchMetrics, str], None]]] = {
    "source": ("sipwatch_log_lines_total", lambda mt, v: mt.observe_lines(v, 1)),
    "kind": ("sipwatch_parse_errors_total", lambda mt, v: mt.observe_parse_error("f", v)),
    "stage": ("sipwatch_queue_depth", lambda mt, v: mt.observe_queue(v, 0, 1)),
    "node": ("sipwatch_source_node_info", lambda mt, v: mt.observe_source_node(f"s-{v}", v)),
    "cause": ("sipwatch_root_causes_total", lambda mt, v: mt.observe_root_cause(v, "error")),
    "target": ("sipwatch_alerts_total", lambda mt, v: mt.observe_alert(v, "sent")),
    "action": ("sipwatch_remediations_total", lambda mt, v: mt.observe_remediation(v, "applied")),
}


@pytest.mark.parametrize("label", sorted(rd.LABEL_CAPS))
def test_documented_label_caps_are_what_sipwatch_metrics_does(label: str, metrics_md: str) -> None:
    cap = rd.LABEL_CAPS[label]
    metric, feed = CAP_FEEDERS[label]
    metrics = SipwatchMetrics(process_metrics=False)
    for i in range(cap + 5):
        feed(metrics, f"value{i:03d}")
    values = {
        s.labels[label]
        for fam in text_string_to_metric_families(render_text(metrics.registry))
        for s in fam.samples
        if s.name == metric
    }
    assert len(values - {"other"}) == cap and "other" in values
    section = metrics_md.split(f"\n### `{label}`\n", 1)[1].split("\n### ", 1)[0]
    assert re.search(rf"(first|at most) {cap} distinct", section, re.I), section


def test_a_family_without_samples_is_refused_not_silently_undocumented() -> None:
    """A new labelled metric the example never touches must be noticed at generation time."""
    fresh = SipwatchMetrics(process_metrics=False)
    with pytest.raises(rd.ReferenceDocsError, match="has no sample"):
        rd.metric_families(fresh)


# ------------------------------------------------------------------------ rules reference


def test_rules_reference_lists_every_rule_with_its_fix(rules_md: str) -> None:
    rules = load_rules(ROOT / "rules")
    contents = rules_md.split("\n## Contents\n", 1)[1].split("\n## ", 1)[0]
    priorities = [int(m) for m in re.findall(r"^\| (\d+) \| \[", contents, re.M)]
    assert len(priorities) == len(rules) and priorities == sorted(priorities)
    for rule in rules:
        assert f"[{rule.id}](#{rule.id})" in contents
        section = rules_md.split(f"\n### {rule.id}\n", 1)[1].split("\n### ", 1)[0]
        assert f"| Severity | {rule.severity} |" in section
        assert f"| Priority | {rule.priority} |" in section
        assert len(re.findall(r"^\d+\. ", section, re.M)) == len(rule.fix_steps)
        if rule.fix_command:
            assert f"```sh\n{rule.fix_command}\n```" in section
        if rule.remediation:
            assert f"| Remediation | `{rule.remediation}` |" in section


def test_checks_section_lists_every_registered_check_with_what_it_needs(rules_md: str) -> None:
    section = rules_md.split("\n## Checks\n", 1)[1]
    rows = re.findall(r"^\| `(\w+)` \| ([^|]+) \|", section, re.M)
    assert [name for name, _ in rows] == sorted(CHECKS)
    for name, needs in rows:
        assert needs.strip() == ", ".join(CHECKS[name].needs)


def _symptom(rule: Rule, pattern: SymptomPattern | None) -> Symptom:
    """A log-only symptom that fully matches ``pattern`` and satisfies the rule's log checks."""
    fields: dict[str, object] = {"user": "alice", "domain": "pbx.example.com"}
    if pattern is not None:
        if pattern.status is not None:
            fields["status"] = min(pattern.status)
        if pattern.x_reason is not None:
            fields["x_reason"] = pattern.x_reason[0]
        if pattern.challenged is not None:
            fields["challenged"] = pattern.challenged
        if pattern.registrar_events is not None:
            fields["registrar_events"] = frozenset({min(pattern.registrar_events)})
    if rule.checks.get("ip_used_as_domain"):
        fields["domain"] = fields["request_uri_host"] = "198.51.100.10"
    if rule.checks.get("scanner_signal"):
        fields["user_agent"] = "friendly-scanner"
    return Symptom(**fields)  # type: ignore[arg-type]


@pytest.mark.parametrize("rule", load_rules(ROOT / "rules"), ids=lambda r: r.id)
async def test_without_a_database_column_matches_the_engine(rule: Rule) -> None:
    """What docs/rules.md says a rule does without a database is what the engine does."""
    verdict = rd.log_only(rule)
    flavour: Literal["sidecar", "legacy"] = "sidecar" if "sidecar" in rule.flavours else "legacy"
    engine = DiagnosisEngine([rule], db=None, redis=None, secret=None, registrar_flavour=flavour)
    # every symptom the rule describes: a "no" rule must stay silent for all of them
    candidates: list[SymptomPattern | None] = [*rule.suspect_when, *rule.match]
    if not rule.match:
        candidates.append(None)
    results = []
    for pattern in candidates:
        diagnosis = await engine.diagnose(_symptom(rule, pattern))
        results.append(diagnosis.causes[0].confidence if diagnosis.causes else "no")
    if verdict.verdict == "no":
        assert results == ["no"] * len(results), results
    else:
        assert verdict.verdict in results, (verdict, results)


def test_rule_text_is_escaped_for_markdown() -> None:
    hostile = parse_rules(
        """
id: hostile_rule
title: "Pipes | *stars* <b>html</b> [link](x)"
severity: info
match:
  - status: [403]
summary: "Breaks | tables and `code` for {user}"
fix:
  steps: ["Run <script> & _enjoy_"]
  command: null
""",
        "/somewhere/rules/hostile.yaml",
    )
    md = rd.render_rules(hostile)
    row = next(line for line in md.splitlines() if line.startswith("| 100 | [hostile_rule]"))
    assert row.count("|") - row.count("\\|") == 7  # the title's pipe did not add a column
    assert "\\*stars\\*" in md and "\\<b>html\\</b>" in md and "\\[link\\](x)" in md
    assert "Breaks \\| tables and \\`code\\` for `{user}`" in md
    assert "Run \\<script> \\& \\_enjoy\\_" in md
    assert "`rules/hostile.yaml:2`" in md


# ------------------------------------------------------------------------ overview picture


def test_overview_svg_is_well_formed_and_shows_the_example(svg_text: str) -> None:
    root = ET.fromstring(svg_text)
    assert root.tag == f"{SVG_NS}svg"
    texts = svg_texts(svg_text)
    # The same numbers `sipwatch replay --format json` reports for the bundled example.
    report = to_json(replay_paths([str(ROOT / p) for p in rd.EXAMPLE_LOGS]))
    assert report["sip_messages"] == 62
    assert "62" in texts
    by_status = report["register_transactions_by_status"]
    assert by_status == {"200": 3, "401": 8, "403": 17, "500": 1, "503": 1, "timeout": 1}
    for status, count in by_status.items():
        assert status in texts and str(count) in texts
    assert "13.0%" in texts  # 3 successful attempts of 23
    assert "3 of 23 attempts" in texts
    assert "185.243.5.17" in texts  # the one scanner IP
    title = json.loads((ROOT / "dashboards" / "sipwatch-overview.json").read_text())["title"]
    assert f"Dashboards / {title}" in texts
    # the table: one row per failing device with the log-only cause, and one for the scanner
    # (its 8 usernames fold into one row: attack traffic never takes a device's place)
    rows = {t for t in texts if "@" in t}
    assert len(rows) == 7
    assert "scanner (8 usernames)" in texts
    causes = [t for t in texts if t.endswith(("confirmed", "suspected"))]
    assert "realm_is_ip error, confirmed" in causes
    assert "registrar_down critical, confirmed" in causes
    assert sum(c.startswith("scanner ") for c in causes) == 1


def test_overview_svg_escapes_hostile_log_text(tmp_path: Path) -> None:
    """Usernames and X-Reasons come from the internet; they must not break the XML."""
    examples = tmp_path / "examples"
    examples.mkdir()
    dev = Device(user="a&b$c", domain="evil.example", ip="203.0.113.9")
    req = dev.register()
    reason = 'X-Reason: </text><script>alert("x")</script> & \x07bell'
    log = sip_dump(1795766400.0, "recv", "udp", dev.ip, dev.port, req)
    log += sip_dump(
        1795766400.01,
        "send",
        "udp",
        dev.ip,
        dev.port,
        dev.response(req, 401, "Unauthorized", [challenge_header("evil.example")]),
    )
    req2 = dev.register(auth=True)
    log += sip_dump(1795766400.1, "recv", "udp", dev.ip, dev.port, req2)
    log += sip_dump(
        1795766400.11,
        "send",
        "udp",
        dev.ip,
        dev.port,
        dev.response(req2, 403, "Forbidden", [reason]),
    )
    (examples / "drachtio-sbc.log").write_text(log, encoding="utf-8")
    (examples / "sbc-sip-sidecar.log").write_text("", encoding="utf-8")

    svg = rd.render_overview_svg(rd.run_example(tmp_path), root=tmp_path)
    texts = svg_texts(svg)  # parses: the document is well-formed
    assert "<script>" not in svg
    assert "a&amp;b$c@evil.example" in svg
    assert "a&b$c@evil.example" in texts
    assert any(t.startswith('</text><script>alert("x")') for t in texts)
    assert not any("\x07" in t for t in texts)
