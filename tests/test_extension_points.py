"""The extension points of docs/architecture.md, each done once the way a newcomer would.

A copy of the package gets exactly the edits the document names - a new rule file, a new
``@check``, a new source module plus its ``SourceKind`` line, a new metric name plus its family
in the stage collector, a new remediation action in the catalog plus its ``@implements`` class
- and a fresh interpreter then uses them through the public entry points (rule loader and
engine, ``build_sources`` and the pipeline, the ``/metrics`` exposition, ``sipwatch fix
--help``).  If the document's "touch these files" stops being true, this fails.
"""

from __future__ import annotations

import shutil
import textwrap
from pathlib import Path

from tests.cli_support import ROOT, run_cli, run_python

CHECK = '''

@check("user_is_test_account", source="log", evidence=("user",))
def user_is_test_account(g: Gathered) -> Verdict:
    """the username is one of the test accounts (test-...)"""
    return g.symptom.user.startswith("test-")
'''

RULE = """
id: test_account_rejected
title: A test account was rejected
severity: info
priority: 50
checks:
  user_is_test_account: true
remediation: demo_note
summary: >-
  '{user}@{domain}' is a test account; its rejection is expected.
fix:
  steps:
    - Nothing to do in production.
  command: null
examples:
  - symptom: {user: test-7, domain: acme.example.com, status: 403}
    facts: {user_is_test_account: true}
    expect: [test_account_rejected]
  - symptom: {user: alice, domain: acme.example.com, status: 403, x_reason: Invalid credentials, challenged: true}
    facts: {user_is_test_account: false}
    expect: [credentials_rejected]
"""

SOURCE = '''
"""A source that replays a fixed text (an example of a source kind)."""

from __future__ import annotations

from collections.abc import AsyncIterator

from sipwatch.model import LogChunk, SourceItem, Stream
from sipwatch.sources import LogSource, SourceContext

TEXT = ""  # set by the test


class FixedText:
    finite = True

    async def chunks(self) -> AsyncIterator[SourceItem]:
        yield LogChunk("fixed", Stream.TEXT, TEXT)
        yield LogChunk("fixed", Stream.TEXT, "")


def build(ctx: SourceContext) -> list[tuple[str, LogSource]]:
    return [("fixed", FixedText())]
'''

SOURCE_KIND = '    SourceKind("fixed", "sipwatch.sources.fixed", lambda c: c.sources.stdin),\n)'

METRIC_NAME = 'REGISTER_ACCEPTED: Final = "sipwatch_register_accepted_total"\n'

METRIC_FAMILY = """
        self.accepted = CounterVec(
            names.REGISTER_ACCEPTED, "REGISTER transactions answered 2xx.", ["source", "side"]
        )
"""

METRIC_FEED = """
        if 200 <= tx.status < 300:
            self.accepted.inc((source, side))
"""

DECLARE = """
DEMO_NOTE = declare("demo_note", needs="database", summary="an example action that changes nothing")
"""

IMPLEMENT = """

@implements(catalog.DEMO_NOTE)
class DemoNote(Action):
    async def plan(self, b: Backends, t: Target, *, password: Secret | None = None) -> Change:
        return self._change(PlanState.NOOP, f"nothing to change for {t.user}")

    async def apply(self, b: Backends, t: Target, *, password: Secret | None = None) -> Outcome:
        change = await self.plan(b, t)
        return Outcome(change=change, applied=False, verified=True, detail="nothing to do")
"""

CHECK_SCRIPT = """
import asyncio, sys
from pathlib import Path
from sipwatch.diagnosis.rules import load_rules
from sipwatch.diagnosis.checks import CHECKS
from sipwatch.diagnosis.engine import DiagnosisEngine
from sipwatch.diagnosis.facts import Facts
from sipwatch.remediation import actions
from sipwatch.sources import SOURCE_KINDS, SourceContext, build_sources
from sipwatch.sources import fixed
from sipwatch.config import parse_config
from sipwatch.pipeline.core import Pipeline, PipelineSettings

assert "user_is_test_account" in CHECKS
rules = load_rules(Path(sys.argv[1]))
assert "test_account_rejected" in {r.id for r in rules}
engine = DiagnosisEngine(rules, db=None, redis=None, secret=None)
rule = next(r for r in rules if r.id == "test_account_rejected")
for ex in rule.examples:  # the golden cases, as tests/test_rule_examples.py runs them
    got = [c.id for c in engine.evaluate(ex.symptom, Facts(values=dict(ex.facts), flavour=ex.flavour))]
    assert got == list(ex.expect), (got, ex.expect)
# and the real thing: the engine decides the new check itself
from sipwatch.diagnosis.symptom import Symptom
found = asyncio.run(engine.diagnose(Symptom(user="test-7", domain="acme.example.com", status=403)))
assert found.causes[0].id == "test_account_rejected", found.causes
other = asyncio.run(engine.diagnose(Symptom(user="bob", domain="acme.example.com", status=403)))
assert "test_account_rejected" not in [c.id for c in other.causes]
assert actions.get_action("demo_note").id == "demo_note"

fixed.TEXT = Path(sys.argv[2]).read_text()
config = parse_config("[sources]\\nstdin = true\\n[sources.docker]\\nenabled = false\\n")
sources = [s for name, s in build_sources(SourceContext(config=config, on_status=lambda n, u: None)) if name == "fixed"]
from sipwatch.metrics import SipwatchMetrics, render_text
metrics = SipwatchMetrics()
pipeline = Pipeline(PipelineSettings(), observers=[metrics])

async def drain():
    async for item in sources[0].chunks():
        pipeline.feed(item)

asyncio.run(drain())
pipeline.finish()
accepted = [l for l in render_text(metrics.registry).splitlines() if l.startswith("sipwatch_register_accepted_total{")]
print(accepted)
print(len(pipeline.failures.records()), pipeline.parser.stats.records.get("sip", 0))
"""


def test_each_extension_point_needs_only_the_files_the_document_names(tmp_path: Path) -> None:
    package = tmp_path / "sipwatch"
    shutil.copytree(ROOT / "sipwatch", package, ignore=shutil.ignore_patterns("__pycache__"))
    rules = tmp_path / "rules"
    shutil.copytree(ROOT / "rules", rules)

    # add a check: one decorated function in diagnosis/checks.py
    with (package / "diagnosis" / "checks.py").open("a") as f:
        f.write(CHECK)
    # add a rule: one YAML file with its examples
    (rules / "test_account.yaml").write_text(textwrap.dedent(RULE).lstrip())
    # add a source: a module with build(), and one SourceKind line
    (package / "sources" / "fixed.py").write_text(SOURCE)
    init = package / "sources" / "__init__.py"
    text = init.read_text()
    assert text.count("\n)\n\n\ndef build_sources") == 1
    init.write_text(
        text.replace("\n)\n\n\ndef build_sources", "\n" + SOURCE_KIND + "\n\n\ndef build_sources")
    )
    # add a metric: its name in metrics/names.py, its family in the stage's collector
    names = package / "metrics" / "names.py"
    names.write_text(names.read_text() + METRIC_NAME)
    register = package / "metrics" / "register.py"
    text = register.read_text()
    created = "        self.set_inflight(0, 0)\n"
    fed = "            self.latency.observe((source, side, latency_result(tx.status)), latency)\n"
    collected = "        yield self.scanner.family()\n"
    assert text.count(created) == text.count(fed) == text.count(collected) == 1
    text = text.replace(created, METRIC_FAMILY.lstrip("\n") + created)
    text = text.replace(fed, fed + METRIC_FEED.lstrip("\n"))
    text = text.replace(collected, collected + "        yield self.accepted.family()\n")
    register.write_text(
        text.replace(
            "                self.scanner,\n",
            "                self.scanner,\n                self.accepted,\n",
        )
    )
    # add a remediation action: declared in the catalog, implemented with @implements
    catalog = package / "remediation" / "catalog.py"
    text = catalog.read_text()
    marker = "\n#: Every declared action id"
    catalog.write_text(text.replace(marker, DECLARE + marker, 1))
    actions = package / "remediation" / "actions.py"
    text = actions.read_text()
    marker = "\n# " + "-" * 75 + " completeness\n"
    assert text.count(marker) == 1  # implementations go above the completeness check
    actions.write_text(text.replace(marker, IMPLEMENT + "\n" + marker))

    env = {"PYTHONPATH": str(tmp_path), "PATH": "/usr/bin:/bin"}
    proc = run_python(
        "-c",
        CHECK_SCRIPT,
        str(rules),
        str(ROOT / "examples" / "drachtio-sbc.log"),
        env=env,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    *_, exposed, counts = proc.stdout.splitlines()
    groups, sip = (int(x) for x in counts.split())
    assert sip == 62 and groups == 8  # the bundled example, read through the new source
    # the new metric, fed by the pipeline: the example's three 200 OK transactions
    assert exposed == str(['sipwatch_register_accepted_total{side="inbound",source="fixed"} 3.0'])
    help_text = run_cli("fix", "--help", env=env, cwd=tmp_path, timeout=60, check=True).stdout
    assert "demo_note" in help_text  # the CLI offers the new action: declared once
