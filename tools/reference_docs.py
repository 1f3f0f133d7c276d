"""Render the metrics reference, the rules reference and the overview picture from the code.

Why generated: a hand-written list of metrics or rules is stale by the next release, and a
screenshot of a dashboard shows numbers nobody can reproduce.  All three documents are built
from what the code actually does:

* ``docs/metrics.md``: every family a ``SipwatchMetrics`` exposes after replaying the bundled
  example (plus the daemon-only paths), with the bounded label vocabularies defined in
  ``sipwatch.metrics``, the cardinality bounds and the HTTP endpoints of ``sipwatch.web.app``;
* ``docs/rules.md``: every rule of ``load_rules(default_rules_dir())``;
* ``docs/overview.svg``: the Grafana overview dashboard as it looks for the bundled example,
  drawn as plain SVG from a replay and a log-only diagnosis.

Output is deterministic (no timestamps, fixed or sorted order), so a test can compare the
committed files with a fresh rendering.  Regenerate from a checkout with::

    python -m tools.reference_docs --write
    python -m tools.reference_docs metrics|rules|overview-svg   # one document to stdout
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import re
import string
import sys
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal
from xml.sax.saxutils import escape as xml_escape

import yaml

from sipwatch import metrics as m
from sipwatch.config import DEFAULT_LISTEN, REMEDIATION_ACTIONS, Config, load_config
from sipwatch.daemon.stages import SecretStateCollector, secret_state_collector
from sipwatch.diagnosis.checks import CHECKS
from sipwatch.diagnosis.rules import (
    EXAMPLE_DOMAIN,
    FLAVOURS,
    SEVERITIES,
    Rule,
    RuleExample,
    SymptomPattern,
    default_rules_dir,
    load_rules,
)
from sipwatch.diagnosis.secret_proof import SecretState, SecretStatus
from sipwatch.ingest import speedups
from sipwatch.ingest.framing import LogParser
from sipwatch.metrics.cardinality import EVICT_DEMOTED, EVICT_EXPIRED, OTHER
from sipwatch.metrics.core import KIND_LABELS, NODE_LABELS, SOURCE_LABELS, STAGE_LABELS
from sipwatch.metrics.diagnosis import ACTION_LABELS, CAUSE_LABELS, TARGET_LABELS
from sipwatch.metrics.offenders import EVICT_SCANNER, SCANNER_EVIDENCE
from sipwatch.model import (
    AttemptOutcome,
    Direction,
    LogChunk,
    ServiceOrigin,
    Side,
    SipMessage,
    Stream,
)
from sipwatch.pipeline.core import PipelineSettings
from sipwatch.pipeline.failures import FailureRecord, FailureTracker
from sipwatch.replay.diagnosis import diagnose_replay
from sipwatch.replay.driver import ReplayResult, replay_paths, status_sort_key
from sipwatch.replay.report import CauseMap, record_key
from sipwatch.sip_meaning import SCANNER_USER_AGENTS, X_REASONS
from sipwatch.sources.docker import ROLE_DRACHTIO, ROLE_REGISTRAR

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE_LOGS = ("examples/drachtio-sbc.log", "examples/sbc-sip-sidecar.log")
OVERVIEW_DASHBOARD = "dashboards/sipwatch-overview.json"
ALERT_RULES = "prometheus/sipwatch-alerts.yml"
DOCUMENTS = {
    "metrics": "docs/metrics.md",
    "rules": "docs/rules.md",
    "overview-svg": "docs/overview.svg",
}
REGENERATE = "python -m tools.reference_docs --write"


class ReferenceDocsError(RuntimeError):
    """The documents cannot be rendered (no checkout, or the code has something undocumented)."""


# =============================================================================================
# The bundled example, replayed once
# =============================================================================================


@dataclass(frozen=True)
class ExampleRun:
    """A replay of the bundled example with its metrics and log-only root causes."""

    inputs: tuple[str, ...]  # repository-relative names, for display
    result: ReplayResult
    metrics: m.SipwatchMetrics
    causes: CauseMap
    config: Config


def default_config() -> Config:
    """Built-in defaults only: neither a config file nor the environment may change a doc."""
    return load_config(None, environ={}, search_paths=())


def run_example(root: Path = ROOT, *, process_metrics: bool = False) -> ExampleRun:
    """Replay the bundled example like ``sipwatch replay`` does, diagnosing without a DB."""
    paths = [root / name for name in EXAMPLE_LOGS]
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        raise ReferenceDocsError(
            f"example logs not found ({', '.join(missing)}); run from a sipwatch checkout"
        )
    config = default_config()
    metrics = m.SipwatchMetrics(
        top_n=config.metrics.top_n,
        series_ttl=config.metrics.series_ttl_seconds,
        process_metrics=process_metrics,
    )
    result = replay_paths(
        [str(p) for p in paths], settings=PipelineSettings.from_config(config), metrics=metrics
    )
    causes, _problem = diagnose_replay(result, config=config, db_url=None, redis_url=None)
    return ExampleRun(EXAMPLE_LOGS, result, metrics, causes, config)


def _samples(metrics: m.SipwatchMetrics, name: str) -> list[tuple[dict[str, str], float]]:
    """(labels, value) of every sample called ``name`` in the exposition."""
    out: list[tuple[dict[str, str], float]] = []
    for family in metrics.registry.collect():
        for sample in family.samples:
            if sample.name == name:
                out.append((dict(sample.labels), sample.value))
    return out


def _sum(metrics: m.SipwatchMetrics, name: str, **match: str) -> float:
    return sum(
        value
        for labels, value in _samples(metrics, name)
        if all(labels.get(k) == v for k, v in match.items())
    )


# =============================================================================================
# Markdown helpers
# =============================================================================================

# Characters that could start Markdown formatting; "_" only at a word edge, since GitHub
# never reads an underscore inside a word (JAMBONES_HOSTING) as emphasis.
_MD_SPECIAL = re.compile(r"([\\`*\[\]<|&]|(?<![A-Za-z0-9])_|_(?![A-Za-z0-9]))")


def _md_escape(text: str) -> str:
    return _MD_SPECIAL.sub(r"\\\1", text)


def _md(text: str) -> str:
    """Plain text for Markdown: one line, with every character that could format escaped."""
    return _md_escape(" ".join(str(text).split()))


def _code(text: str) -> str:
    """Inline code that survives backticks and table pipes in ``text``."""
    text = " ".join(str(text).split()).replace("|", "\\|")
    fence = "``" if "`" in text else "`"
    pad = " " if text.startswith("`") or text.endswith("`") else ""
    return f"{fence}{pad}{text}{pad}{fence}"


def _codes(values: Iterable[str]) -> str:
    return ", ".join(_code(v) for v in values)


def _template_md(template: str) -> str:
    """A rule template: literal text escaped, ``{placeholders}`` shown as code."""
    out: list[str] = []
    for literal, name, _, _ in string.Formatter().parse(" ".join(template.split())):
        out.append(_md_escape(literal))
        if name is not None:
            out.append(_code("{" + name + "}"))
    return "".join(out)


# =============================================================================================
# Metrics reference
# =============================================================================================


@dataclass(frozen=True)
class FamilyDoc:
    """One exposed metric family, as a scraper sees it."""

    name: str  # exposed name: counters with _total, info with _info, histogram base name
    type: str
    unit: str
    help: str
    labels: tuple[str, ...]
    series: tuple[str, ...]  # sample names (histograms: _bucket, _count, _sum)


def _unit(name: str, declared: str) -> str:
    if declared:
        return declared
    for suffix in ("seconds", "bytes"):
        if name.endswith(f"_{suffix}") or name.endswith(f"_{suffix}_total"):
            return suffix
    return ""


def metric_families(metrics: m.SipwatchMetrics) -> list[FamilyDoc]:
    """Every family in the exposition of ``metrics``; all of them must carry a sample."""
    out: list[FamilyDoc] = []
    for family in metrics.registry.collect():
        labels: list[str] = []
        series: list[str] = []
        for sample in family.samples:
            for key in sample.labels:
                if key not in labels and not (family.type == "histogram" and key == "le"):
                    labels.append(key)
            if sample.name not in series:
                series.append(sample.name)
        if not family.samples:
            raise ReferenceDocsError(
                f"metric family {family.name} has no sample after the example run: extend "
                "exercise_daemon_paths() so its label names can be documented"
            )
        exposed = {"counter": f"{family.name}_total", "info": f"{family.name}_info"}.get(
            family.type, family.name
        )
        out.append(
            FamilyDoc(
                name=exposed,
                type=family.type,
                unit=_unit(exposed, family.unit),
                help=family.documentation,
                labels=tuple(labels),
                series=tuple(sorted(series)),
            )
        )
    return out


def _first_message(root: Path) -> SipMessage:
    parser = LogParser()
    name = EXAMPLE_LOGS[0]
    text = (root / name).read_text(encoding="utf-8", errors="surrogateescape")
    events = [*parser.feed(LogChunk(name, Stream.TEXT, text)), *parser.flush()]
    for ev in events:
        if isinstance(ev, SipMessage):
            return ev
    raise ReferenceDocsError(f"{name}: no SIP message in the example")


def exercise_daemon_paths(run: ExampleRun, root: Path = ROOT) -> None:
    """Touch the metrics that only the daemon feeds, so every family has a labelled sample.

    A replay has no live sources, queues, alerts or remediation and the example has no parse
    error or truncated message.  The values do not matter (the reference shows names, types
    and labels, never values); the label values are the ones the daemon uses.
    """
    metrics = run.metrics
    metrics.watch_tracker(run.result.pipeline.tracker)  # the pipeline hands it over live
    for name in run.inputs:
        metrics.set_source_up(name, True)
    metrics.observe_source_node("jambonz-sbc-sip-7xk2p", "sbc-node-1")  # a pod on its node
    metrics.observe_queue("parse", 0, 1024)
    metrics.observe_queue("diagnosis", 0, 256)
    metrics.set_inflight(0, 0)
    for key in sorted(run.causes, key=str):
        for cause in run.causes[key]:
            metrics.observe_root_cause(str(cause["id"]), str(cause["severity"]))
    metrics.observe_parse_error(run.inputs[0], "sip_start_line", 1)
    metrics.observe_message(dataclasses.replace(_first_message(root), truncated=True))
    metrics.observe_alert("slack", "sent")
    metrics.observe_remediation(REMEDIATION_ACTIONS[0], "dry_run")
    secret_state_collector(metrics.registry).source = lambda: SecretStatus(SecretState.PROVEN)


_SECTIONS: tuple[tuple[str, str, frozenset[str]], ...] = (
    (
        "Log pipeline",
        "Is sipwatch reading the logs? A dead source or a broken parser shows here first.",
        frozenset(
            {
                m.LOG_LINES,
                m.LOG_RECORDS,
                m.PARSE_ERRORS,
                m.SIP_MESSAGES,
                m.SIP_TRUNCATED,
                m.SERVICE_EVENTS,
                m.SOURCE_UP,
                m.SOURCE_RECONNECTS,
                m.SOURCE_NODE,
                m.SOURCE_LAST_EVENT,
                m.QUEUE_DEPTH,
                m.QUEUE_CAPACITY,
                m.QUEUE_DROPS,
            }
        ),
    ),
    (
        "REGISTER transactions and attempts",
        "A *transaction* is one REGISTER and its final response; an *attempt* is the device's "
        "whole registration: REGISTER, 401/407 challenge, REGISTER with credentials, final "
        "answer.",
        frozenset(
            {
                m.REGISTER_TRANSACTIONS,
                m.REGISTER_RETRANSMISSIONS,
                m.REGISTER_LATENCY,
                m.REGISTER_ATTEMPTS,
                m.REGISTER_ATTEMPT_DURATION,
                m.REGISTER_INFLIGHT_TRANSACTIONS,
                m.REGISTER_INFLIGHT_ATTEMPTS,
                m.REGISTER_SCANNER_ATTEMPTS,
                m.REGISTER_ORPHAN_RESPONSES,
                m.REGISTER_STATE_EVICTIONS,
            }
        ),
    ),
    (
        "Per-user and per-IP failures",
        "Series exist only for the top-N offenders; every other observation is summed in the "
        f"`{OTHER}` series (see [Cardinality bounds](#cardinality-bounds)).",
        frozenset(
            {
                m.USER_FAILURES,
                m.USER_FAILING,
                m.IP_FAILURES,
                m.IP_DISTINCT_USERS,
                m.SCANNER_SOURCES,
            }
        ),
    ),
    (
        "Label trackers",
        "How full the top-N tables are and how often observations were folded or evicted.",
        frozenset(
            {
                m.LABEL_TRACKER_EXPOSED,
                m.LABEL_TRACKER_TRACKED,
                m.LABEL_TRACKER_LIMIT,
                m.LABEL_TRACKER_FOLDED,
                m.LABEL_TRACKER_EVICTIONS,
            }
        ),
    ),
    (
        "Diagnosis, alerts and remediation",
        "Fed by the daemon's later stages; a replay only counts root causes.",
        frozenset(
            {
                m.ROOT_CAUSES,
                m.DIAGNOSIS_ERRORS,
                SecretStateCollector.NAME,
                m.ALERTS,
                m.REMEDIATIONS,
            }
        ),
    ),
    ("Build", "", frozenset({m.BUILD_INFO})),
)
_PROCESS_SECTION = (
    "Process",
    "The standard process metrics of prometheus-client (Linux), exposed by `sipwatch run`.",
)


def _section_of(name: str) -> str:
    for title, _, names in _SECTIONS:
        if name in names:
            return title
    if name.startswith("process_"):
        return _PROCESS_SECTION[0]
    return "Other"


def _ordered_codes(codes: Iterable[int]) -> str:
    return ", ".join(str(c) for c in sorted(codes))


# How many distinct values SipwatchMetrics keeps for the labels that come from configuration
# or code before folding newcomers into "other" (its CappedLabel limits; a test feeds one
# more than each and checks the fold).
LABEL_CAPS: Mapping[str, int] = {
    "source": SOURCE_LABELS,
    "kind": KIND_LABELS,
    "stage": STAGE_LABELS,
    "node": NODE_LABELS,
    "cause": CAUSE_LABELS,
    "target": TARGET_LABELS,
    "action": ACTION_LABELS,
}


def _label_docs(rule_ids: Sequence[str], rule_events: Sequence[str]) -> dict[str, str]:
    """Meaning and bounded vocabulary of every label: by label name, or by
    ``_label:metric`` where one name means different things in different metrics."""
    caps = LABEL_CAPS
    x_reasons = "; ".join(
        f"{_code(label)} (X-Reason starting with {_code(prefix)}, any case)"
        for prefix, label in X_REASONS
    )
    needles: dict[str, list[str]] = {}
    for needle, tool in SCANNER_USER_AGENTS:
        needles.setdefault(tool, []).append(needle)
    scanners = "; ".join(
        f"{_code(tool)} (User-Agent containing {' or '.join(_code(n) for n in found)})"
        for tool, found in needles.items()
    )
    return {
        "source": "Log source name: the Docker service or container, the file path, or `-` for "
        f"stdin. Comes from configuration; the first {caps['source']} distinct names are kept, "
        "later ones "
        f"become {_code(OTHER)}.",
        "_source:" + m.SOURCE_UP: "What is followed: a file path, `-` for stdin, a Docker "
        f"role ({_code(ROLE_DRACHTIO)} or {_code(ROLE_REGISTRAR)}: up while any of its "
        "services streams, so the registrar a deployment does not run is never down), "
        "`kubernetes:<role>`, or `hep`.",
        "node": "The SBC node a source describes: a Kubernetes pod's node, or a HEP capture "
        f"agent id. At most {caps['node']} distinct nodes. Join on `source` to split any "
        "per-source metric by node.",
        "direction": f"{_codes(d.value for d in Direction)}: received by or sent by drachtio.",
        "type": f"{_codes(('request', 'response'))}.",
        "method": f"SIP method: {_codes(sorted(m.SIP_METHODS))}; anything else is "
        f"{_code(OTHER)}. Responses carry the CSeq method.",
        "origin": f"Which log the event came from: {_codes(o.value for o in ServiceOrigin)}.",
        "level": "pino level name: "
        f"{_codes(m.PINO_LEVELS[k] for k in sorted(m.PINO_LEVELS))}; drachtio events are "
        f"{_code('info')}; unknown levels are {_code(OTHER)}.",
        "stage": "Pipeline queue: `parse` (log chunks waiting for the parser) and `diagnosis` "
        f"(failures waiting for the diagnosis). At most {caps['stage']} distinct names.",
        "side": f"{_code(Side.INBOUND.value)}: a device registering with jambonz; "
        f"{_code(Side.OUTBOUND.value)}: jambonz registering with a carrier.",
        "status": "Final SIP status of the REGISTER. Known codes verbatim ("
        f"{_ordered_codes(m.KNOWN_STATUS_CODES)}); any other code 100-699 as its class "
        f"(`1xx` ... `6xx`); {_code(m.STATUS_TIMEOUT)} when no final response came before Timer "
        f"F; {_code(m.STATUS_NONE)} for status 0; {_code(m.STATUS_INVALID)} for anything else.",
        "x_reason": f"The jambonz `X-Reason` header, mapped to a fixed id: {x_reasons}; "
        f"{_code(m.X_REASON_NONE)} when the response had none; {_code(OTHER)} for any other "
        "text.",
        "outcome": "How the registration attempt ended: "
        f"{_code(AttemptOutcome.SUCCESS.value)} (2xx), "
        f"{_code(AttemptOutcome.FAILURE.value)} (a final non-2xx that is not a challenge), "
        f"{_code(AttemptOutcome.CHALLENGE_LOOP.value)} (401/407 to a request that carried "
        f"credentials), {_code(AttemptOutcome.ABANDONED.value)} (challenged, the device never "
        f"came back), {_code(AttemptOutcome.TIMEOUT.value)} (no final response).",
        "challenged": "`true` when a 401/407 challenge preceded the final answer, else `false`. "
        "403 after a challenge means wrong credentials; 403 without one means the realm or "
        "account was refused before authentication.",
        "result": "`success` (2xx), `challenge` (401/407) or `failure` (anything else).",
        "tool": f"Scanner named by the User-Agent: {scanners}.",
        "user": f"`user@domain` of one of the top-N failing users (cleaned, at most "
        f"{m.USER_LABEL_MAX} characters), or {_code(OTHER)} for all the others.",
        "ip": f"Peer IP of one of the top-N failing sources (at most {m.IP_LABEL_MAX} "
        f"characters), or {_code(OTHER)} for all the others.",
        "dimension": f"Which top-N table: {_codes(('user', 'ip'))}.",
        "reason": f"{_code(EVICT_DEMOTED)} (a bigger offender took the slot), "
        f"{_code(EVICT_EXPIRED)} (not seen for the series TTL) or {_code(EVICT_SCANNER)} (the "
        "name was one a scanner tried before it was recognised).",
        "evidence": "What made a source IP a scanner: "
        f"{_code(SCANNER_EVIDENCE[0])} (a known scanner User-Agent) or "
        f"{_code(SCANNER_EVIDENCE[1])} (many distinct usernames rejected within the "
        "`[diagnosis] scanner_window_seconds`).",
        "_kind:" + m.REGISTER_STATE_EVICTIONS: "Which open state was dropped: "
        f"{_codes(('transaction', 'attempt'))}.",
        "cause": f"Root-cause rule id ([rules reference](rules.md)): {_codes(rule_ids)}. At "
        f"most {caps['cause']} distinct ids.",
        "severity": "Rule severity: "
        f"{_codes(s for s in SEVERITIES if s in m.SEVERITIES)}; anything else is "
        f"{_code(OTHER)}.",
        "target": "Alert target name from `[[alerts.targets]]`; at most "
        f"{caps['target']} distinct names.",
        "action": f"Remediation action: {_codes(REMEDIATION_ACTIONS)}; at most "
        f"{caps['action']} distinct.",
        "version": "The sipwatch version.",
        "implementation": "Which implementation of the log parser's hot path runs: "
        f"{_codes((speedups.COMPILED, speedups.PYTHON))} (built without a C compiler, or "
        f"`{speedups.NO_EXTENSIONS_ENV}=1`).",
        "_state:" + SecretStateCollector.NAME: "Verdict of the secret proof (decrypting a "
        f"bounded sample of stored client passwords): {_codes(s.value for s in SecretState)}; "
        "the current verdict is 1, the others 0. `mismatch` means sipwatch's "
        "`SIPWATCH_JAMBONZ_ENCRYPTION_SECRET` is not jambonz's: password diagnoses are "
        "withheld and encrypting fixes refused ([remediation](remediation.md)).",
        "_kind:" + m.LOG_RECORDS: "Framed record kind: "
        f"{_codes(sorted(m.RECORD_KINDS))}; anything else is {_code(OTHER)}.",
        "_kind:" + m.PARSE_ERRORS: "What could not be parsed (defined by the parser, e.g. "
        "`sip_start_line`, `sip_header_only`, `pino_json`, `timestamp`); at most "
        f"{caps['kind']} distinct, shared with the service event kinds.",
        "_kind:" + m.SERVICE_EVENTS: "Event recognised in a drachtio or registrar log line "
        f"(defined by the parser; at most {caps['kind']} distinct). The kinds rules react to: "
        f"{_codes(rule_events)}.",
        "_kind:" + m.DIAGNOSIS_ERRORS: "Why a check could not run: "
        f"{_codes(m.DIAGNOSIS_ERROR_KINDS)} (every one is exposed from the start, at 0).",
        "_result:" + m.ALERTS: f"Delivery result: {_codes(sorted(m.ALERT_RESULTS))}; anything "
        f"else is {_code(OTHER)}.",
        "_result:" + m.REMEDIATIONS: "Remediation result: "
        f"{_codes(sorted(m.REMEDIATION_RESULTS))}; anything else is {_code(OTHER)}.",
    }


def _label_text(docs: Mapping[str, str], metric: str, label: str) -> str:
    text = docs.get(f"_{label}:{metric}") or docs.get(label)
    if not text:
        raise ReferenceDocsError(
            f"label {label!r} of {metric} is not documented: add it to _label_docs()"
        )
    return text


def _query_texts(node: Any, out: list[str]) -> None:
    """Collect every PromQL string (``expr``, variable ``query``/``definition``) of a panel tree."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key in ("expr", "query", "definition") and isinstance(value, str):
                out.append(value)
            else:
                _query_texts(value, out)
    elif isinstance(node, list):
        for item in node:
            _query_texts(item, out)


def _dashboards(root: Path) -> list[tuple[str, str]]:
    """(title, all query text) of every bundled Grafana dashboard, by file name."""
    out: list[tuple[str, str]] = []
    for path in sorted((root / "dashboards").glob("*.json")):
        data = json.loads(path.read_text(encoding="utf-8"))
        exprs: list[str] = []
        _query_texts(data, exprs)
        out.append((str(data.get("title") or path.stem), "\n".join(exprs)))
    return out


def _alert_rules(root: Path) -> list[tuple[str, str]]:
    """(alert name, expression) of the bundled Prometheus alert rules."""
    path = root / ALERT_RULES
    if not path.is_file():
        return []
    data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    out: list[tuple[str, str]] = []
    for group in data.get("groups", []):
        for rule in group.get("rules", []):
            if "alert" in rule:
                out.append((str(rule["alert"]), str(rule.get("expr", ""))))
    return out


def metric_names_in(text: str) -> set[str]:
    """Metric names (sipwatch_* and process_*) used in a PromQL text."""
    return set(re.findall(r"\b((?:sipwatch|process)_[a-zA-Z0-9_]+)\b", text))


def _uses(family: FamilyDoc, text: str) -> bool:
    names = metric_names_in(text)
    return any(s in names for s in (family.name, *family.series))


_ENDPOINTS = {
    "/metrics": "Prometheus text format 0.0.4, or OpenMetrics when the scraper asks for it. "
    "Stale per-user and per-IP series are expired right before each scrape.",
    "/healthz": "Liveness: `200 ok` while the process and its event loop answer.",
    "/readyz": 'Readiness: `200` with `{"ready": true, "sources": {...}}` when every log source '
    "is connected; `503` with the sources that are down in `down` (or a `reason` when no "
    "source is registered).",
    "/api/failures": "The unresolved REGISTER failures, most frequent first, as JSON: "
    '`{"total", "limit", "dropped", "failures": [...]}`. `?limit=N`, default {default}, at '
    "most {max}. Each failure has: {fields}. Values are log text from the internet: served "
    "only as JSON with `X-Content-Type-Options: nosniff`.",
}


def _endpoint_rows(metrics: m.SipwatchMetrics) -> list[str]:
    from sipwatch.web import app as web

    app = web.make_app(metrics, FailureTracker(), metrics.source_status)
    rows: list[str] = []
    seen: set[str] = set()
    fields = _codes(f.name for f in dataclasses.fields(FailureRecord))
    for route in app.router.routes():
        path = route.resource.canonical if route.resource is not None else ""
        if route.method == "HEAD" or path in seen:
            continue
        seen.add(path)
        if path not in _ENDPOINTS:
            raise ReferenceDocsError(f"HTTP route {path} is not documented: add it to _ENDPOINTS")
        text = (
            _ENDPOINTS[path]
            .replace("{default}", str(web.DEFAULT_LIMIT))
            .replace("{max}", str(web.MAX_LIMIT))
            .replace("{fields}", fields)
        )
        rows.append(f"| `{route.method} {path}` | {text.replace('|', chr(92) + '|')} |")
    return rows


def render_metrics(run: ExampleRun | None = None, root: Path = ROOT) -> str:
    """``docs/metrics.md``."""
    if run is None:
        run = run_example(root, process_metrics=True)
        exercise_daemon_paths(run, root)
    families = metric_families(run.metrics)
    rules = load_rules(default_rules_dir())
    rule_events = sorted(
        {e for r in rules for p in (*r.match, *r.suspect_when) for e in p.registrar_events or ()}
    )
    docs = _label_docs(sorted(r.id for r in rules), rule_events)
    dashboards = _dashboards(root)
    alerts = _alert_rules(root)
    cfg = run.config.metrics

    out = [
        "# sipwatch metrics reference",
        "",
        "<!-- Generated by `python -m tools.reference_docs metrics` from the metrics a",
        "     SipwatchMetrics exposes after replaying the bundled example. Do not edit by hand;",
        f"     regenerate with `{REGENERATE}`. -->",
        "",
        "`sipwatch run` serves these on `http://<listen>/metrics` (`[metrics] listen`, default",
        f"`{DEFAULT_LISTEN}`); `sipwatch replay --format prometheus FILE...` prints the same",
        "families for a log file, without the process metrics.",
        "",
        "Every label value is bounded: fixed vocabularies, capped names, and per-user/per-IP",
        "series only for the worst offenders. Log text comes from the internet, so no label is",
        "ever taken from it verbatim without a bound.",
        "",
        "## Contents",
        "",
        "- [HTTP endpoints](#http-endpoints)",
        "- [Cardinality bounds](#cardinality-bounds)",
        "- [Counting exactly](#counting-exactly)",
    ]
    sections: dict[str, list[FamilyDoc]] = {}
    for fam in families:
        sections.setdefault(_section_of(fam.name), []).append(fam)
    order = [t for t, _, _ in _SECTIONS] + [_PROCESS_SECTION[0], "Other"]
    intros = {t: intro for t, intro, _ in _SECTIONS} | {_PROCESS_SECTION[0]: _PROCESS_SECTION[1]}
    titles = [t for t in order if t in sections]
    for title in titles:
        out.append(f"- [{title}](#{_anchor(title)})")
    out += [
        "- [Labels](#labels)",
        "",
        "## HTTP endpoints",
        "",
        "| Endpoint | What it answers |",
        "|---|---|",
        *_endpoint_rows(run.metrics),
        "",
        "## Cardinality bounds",
        "",
        f"- **top-N**: `sipwatch_register_user_*` and `sipwatch_register_ip_*` have their own "
        f"series only for the `[metrics] top_n` worst users and source IPs (default "
        f'{cfg.top_n}, per side). Everything else is summed into `user="{OTHER}"` / '
        f'`ip="{OTHER}"`, so each family has at most top_n + 1 series per side and status. '
        "Offenders are ranked by recent failures in a fixed-size heavy-hitter table "
        "(Space-Saving; counts halve every third of the series TTL), so arrival order does "
        "not decide who gets a series and a spray of one-shot usernames neither grows memory "
        "nor churns series.",
        "- **Scanners**: a source IP the scanner classifier recognises (a scanner User-Agent, "
        "or `[diagnosis] scanner_distinct_users` usernames rejected within "
        "`scanner_window_seconds`) is counted per IP only; the per-user series of the "
        f'usernames it tried before it was recognised are withdrawn (`reason="{EVICT_SCANNER}"`).',
        f"- **TTL**: a per-user or per-IP series not seen for `[metrics] series_ttl_seconds` "
        f'(default {_num(cfg.series_ttl_seconds)} s) is removed (`reason="{EVICT_EXPIRED}"`); '
        f'one displaced by a bigger offender is removed at once (`reason="{EVICT_DEMOTED}"`).',
        "- **Fixed vocabularies**: status codes, X-Reasons, methods, outcomes, record kinds and "
        f"results map unknown values to a class (`4xx`) or to `{OTHER}` (see [Labels](#labels)).",
        "- **Capped names**: labels that come from configuration or code (sources, stages, "
        "kinds, rule ids, alert targets, actions) keep their first N distinct values; later "
        f"newcomers become `{OTHER}`.",
        f"- **Label text**: quotes, backslashes, control, zero-width and bidi characters become "
        f"`?`; user labels are cut at {m.USER_LABEL_MAX} characters, IPs at {m.IP_LABEL_MAX}, "
        f"other names at {m.NAME_LABEL_MAX}. `sipwatch_register_ip_distinct_users` counts at "
        f"most {m.DISTINCT_USERS_CAP} users per IP.",
        "- **No `*_created` series**: counters and histograms do not expose their creation "
        "timestamps (they would double the per-user series).",
    ]
    out += [
        "",
        "## Counting exactly",
        "",
        "The bundled dashboards and alert rules never read a sipwatch counter with `rate()` or "
        "`increase()`: those extrapolate (a count of 369 shows as 370.2), and they never see "
        "the first increment of a new series - a device that failed once, or a burst that "
        "arrives between two scrapes as a new label set, counts 0. They read the difference "
        "of two scraped values instead, or the whole value of a series born (or reset by a "
        "restart) inside the window:",
        "",
        "```promql",
        "# failures per user over the dashboard's time range (tables, stats)",
        "(c - last_over_time(c[1h] offset $__range) >= 0 or c)",
        "# failures per step, for bars whose legend total is the range total at any zoom",
        "(last_over_time(c[$__interval]) - last_over_time(c[1h] offset $__interval) >= 0"
        " or last_over_time(c[$__interval]))",
        "```",
        "",
        "`last_over_time()` over a range, not `c offset ...`: a failed scrape marks every "
        "series stale, and an instant selector would then find no earlier value and count a "
        "counter's whole history again. Use the same form in your own queries.",
    ]
    for title in titles:
        out += ["", f"## {title}"]
        if intros.get(title):
            out += ["", intros[title]]
        out += ["", "| Metric | Type | Labels |", "|---|---|---|"]
        fams = sorted(sections[title], key=lambda f: f.name)
        for fam in fams:
            labels = _codes(fam.labels) if fam.labels else "-"
            out.append(f"| [`{fam.name}`](#{fam.name}) | {fam.type} | {labels} |")
        for fam in fams:
            out += ["", f"### {fam.name}", "", _md(fam.help), ""]
            facts = [f"- Type: {fam.type}" + (f", unit: {fam.unit}" if fam.unit else "")]
            if fam.type == "histogram":
                facts.append(f"- Series: {_codes(fam.series)}")
                buckets = _buckets(fam.name)
                if buckets:
                    facts.append(f"- Buckets (s): {', '.join(_num(b) for b in buckets)}")
            if fam.labels:
                facts.append("- Labels: " + ", ".join(f"[`{lab}`](#{lab})" for lab in fam.labels))
                for lab in fam.labels:
                    _label_text(docs, fam.name, lab)  # fail early on an undocumented label
            used = [t for t, text in dashboards if _uses(fam, text)]
            if used:
                facts.append(f"- Dashboards: {', '.join(_md(t) for t in used)}")
            fired = [a for a, expr in alerts if _uses(fam, expr)]
            if fired:
                facts.append(f"- Alert rules: {_codes(fired)}")
            out += facts

    out += ["", "## Labels", ""]
    by_label: dict[str, list[str]] = {}
    for fam in families:
        for lab in fam.labels:
            by_label.setdefault(lab, []).append(fam.name)
    for lab in sorted(by_label):
        metrics_of = sorted(by_label[lab])
        texts: dict[str, list[str]] = {}
        for name in metrics_of:
            texts.setdefault(_label_text(docs, name, lab), []).append(name)
        out += [f"### `{lab}`", ""]
        if len(texts) == 1:
            (text,) = texts
            out += [text, "", f"Used by {_codes(metrics_of)}.", ""]
        else:
            for text, names in texts.items():
                out.append(f"- {_codes(names)}: {text}")
            out.append("")
    while out[-1] == "":
        out.pop()
    return "\n".join(out) + "\n"


def _anchor(title: str) -> str:
    """GitHub's heading anchor."""
    text = re.sub(r"[^\w\- ]", "", title.strip().lower())
    return text.replace(" ", "-")


def _num(value: float) -> str:
    """Numbers as people write them: 900, 0.005, 2.5."""
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def _buckets(name: str) -> tuple[float, ...]:
    return {
        m.REGISTER_LATENCY: m.LATENCY_BUCKETS,
        m.REGISTER_ATTEMPT_DURATION: m.ATTEMPT_BUCKETS,
    }.get(name, ())


# =============================================================================================
# Rules reference
# =============================================================================================

_FLAVOUR_NAMES = {"sidecar": "sbc-sip-sidecar", "legacy": "sbc-registrar (legacy)"}
_SEVERITY_RANK = {s: i for i, s in enumerate(SEVERITIES)}

LogOnlyVerdict = Literal["confirmed", "suspected", "no"]


@dataclass(frozen=True)
class LogOnly:
    """What a rule can say when sipwatch has only the logs (no database, no Redis)."""

    verdict: LogOnlyVerdict
    text: str


def _check_sources(name: str) -> tuple[str, ...]:
    """What a check needs, from its registration (``@check`` in diagnosis/checks.py)."""
    try:
        return CHECKS[name].needs
    except KeyError:
        raise ReferenceDocsError(f"check {name!r} is not registered") from None


def log_only(rule: Rule) -> LogOnly:
    """Mirror of the engine's decision (engine.py) with every non-log check unknown."""
    external = [c for c in rule.checks if _check_sources(c) != ("log",)]
    blocking = [c for c in external if c not in rule.unknown_ok]
    positive = bool(rule.match) or len(external) < len(rule.checks)
    legacy = (
        ' Only with `[jambonz] registrar_flavour = "legacy"`: without a database sipwatch '
        "assumes sbc-sip-sidecar."
        if "sidecar" not in rule.flavours
        else ""
    )
    if not blocking and positive:
        if external:
            return LogOnly(
                "suspected", f"Suspected from the log; {_needs_text(rule)} confirms." + legacy
            )
        if rule.max_confidence == "suspected":
            return LogOnly(
                "suspected",
                "Suspected from the log alone; its evidence is indirect, so never confirmed."
                + legacy,
            )
        return LogOnly("confirmed", "Yes: decided from the log alone." + legacy)
    if blocking and rule.suspect_when:
        return LogOnly(
            "suspected",
            "Suspected when the log shows "
            + _alternatives(rule.suspect_when)
            + f"; {_needs_text(rule)} {'confirm' if len(rule_needs(rule)) > 1 else 'confirms'}."
            + legacy,
        )
    return LogOnly("no", "No: needs " + _needs_text(rule) + ".")


def rule_needs(rule: Rule) -> list[str]:
    """External sources the rule's checks need, in a fixed order."""
    needed = {s for c in rule.checks for s in _check_sources(c) if s != "log"}
    return [s for s in ("database", "encryption secret", "webhook probe", "redis") if s in needed]


def _needs_text(rule: Rule) -> str:
    names = {"database": "the jambonz database", "redis": "Redis"}
    parts = [names.get(s, f"the {s}") for s in rule_needs(rule)]
    return " and ".join(parts) if parts else "nothing beyond the log"


def _pattern_text(p: SymptomPattern) -> str:
    """One ``match`` alternative in words: its fields must all hold."""
    parts: list[str] = []
    if p.status is not None:
        names = ["timeout" if c == 0 else str(c) for c in sorted(p.status)]
        listed = ", ".join(names[:-1]) + " or " + names[-1] if len(names) > 1 else names[0]
        parts.append("status " + listed)
    if p.x_reason is not None:
        prefixes = [_code(x) for x in p.x_reason if x]
        reasons = [f"X-Reason starting with {' or '.join(prefixes)}"] if prefixes else []
        if "" in p.x_reason:
            reasons.append("no X-Reason header")
        parts.append(" or ".join(reasons))
    if p.registrar_events is not None:
        events = " or ".join(_code(e) for e in sorted(p.registrar_events))
        parts.append(f"registrar log event {events}")
    text = " and ".join(parts)
    if p.challenged is not None:
        when = "after a 401/407 challenge" if p.challenged else "before any challenge"
        text = f"{text} {when}" if text else f"an answer {when}"
    return text


def _alternatives(patterns: Sequence[SymptomPattern]) -> str:
    texts = [_pattern_text(p) for p in patterns]
    if len(texts) == 1:
        return texts[0]
    return "either " + "; or ".join(texts)


def _rule_source(rule: Rule) -> str:
    path, _, line = rule.source.rpartition(":")
    return f"rules/{Path(path).name}:{line}"


_GROUPS: tuple[tuple[str, str, Callable[[Rule, LogOnly], bool]], ...] = (
    (
        "Decided from the logs alone",
        "These work with nothing but the drachtio and registrar logs (`sipwatch replay` "
        "without a database).",
        lambda r, lo: lo.verdict == "confirmed",
    ),
    (
        "Suspected from the logs, confirmed by the database",
        "The log points at the cause (an X-Reason, a registrar log event); with the jambonz "
        "database the cause is confirmed or ruled out.",
        lambda r, lo: lo.verdict == "suspected",
    ),
    (
        "Need the jambonz database",
        "Only the database tells these apart: jambonz answers the same 403 for all of them.",
        lambda r, lo: lo.verdict == "no" and "redis" not in rule_needs(r),
    ),
    (
        "Need the database and Redis",
        "",
        lambda r, lo: lo.verdict == "no" and "redis" in rule_needs(r),
    ),
)


def _rule_sort_key(rule: Rule) -> tuple[int, int, str]:
    return (rule.priority, _SEVERITY_RANK.get(rule.severity, 9), rule.id)


def render_rules(rules: Sequence[Rule] | None = None) -> str:
    """``docs/rules.md``."""
    if rules is None:
        rules = load_rules(default_rules_dir())
    ordered = sorted(rules, key=_rule_sort_key)
    verdicts = {r.id: log_only(r) for r in ordered}
    out = [
        "# sipwatch root-cause rules",
        "",
        "<!-- Generated by `python -m tools.reference_docs rules` from rules/*.yaml.",
        f"     Do not edit by hand; regenerate with `{REGENERATE}`. -->",
        "",
        "When a device fails to register, sipwatch builds a *symptom* from the logs (final SIP",
        "status, X-Reason, whether a 401/407 challenge came first, registrar log events, the",
        "source IP) and runs every rule in `rules/` against it and against *checks*: facts",
        "looked up in the jambonz database, Redis and the registration webhook.",
        "",
        "- A rule **fires** when nothing contradicts it (the symptom does not rule out every",
        "  `match` alternative, no check has the wrong value) and something supports it (a",
        "  matching symptom or a passing check).",
        "- A check that cannot run (no database, no secret, probes off) blocks the rule unless",
        "  the rule allows it to be unknown, or the log fully matches the rule's `suspect_when`:",
        "  the cause is then **suspected** instead of **confirmed**.",
        "- Causes are listed by **priority** (lower first), then confirmed before suspected,",
        "  then by severity. A rule can **suppress** others (a scanner is not a",
        "  misconfiguration), and **fallback** rules appear only when nothing else fired.",
        "- **Registrars**: jambonz has two REGISTER handlers. sbc-sip-sidecar (current) checks",
        "  the `clients` table or the account's registration webhook; the legacy sbc-registrar",
        "  only uses webhooks. Each rule says which it applies to (`[jambonz]",
        "  registrar_flavour`, detected automatically by default).",
        "- `sipwatch fix` commands are shown with their placeholders; sipwatch fills them with",
        "  shell-quoted values, or leaves the command out when a value is unsafe or unknown.",
        "",
        f"{len(ordered)} rules.",
        "",
        "## Contents",
        "",
        "| Priority | Rule | Severity | Registrars | Without a database | Remediation |",
        "|---:|---|---|---|---|---|",
    ]
    for r in ordered:
        out.append(
            f"| {r.priority} | [{r.id}](#{r.id}) {_md(r.title)} | {r.severity} "
            f"| {_flavours(r)} | {verdicts[r.id].verdict} "
            f"| {_code(r.remediation) if r.remediation else '-'} |"
        )
    out += [
        "",
        "Groups: " + ", ".join(f"[{t}](#{_anchor(t)})" for t, _, _ in _GROUPS) + ", and "
        "[what each check needs](#checks).",
    ]
    grouped: set[str] = set()
    for title, intro, test in _GROUPS:
        members = [r for r in ordered if test(r, verdicts[r.id])]
        if not members:
            continue
        out += ["", f"## {title}"]
        if intro:
            out += ["", intro]
        for r in members:
            grouped.add(r.id)
            out += ["", *_rule_section(r, verdicts[r.id])]
    missing = [r.id for r in ordered if r.id not in grouped]
    if missing:
        raise ReferenceDocsError(f"rules in no group: {', '.join(missing)}")
    out += [
        "",
        "## Checks",
        "",
        "The named checks rules can use (each registered with `@check` in",
        "`sipwatch/diagnosis/checks.py`) and what each needs.",
        "Without the database every check except the `log` ones is unknown.",
        "",
        "| Check | Needs | Meaning | Used by |",
        "|---|---|---|---|",
    ]
    for name in sorted(CHECKS):
        users = [r.id for r in ordered if name in r.checks]
        out.append(
            f"| `{name}` | {', '.join(_check_sources(name))} | {_md(CHECKS[name].meaning)} "
            f"| {', '.join(f'[{u}](#{u})' for u in users) or '-'} |"
        )
    return "\n".join(out) + "\n"


def _flavours(rule: Rule) -> str:
    if set(FLAVOURS) <= rule.flavours:
        return "both"
    return ", ".join(f for f in FLAVOURS if f in rule.flavours)


def _checks_text(rule: Rule) -> str:
    if not rule.checks:
        return "none"
    parts = []
    for name, expected in rule.checks.items():
        note = " (may be unknown)" if name in rule.unknown_ok else ""
        parts.append(f"{_code(name)} = {'true' if expected else 'false'}{note}")
    return "<br>".join(parts)


def _rule_section(r: Rule, lo: LogOnly) -> list[str]:
    symptom = (
        _alternatives(r.match) + (" (required: the log must show it)" if r.symptom_required else "")
        if r.match
        else "any; decided by the checks"
    )
    rows = [
        ("Severity", r.severity),
        ("Priority", str(r.priority)),
        ("Registrars", ", ".join(_FLAVOUR_NAMES[f] for f in FLAVOURS if f in r.flavours)),
        ("Symptom", symptom),
        ("Checks", _checks_text(r)),
        ("Needs", ", ".join(rule_needs(r)) or "the log only"),
        ("Without a database", lo.text),
    ]
    if r.suspect_when and lo.verdict != "suspected":
        rows.append(("Suspected when", _alternatives(r.suspect_when)))
    if r.suppresses:
        rows.append(("Suppresses", ", ".join(f"[{s}](#{s})" for s in sorted(r.suppresses))))
    if r.fallback:
        rows.append(("Fallback", "yes: listed only when no other cause fired"))
    if r.max_confidence == "suspected":
        rows.append(("Confidence", "at most suspected: the evidence is indirect"))
    rows.append(("Remediation", _code(r.remediation) if r.remediation else "none"))
    rows.append(("Defined in", _code(_rule_source(r))))
    out = [f"### {r.id}", "", f"**{_md(r.title)}**", "", "| | |", "|---|---|"]
    out += [f"| {k} | {v} |" for k, v in rows]
    out += ["", f"> {_template_md(r.summary)}"]
    if r.summary_suspected:
        out += ["", f"When only suspected: {_template_md(r.summary_suspected)}"]
    out += ["", "Fix:", ""]
    out += [f"{i}. {_template_md(step)}" for i, step in enumerate(r.fix_steps, 1)]
    if r.fix_command:
        out += ["", "```sh", r.fix_command, "```"]
    if r.examples:
        out += ["", "Examples (golden cases, checked by the tests):", ""]
        out += [f"- {_example_text(ex)}" for ex in r.examples]
    return out


def _example_text(ex: RuleExample) -> str:
    """One golden case in words: the symptom, the stubbed checks, the causes in order."""
    s = ex.symptom
    parts: list[str] = []
    if s.status is not None:
        parts.append("timeout" if s.status == 0 else f"status {s.status}")
    if s.x_reason is not None:
        parts.append(f"X-Reason {_code(s.x_reason)}" if s.x_reason else "no X-Reason")
    if s.challenged is not None:
        parts.append("after a challenge" if s.challenged else "before any challenge")
    if s.registrar_events:
        parts.append(
            "registrar event " + " and ".join(_code(e) for e in sorted(s.registrar_events))
        )
    for name, value in (
        ("domain", s.domain if s.domain != EXAMPLE_DOMAIN else None),
        ("Request-URI host", s.request_uri_host),
        ("User-Agent", s.user_agent),
        ("Authorization user", s.auth_username),
    ):
        if value:
            parts.append(f"{name} {_code(value)}")
    if s.distinct_users_from_ip:
        parts.append(f"{s.distinct_users_from_ip} usernames from the IP")
    if ex.flavour != "sidecar":
        parts.append(f"registrar {ex.flavour}")
    facts = ", ".join(
        f"{_code(n)} = {'unknown' if v is None else str(v).lower()}" for n, v in ex.facts.items()
    )
    symptom = "; ".join(parts) or "no symptom from the log"
    causes = ", then ".join(f"[{c}](#{c})" for c in ex.expect) or "no cause"
    return f"{symptom}{'; ' + facts if facts else ''} → {causes}"


# =============================================================================================
# Overview picture (SVG)
# =============================================================================================

# Grafana's dark theme.
_BG = "#111217"
_PANEL = "#181b1f"
_BORDER = "#2c3235"
_TEXT = "#ccccdc"
_MUTED = "#8e8e9a"
_GRID = "#25282d"
_HEADER = "#22252b"
_COLORS = {
    "green": "#73bf69",
    "red": "#f2495c",
    "orange": "#ff9830",
    "yellow": "#fade2a",
    "blue": "#5794f2",
    "purple": "#b877d9",
    "text": _TEXT,
}
_SEVERITY_COLORS = {
    "critical": _COLORS["red"],
    "error": _COLORS["orange"],
    "warning": _COLORS["yellow"],
    "info": _COLORS["blue"],
}
_FONT = "Inter, 'Helvetica Neue', Helvetica, Arial, sans-serif"
_WIDTH = 1280
_MARGIN = 16
_GAP = 8
_TABLE_ROWS = 20  # the dashboard's topk(20)
# XML 1.0 allows neither control characters nor lone surrogates.
_XML_INVALID = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\ud800-\udfff\ufffe\uffff]")


def _xml_text(text: str) -> str:
    return xml_escape(_XML_INVALID.sub("?", text))


def _fit(text: str, width: float, size: float) -> str:
    """Cut ``text`` to what fits in ``width`` px at ``size`` (average glyph ~0.58 em)."""
    limit = max(1, int(width / (size * 0.58)))
    return text if len(text) <= limit else text[: limit - 1] + "\u2026"


class _Svg:
    """A tiny SVG writer; every text goes through XML escaping."""

    def __init__(self, width: int) -> None:
        self.width = width
        self.parts: list[str] = []

    def rect(
        self,
        x: float,
        y: float,
        w: float,
        h: float,
        fill: str,
        *,
        stroke: str | None = None,
        rx: float = 0,
    ) -> None:
        extra = f' stroke="{stroke}"' if stroke else ""
        extra += f' rx="{_n(rx)}"' if rx else ""
        self.parts.append(
            f'<rect x="{_n(x)}" y="{_n(y)}" width="{_n(w)}" height="{_n(h)}" fill="{fill}"{extra}/>'
        )

    def line(self, x1: float, y1: float, x2: float, y2: float, stroke: str) -> None:
        self.parts.append(
            f'<line x1="{_n(x1)}" y1="{_n(y1)}" x2="{_n(x2)}" y2="{_n(y2)}" stroke="{stroke}"/>'
        )

    def circle(self, cx: float, cy: float, r: float, fill: str) -> None:
        self.parts.append(f'<circle cx="{_n(cx)}" cy="{_n(cy)}" r="{_n(r)}" fill="{fill}"/>')

    def text(
        self,
        x: float,
        y: float,
        text: str,
        *,
        size: float = 12,
        fill: str = _TEXT,
        weight: int = 400,
        anchor: str = "start",
        width: float | None = None,
    ) -> None:
        if width is not None:
            text = _fit(text, width, size)
        attrs = f'x="{_n(x)}" y="{_n(y)}" font-size="{_n(size)}" fill="{fill}"'
        if weight != 400:
            attrs += f' font-weight="{weight}"'
        if anchor != "start":
            attrs += f' text-anchor="{anchor}"'
        self.parts.append(f"<text {attrs}>{_xml_text(text)}</text>")

    def runs(self, x: float, y: float, runs: Sequence[tuple[str, str, float, int, float]]) -> None:
        """One line of differently styled pieces (text, fill, size, weight, gap before it in
        px) that flow on; the gap is a ``dx`` because SVG collapses leading spaces."""
        spans = []
        for text, fill, size, weight, gap in runs:
            extra = f' font-weight="{weight}"' if weight != 400 else ""
            extra += f' dx="{_n(gap)}"' if gap else ""
            spans.append(
                f'<tspan fill="{fill}" font-size="{_n(size)}"{extra}>{_xml_text(text)}</tspan>'
            )
        self.parts.append(f'<text x="{_n(x)}" y="{_n(y)}">{"".join(spans)}</text>')

    def render(self, height: float, title: str, description: str) -> str:
        head = (
            '<svg xmlns="http://www.w3.org/2000/svg" '
            f'width="{self.width}" height="{_n(height)}" viewBox="0 0 {self.width} {_n(height)}" '
            f'role="img" aria-label="{_xml_text(title)}" font-family="{_FONT}">'
        )
        return (
            "\n".join(
                [
                    head,
                    f"<title>{_xml_text(title)}</title>",
                    f"<desc>{_xml_text(description)}</desc>",
                    f'<rect width="100%" height="100%" fill="{_BG}"/>',
                    *self.parts,
                    "</svg>",
                ]
            )
            + "\n"
        )


def _n(value: float) -> str:
    """Coordinates with at most one decimal, no trailing zeros."""
    text = f"{value:.1f}"
    return text[:-2] if text.endswith(".0") else text


def _panel(svg: _Svg, x: float, y: float, w: float, h: float, title: str) -> None:
    svg.rect(x, y, w, h, _PANEL, stroke=_BORDER, rx=3)
    svg.text(x + 10, y + 21, title, size=13, weight=500, width=w - 20)


def _row_title(svg: _Svg, y: float, title: str) -> None:
    svg.text(_MARGIN, y, "\u25be " + title, size=14, weight=500)


@dataclass(frozen=True)
class _Stat:
    title: str
    value: str
    color: str
    note: str


def _threshold_color(dashboard: Mapping[str, Any], title: str, value: float, default: str) -> str:
    """The colour Grafana would give ``value`` with the stat panel's thresholds."""
    for panel in dashboard.get("panels", []):
        if panel.get("title") != title:
            continue
        steps = panel.get("fieldConfig", {}).get("defaults", {}).get("thresholds", {})
        color = default
        for step in steps.get("steps", []):
            limit = step.get("value")
            if limit is None or value >= float(limit):
                color = str(step.get("color", default))
        return _COLORS.get(color, color if color.startswith("#") else _TEXT)
    return _COLORS.get(default, default)


def _status_color(status: str) -> str:
    if status == m.STATUS_TIMEOUT:
        return _COLORS["purple"]
    if status.startswith("2"):
        return _COLORS["green"]
    if status in ("401", "407"):
        return _COLORS["blue"]
    if status.startswith("5") or status.startswith("6"):
        return _COLORS["orange"]
    return _COLORS["red"]


def _nice_max(value: float) -> tuple[float, float]:
    """(axis maximum, tick step) with at most 5 ticks of 1/2/5 x 10^k."""
    if value <= 0:
        return 1.0, 1.0
    raw = value / 4
    exp = 10 ** math.floor(math.log10(raw))
    step = next(s * exp for s in (1, 2, 5, 10) if s * exp >= raw)
    return math.ceil(value / step) * step, step


def _top_cause(causes: CauseMap, record: FailureRecord) -> Mapping[str, Any] | None:
    found = causes.get(record_key(record)) or []
    return found[0] if found else None


def _time_range(res: ReplayResult) -> str:
    if not res.first_ts:
        return "no timestamps"
    first = datetime.fromtimestamp(res.first_ts, UTC)
    last = datetime.fromtimestamp(res.last_ts, UTC)
    end = last.strftime("%H:%M:%S") if last.date() == first.date() else last.strftime("%F %T")
    return f"{first.strftime('%Y-%m-%d %H:%M:%S')} to {end} UTC"


def render_overview_svg(run: ExampleRun | None = None, root: Path = ROOT) -> str:
    """``docs/overview.svg``: the overview dashboard for the bundled example."""
    if run is None:
        run = run_example(root)
    res, metrics, causes = run.result, run.metrics, run.causes
    dash_path = root / OVERVIEW_DASHBOARD
    dashboard: dict[str, Any] = (
        json.loads(dash_path.read_text(encoding="utf-8")) if dash_path.is_file() else {}
    )
    title = str(dashboard.get("title") or "sipwatch / REGISTER overview")

    sip_messages = _sum(metrics, m.SIP_MESSAGES)
    attempts = _sum(metrics, m.REGISTER_ATTEMPTS)
    success = _sum(metrics, m.REGISTER_ATTEMPTS, outcome=AttemptOutcome.SUCCESS.value)
    challenged = _sum(metrics, m.REGISTER_ATTEMPTS, challenged="true")
    failing_users = sum(1 for _, v in _samples(metrics, m.USER_FAILING) if v == 1)
    records = [r for r in res.failure_records() if r.side == Side.INBOUND.value]
    scanner_ips = sorted(
        {
            r.source_ip
            for r in records
            if (c := _top_cause(causes, r)) is not None and c.get("id") == "scanner"
        }
    )
    rate = success / attempts if attempts else 0.0
    challenge_ratio = challenged / attempts if attempts else 0.0
    stats = [
        _Stat("SIP messages", f"{sip_messages:.0f}", _COLORS["blue"], "recv + send dumps"),
        _Stat(
            "REGISTER attempts",
            f"{attempts:.0f}",
            _threshold_color(dashboard, "Attempts in range", attempts, "green"),
            f"{res.register_by_status.total()} transactions",
        ),
        _Stat(
            "REGISTER success rate",
            f"{rate * 100:.1f}%",
            _threshold_color(dashboard, "REGISTER success rate", rate, "red"),
            f"{success:.0f} of {attempts:.0f} attempts",
        ),
        _Stat(
            "Challenge ratio",
            f"{challenge_ratio * 100:.1f}%",
            _threshold_color(dashboard, "Challenge ratio", challenge_ratio, "green"),
            "challenged first",
        ),
        _Stat(
            "Failing users",
            str(failing_users),
            _threshold_color(dashboard, "Failing users", failing_users, "green"),
            "latest attempt failed",
        ),
        _Stat(
            "Scanner IPs",
            str(len(scanner_ips)),
            _COLORS["orange"] if scanner_ips else _COLORS["green"],
            ", ".join(scanner_ips) or "none",
        ),
    ]

    svg = _Svg(_WIDTH)
    inner = _WIDTH - 2 * _MARGIN
    # ---- title bar
    svg.rect(0, 0, _WIDTH, 52, _PANEL)
    svg.line(0, 52, _WIDTH, 52, _BORDER)
    for i in range(4):
        svg.rect(_MARGIN + (i % 2) * 9, 17 + (i // 2) * 9, 7, 7, _COLORS["orange"], rx=1)
    svg.runs(
        _MARGIN + 28,
        32,
        [("Dashboards /", _MUTED, 15, 400, 0), (_fit(title, 560, 15), _TEXT, 15, 600, 5)],
    )
    pill = "\u25f7 " + _time_range(res)
    pill_w = len(pill) * 7.0 + 24
    svg.rect(_WIDTH - _MARGIN - pill_w, 12, pill_w, 28, _BG, stroke=_BORDER, rx=3)
    svg.text(_WIDTH - _MARGIN - pill_w / 2, 31, pill, size=12.5, anchor="middle")
    inputs = " + ".join(run.inputs)
    svg.text(
        _WIDTH - _MARGIN - pill_w - 12,
        31,
        f"replay of {inputs}",
        size=12,
        fill=_MUTED,
        anchor="end",
    )

    # ---- stat panels
    y = 76
    _row_title(svg, y, "Registrations")
    y += 12
    stat_w = (inner - _GAP * (len(stats) - 1)) / len(stats)
    stat_h = 112
    for i, st in enumerate(stats):
        x = _MARGIN + i * (stat_w + _GAP)
        _panel(svg, x, y, stat_w, stat_h, st.title)
        svg.text(
            x + stat_w / 2, y + 72, st.value, size=38, weight=600, fill=st.color, anchor="middle"
        )
        svg.text(
            x + stat_w / 2,
            y + 98,
            st.note,
            size=11,
            fill=_MUTED,
            anchor="middle",
            width=stat_w - 16,
        )
    y += stat_h + 28

    # ---- charts
    _row_title(svg, y, "Failures")
    y += 12
    chart_h = 250
    half = (inner - _GAP) / 2
    statuses = sorted(res.register_by_status.items(), key=lambda kv: status_sort_key(kv[0]))
    _bar_chart(svg, _MARGIN, y, half, chart_h, "REGISTER transactions by final status", statuses)
    reasons: Counter[str] = Counter()
    for labels, value in _samples(metrics, m.REGISTER_ATTEMPTS):
        if labels.get("outcome") != AttemptOutcome.SUCCESS.value and value:
            reasons[labels.get("x_reason", OTHER)] += int(value)
    _hbar_chart(
        svg,
        _MARGIN + half + _GAP,
        y,
        half,
        chart_h,
        "Failed attempts by X-Reason",
        sorted(reasons.items(), key=lambda kv: (-kv[1], kv[0])),
    )
    y += chart_h + 28

    # ---- table
    _row_title(svg, y, "Top offenders")
    y += 12
    rows = records[:_TABLE_ROWS]
    row_h = 27
    table_h = 36 + row_h * (len(rows) + 1) + 10
    _panel(svg, _MARGIN, y, inner, table_h, "Top failing users, with the likely cause")
    columns = (
        ("user", 260.0, "start"),
        ("source IP", 130.0, "start"),
        ("status", 70.0, "start"),
        ("X-Reason", 210.0, "start"),
        ("failures", 70.0, "end"),
        ("likely cause (log only)", 0.0, "start"),
    )
    col_x: list[float] = []
    cx = float(_MARGIN + 12)
    for _, w, _ in columns:
        col_x.append(cx)
        cx += w + 16
    last_w = _MARGIN + inner - 12 - col_x[-1]
    ty = y + 36
    svg.rect(_MARGIN + 1, ty, inner - 2, row_h, _HEADER)
    for (name, w, anchor), x in zip(columns, col_x, strict=True):
        tx = x + w if anchor == "end" else x
        svg.text(tx, ty + 18, name, size=12.5, weight=500, fill=_COLORS["blue"], anchor=anchor)
    for i, r in enumerate(rows):
        ry = ty + row_h * (i + 1)
        svg.line(_MARGIN + 1, ry + row_h, _MARGIN + inner - 1, ry + row_h, _BORDER)
        status = str(r.status)
        cells = (
            (r.who, _TEXT),
            (r.source_ip or "-", _TEXT),
            (status, _status_color(m.status_label(r.status))),
            (r.x_reason or ("(challenged)" if r.challenged else "-"), _TEXT),
            (str(r.count), _TEXT),
        )
        for (text, color), (_, w, anchor), x in zip(cells, columns, col_x, strict=False):
            tx = x + w if anchor == "end" else x
            svg.text(tx, ry + 18, text, size=12.5, fill=color, anchor=anchor, width=w)
        cause = _top_cause(causes, r)
        x = col_x[-1]
        if cause is None:
            svg.text(x, ry + 18, "- not determined from the log alone", size=12.5, fill=_MUTED)
            continue
        severity = str(cause.get("severity", ""))
        svg.circle(x + 5, ry + 14, 4.5, _SEVERITY_COLORS.get(severity, _MUTED))
        cid = _fit(str(cause.get("id", "")), last_w - 170, 12.5)
        detail = f"{severity}, {cause.get('confidence', '')}"
        svg.runs(x + 16, ry + 18, [(cid, _TEXT, 12.5, 500, 0), (detail, _MUTED, 11.5, 400, 10)])
    y += table_h + 16
    svg.text(
        _MARGIN,
        y + 4,
        "Rendered by python -m tools.reference_docs overview-svg from the bundled example: "
        f"sipwatch replay {' '.join(run.inputs)}; causes from the rules without a database.",
        size=11,
        fill=_MUTED,
    )
    height = y + 20
    description = (
        f"{title}: {sip_messages:.0f} SIP messages, REGISTER success rate {rate * 100:.1f}%, "
        f"{failing_users} failing users, {len(scanner_ips)} scanner IPs."
    )
    return svg.render(height, title, description)


def _bar_chart(
    svg: _Svg,
    x: float,
    y: float,
    w: float,
    h: float,
    title: str,
    data: Sequence[tuple[str, int]],
) -> None:
    """Vertical bars, one per status, with a value axis like Grafana's bar chart."""
    _panel(svg, x, y, w, h, title)
    left, right, top, bottom = x + 44, x + w - 16, y + 44, y + h - 34
    top_value, step = _nice_max(max((v for _, v in data), default=0))
    ticks = round(top_value / step)
    for t in range(ticks + 1):
        value = t * step
        ty = bottom - (bottom - top) * value / top_value
        svg.line(left, ty, right, ty, _GRID)
        svg.text(left - 8, ty + 4, _num(value), size=11, fill=_MUTED, anchor="end")
    if not data:
        return
    slot = (right - left) / len(data)
    bar_w = min(64.0, slot * 0.6)
    for i, (label, value) in enumerate(data):
        cx = left + slot * (i + 0.5)
        bh = (bottom - top) * value / top_value
        color = _status_color(label)
        svg.rect(cx - bar_w / 2, bottom - bh, bar_w, bh, color, rx=1)
        svg.text(cx, bottom - bh - 6, str(value), size=12, weight=600, anchor="middle")
        svg.text(cx, bottom + 18, label, size=12, fill=_TEXT, anchor="middle", width=slot)


def _hbar_chart(
    svg: _Svg,
    x: float,
    y: float,
    w: float,
    h: float,
    title: str,
    data: Sequence[tuple[str, int]],
) -> None:
    """Horizontal bars: one per X-Reason id, longest first."""
    _panel(svg, x, y, w, h, title)
    label_w = 170.0
    left, right, top, bottom = x + 14 + label_w, x + w - 44, y + 44, y + h - 20
    if not data:
        svg.text(x + w / 2, y + h / 2, "no failures", fill=_MUTED, anchor="middle")
        return
    top_value = max(v for _, v in data)
    slot = min(36.0, (bottom - top) / len(data))
    bar_h = slot * 0.62
    palette = [_COLORS[c] for c in ("red", "orange", "yellow", "purple", "blue", "green")]
    for i, (label, value) in enumerate(data):
        cy = top + slot * (i + 0.5)
        bw = (right - left) * value / top_value
        color = _MUTED if label == m.X_REASON_NONE else palette[i % len(palette)]
        svg.text(left - 10, cy + 4, label, size=12, anchor="end", width=label_w)
        svg.rect(left, cy - bar_h / 2, bw, bar_h, color, rx=1)
        svg.text(left + bw + 6, cy + 4, str(value), size=12, weight=600)


# =============================================================================================
# Command line
# =============================================================================================


def render(name: str, root: Path = ROOT) -> str:
    """One document by name (``metrics``, ``rules`` or ``overview-svg``)."""
    if name == "metrics":
        return render_metrics(root=root)
    if name == "rules":
        return render_rules()
    if name == "overview-svg":
        return render_overview_svg(root=root)
    raise ValueError(f"unknown document {name!r}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tools.reference_docs",
        description="Print the metrics reference, the rules reference (Markdown) or the "
        "overview picture (SVG) generated from the code and the bundled example.",
        epilog=f"Regenerate everything in docs/ with: {REGENERATE}",
    )
    parser.add_argument("document", nargs="?", choices=sorted(DOCUMENTS), help="what to print")
    parser.add_argument(
        "--write",
        action="store_true",
        help="write the document (all of them when none is named) into docs/ instead",
    )
    args = parser.parse_args(argv)
    if not args.write and args.document is None:
        parser.error("name a document, or pass --write")
    try:
        if args.write:
            for name in [args.document] if args.document else sorted(DOCUMENTS):
                path = ROOT / DOCUMENTS[name]
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(render(name), encoding="utf-8", newline="\n")
                print(f"wrote {DOCUMENTS[name]}", file=sys.stderr)
        else:
            sys.stdout.write(render(args.document))
    except ReferenceDocsError as exc:
        print(f"tools.reference_docs: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
