"""Check the rendered Kubernetes manifests (`kubectl kustomize deploy/kubernetes`).

    python .ci/k8s_check.py rendered.yaml

* every built-in kind validates, strictly (unknown fields are errors), against the official
  OpenAPI schemas of the oldest and the newest Kubernetes release that kubernetes-validate
  ships (offline: the schemas are inside the wheel);
* ServiceMonitor and PrometheusRule are prometheus-operator CRDs, whose schemas no PyPI
  package ships and which cannot be fetched here: they are checked against the structural
  schema below, which covers every field the base uses and rejects unknown ones (a typo
  such as ``endpoint:`` fails); the rules inside the PrometheusRule are checked by the tests
  to be exactly ``prometheus/sipwatch-alerts.yml``, which promtool checks;
* project policy: non-root, read-only root file system, no privilege escalation, all
  capabilities dropped, resources, probes on /healthz and /readyz, one namespace, and RBAC
  that is exactly get/list/watch on pods and get on pods/log in a Role (never a ClusterRole).

Exit status 0 when everything passes, 1 otherwise (all problems printed).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import yaml
from kubernetes_validate.utils import all_versions

# The RBAC the Kubernetes source needs, and all it may have: (apiGroup, resource) -> verbs.
EXPECTED_RBAC = {("", "pods"): {"get", "list", "watch"}, ("", "pods/log"): {"get"}}
CRD_KINDS = {"ServiceMonitor", "PrometheusRule"}

_STR = {"type": "string"}
_LABELS = {"type": "object", "additionalProperties": _STR}
_METADATA = {
    "type": "object",
    "required": ["name"],
    "properties": {
        "name": _STR,
        "namespace": _STR,
        "labels": _LABELS,
        "annotations": _LABELS,
    },
    "additionalProperties": False,
}
_DURATION = {"type": "string", "pattern": r"^(\d+(ms|s|m|h|d|w|y))+$"}


def _object(required: list[str], properties: dict[str, Any]) -> dict[str, Any]:
    """A JSON-schema object with exactly these properties."""
    return {
        "type": "object",
        "required": required,
        "properties": properties,
        "additionalProperties": False,
    }


def _crd(kind: str, spec: dict[str, Any]) -> dict[str, Any]:
    """A prometheus-operator custom resource of ``kind`` with ``spec``."""
    return _object(
        ["apiVersion", "kind", "metadata", "spec"],
        {
            "apiVersion": {"const": "monitoring.coreos.com/v1"},
            "kind": {"const": kind},
            "metadata": _METADATA,
            "spec": spec,
        },
    )


_RULE = _object(
    ["expr"],
    {
        "alert": _STR,
        "record": _STR,
        "expr": _STR,
        "for": _DURATION,
        "labels": _LABELS,
        "annotations": _LABELS,
    },
) | {"oneOf": [{"required": ["alert"]}, {"required": ["record"]}]}

CRD_SCHEMAS: dict[str, dict[str, Any]] = {
    "ServiceMonitor": _crd(
        "ServiceMonitor",
        _object(
            ["selector", "endpoints"],
            {
                "selector": {
                    "type": "object",
                    "properties": {"matchLabels": _LABELS},
                    "additionalProperties": False,
                },
                "endpoints": {
                    "type": "array",
                    "minItems": 1,
                    "items": _object(
                        ["port"],
                        {
                            "port": _STR,
                            "path": _STR,
                            "interval": _DURATION,
                            "scrapeTimeout": _DURATION,
                        },
                    ),
                },
            },
        ),
    ),
    "PrometheusRule": _crd(
        "PrometheusRule",
        _object(
            ["groups"],
            {
                "groups": {
                    "type": "array",
                    "minItems": 1,
                    "items": _object(
                        ["name", "rules"],
                        {
                            "name": _STR,
                            "interval": _DURATION,
                            "rules": {"type": "array", "items": _RULE},
                        },
                    ),
                }
            },
        ),
    ),
}


def load(path: str) -> list[dict[str, Any]]:
    docs = [d for d in yaml.safe_load_all(Path(path).read_text(encoding="utf-8")) if d]
    return [d for d in docs if isinstance(d, dict)]


def schema_problems(docs: list[dict[str, Any]]) -> list[str]:
    versions = all_versions()
    problems = []
    for doc in docs:
        kind = doc.get("kind", "?")
        name = f"{kind}/{(doc.get('metadata') or {}).get('name', '?')}"
        if kind in CRD_KINDS:
            validator = jsonschema.Draft7Validator(CRD_SCHEMAS[kind])
            for error in validator.iter_errors(doc):
                where = "/".join(str(p) for p in error.absolute_path)
                problems.append(f"{name}: {where}: {error.message}")
            continue
        for version in (versions[0], versions[-1]):
            try:
                kubernetes_validate.validate(doc, version, strict=True)
            except kubernetes_validate.SchemaNotFoundError:
                problems.append(f"{name}: no Kubernetes {version} schema for {kind}")
            except kubernetes_validate.ValidationError as exc:
                first = str(exc).splitlines()[0]
                problems.append(f"{name}: Kubernetes {version} schema: {first}")
    return problems


def rbac_problems(docs: list[dict[str, Any]]) -> list[str]:
    problems = []
    for doc in docs:
        if doc.get("kind") in ("ClusterRole", "ClusterRoleBinding"):
            problems.append(f"{doc['kind']}: sipwatch must not have cluster-wide rights")
    roles = [d for d in docs if d.get("kind") == "Role"]
    if len(roles) != 1:
        return [*problems, f"expected exactly one Role, found {len(roles)}"]
    granted: dict[tuple[str, str], set[str]] = {}
    for rule in roles[0].get("rules") or []:
        if rule.get("resourceNames") or rule.get("nonResourceURLs"):
            problems.append("Role: resourceNames/nonResourceURLs are not expected")
        for group in rule.get("apiGroups") or []:
            for resource in rule.get("resources") or []:
                granted.setdefault((group, resource), set()).update(rule.get("verbs") or [])
    if granted != EXPECTED_RBAC:
        extra = {k: sorted(v - EXPECTED_RBAC.get(k, set())) for k, v in granted.items()}
        extra = {k: v for k, v in extra.items() if v}
        missing = {k: sorted(v - granted.get(k, set())) for k, v in EXPECTED_RBAC.items()}
        missing = {k: v for k, v in missing.items() if v}
        problems.append(
            f"Role: RBAC is not minimal: extra {extra or 'none'}, missing {missing or 'none'}"
        )
    role_name = roles[0]["metadata"]["name"]
    bindings = [d for d in docs if d.get("kind") == "RoleBinding"]
    sas = {d["metadata"]["name"] for d in docs if d.get("kind") == "ServiceAccount"}

    def binds_sipwatch(binding: dict[str, Any]) -> bool:
        subjects = binding.get("subjects") or []
        return binding.get("roleRef", {}).get("name") == role_name and any(
            s.get("kind") == "ServiceAccount" and s.get("name") in sas for s in subjects
        )

    if not any(binds_sipwatch(b) for b in bindings):
        problems.append("RoleBinding: the Role is not bound to the sipwatch ServiceAccount")
    for b in bindings:
        for s in b.get("subjects") or []:
            if s.get("namespace") not in (None, b["metadata"].get("namespace")):
                problems.append(f"RoleBinding: subject {s.get('name')} is in another namespace")
    return problems


def policy_problems(docs: list[dict[str, Any]]) -> list[str]:
    problems = []
    namespaces = {(d.get("metadata") or {}).get("namespace") for d in docs}
    if len(namespaces) != 1 or None in namespaces:
        found = sorted(map(str, namespaces))
        problems.append(f"every object must be in one namespace, found {found}")
    deployments = [d for d in docs if d.get("kind") == "Deployment"]
    if len(deployments) != 1:
        return [*problems, f"expected one Deployment, found {len(deployments)}"]
    pod = deployments[0]["spec"]["template"]["spec"]
    psc = pod.get("securityContext") or {}
    if psc.get("runAsNonRoot") is not True or int(psc.get("runAsUser", 0)) == 0:
        problems.append("Deployment: the pod must run as a non-root UID (runAsNonRoot, runAsUser)")
    if (psc.get("seccompProfile") or {}).get("type") != "RuntimeDefault":
        problems.append("Deployment: seccompProfile RuntimeDefault missing")
    if pod.get("serviceAccountName") != "sipwatch":
        problems.append("Deployment: serviceAccountName must be sipwatch")
    for c in pod.get("containers") or []:
        name = f"Deployment container {c.get('name')}"
        sc = c.get("securityContext") or {}
        if sc.get("readOnlyRootFilesystem") is not True:
            problems.append(f"{name}: readOnlyRootFilesystem must be true")
        if sc.get("allowPrivilegeEscalation") is not False:
            problems.append(f"{name}: allowPrivilegeEscalation must be false")
        if "ALL" not in ((sc.get("capabilities") or {}).get("drop") or []):
            problems.append(f"{name}: capabilities must drop ALL")
        if sc.get("privileged"):
            problems.append(f"{name}: must not be privileged")
        res = c.get("resources") or {}
        requests, limits = res.get("requests") or {}, res.get("limits") or {}
        if not requests.get("memory") or not limits.get("memory"):
            problems.append(f"{name}: memory request and limit are required")
        image = str(c.get("image", ""))
        if ":" not in image.rsplit("/", 1)[-1] or image.endswith(":latest"):
            problems.append(f"{name}: image {image!r} must have a fixed tag")
        for probe, path in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")):
            got = ((c.get(probe) or {}).get("httpGet") or {}).get("path")
            if got != path:
                problems.append(f"{name}: {probe} must GET {path} (got {got})")
        for env in c.get("env") or []:
            secretish = any(w in env["name"] for w in ("URL", "SECRET", "PASSWORD", "TOKEN"))
            if "value" in env and secretish:
                problems.append(f"{name}: {env['name']} must come from a Secret, not a value")
    return problems


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: k8s_check.py rendered.yaml", file=sys.stderr)
        return 2
    docs = load(argv[0])
    problems = schema_problems(docs) + rbac_problems(docs) + policy_problems(docs)
    for p in problems:
        print(f"{argv[0]}: {p}", file=sys.stderr)
    if problems:
        return 1
    versions = all_versions()
    print(
        f"kubernetes manifests OK: {len(docs)} objects, schemas {versions[0]} and {versions[-1]}"
        f" (+ structural {', '.join(sorted(CRD_KINDS))}), RBAC minimal"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
