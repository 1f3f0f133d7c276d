#!/usr/bin/env bash
# CI check of the deployment artifacts (docs/deployment.md).  No Docker engine is needed:
#
#   Dockerfile                          hadolint + .ci/dockerfile_check.py (project policy)
#   deploy/docker-compose.sipwatch.yml  `docker compose config` (schema) + .ci/compose_check.py
#   deploy/sipwatch.toml                `sipwatch check-config` with the compose environment
#   deploy/healthcheck.py               compiles
#   systemd/sipwatch.service            systemd-analyze verify (no warnings allowed),
#                                       systemd-analyze security (exposure <= 2.0),
#                                       .ci/unit_check.py (required directives)
#   systemd/sipwatch.sysusers.conf      systemd-sysusers into a scratch root
#   systemd/sipwatch.env.example        only known SIPWATCH_* names
#   deploy/kubernetes/                  generated files fresh (tools/k8s_manifests.py),
#                                       `kubectl kustomize` (Debian's kubectl, .ci/kubectl.sh),
#                                       .ci/k8s_check.py (Kubernetes schemas, CRD structure,
#                                       minimal RBAC, pod security, probes)
#
# Usage: bash .ci/deploy-lint.sh        (PYTHON= picks the interpreter with sipwatch installed)
# Exit status: 0 when every check passes; 1 otherwise, after running all of them.
# SIPWATCH_LINT_DOCKERFILE / _COMPOSE / _UNIT / _K8S check another file (or kustomize
# directory) instead (the tests use them to prove that a broken file fails).
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-python3}
dockerfile=${SIPWATCH_LINT_DOCKERFILE:-Dockerfile}
compose_file=${SIPWATCH_LINT_COMPOSE:-deploy/docker-compose.sipwatch.yml}
unit=${SIPWATCH_LINT_UNIT:-systemd/sipwatch.service}
k8s_dir=${SIPWATCH_LINT_K8S:-deploy/kubernetes}
export PYTHON=$PY
failures=()
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT

step() { printf '\n--- %s\n' "$*"; }
fail() { printf 'FAIL: %s\n' "$*" >&2; failures+=("$1"); }

# ---------------------------------------------------------------------------- Dockerfile
step "Dockerfile: hadolint"
if hadolint=$(bash .ci/deploy-tools.sh hadolint); then
    "$hadolint" --no-color "$dockerfile" && echo "hadolint OK" || fail "hadolint"
else
    fail "hadolint not obtainable"
fi

step "Dockerfile: project policy"
"$PY" .ci/dockerfile_check.py "$dockerfile" || fail "dockerfile_check.py"

# ---------------------------------------------------------------------------- compose
step "compose: docker compose config"
if compose=$(bash .ci/deploy-tools.sh docker-compose); then
    # Run from a scratch HOME so no local Docker config or context is read.
    HOME=$scratch "$compose" -f "$compose_file" config --quiet \
        && echo "compose config OK" || fail "docker compose config"
else
    fail "docker-compose not obtainable"
fi

step "compose: security policy"
"$PY" .ci/compose_check.py "$compose_file" || fail "compose_check.py"

step "deploy/sipwatch.toml with the container's environment"
# The secret files the compose file mounts, with placeholder content, and the variables it
# sets: proves the *_FILE names are real settings and the file is valid together with them.
printf '%s' 'mysql://sipwatch:placeholder@mysql:3306/jambones' >"$scratch/sipwatch_db_url"
printf '%s' 'placeholder-encryption-secret' >"$scratch/jambonz_encryption_secret"
if env -i PATH="$PATH" HOME="$scratch" \
    DOCKER_HOST=tcp://docker-socket-proxy:2375 \
    SIPWATCH_LISTEN=0.0.0.0:9466 \
    SIPWATCH__DATABASE__URL_FILE="$scratch/sipwatch_db_url" \
    SIPWATCH__JAMBONZ__ENCRYPTION_SECRET_FILE="$scratch/jambonz_encryption_secret" \
    SIPWATCH_REDIS_URL=redis://redis:6379/0 \
    SIPWATCH__SOURCES__DOCKER__PROJECT= \
    SIPWATCH_LOG_FORMAT=json \
    "$PY" -m sipwatch check-config deploy/sipwatch.toml >"$scratch/check.out" 2>&1; then
    head -1 "$scratch/check.out"
else
    cat "$scratch/check.out" >&2
    fail "sipwatch check-config deploy/sipwatch.toml"
fi

step "deploy/healthcheck.py compiles"
"$PY" -c 'import sys; compile(open(sys.argv[1], encoding="utf-8").read(), sys.argv[1], "exec")' \
    deploy/healthcheck.py && echo "OK" || fail "healthcheck.py"

# ---------------------------------------------------------------------------- systemd
step "systemd: systemd-analyze verify"
# verify insists that ExecStart/ExecReload binaries exist, and /opt/sipwatch is not
# installed here: check a copy whose commands point at an executable that exists (the
# sipwatch of $PYTHON's environment, else /bin/true).  Everything else is verified as
# shipped, and any message fails the check (verify exits 0 on unknown keys and bad values).
sipwatch_bin=$("$PY" -c 'import os, sys; print(os.path.join(os.path.dirname(sys.executable), "sipwatch"))')
[ -x "$sipwatch_bin" ] || sipwatch_bin=/bin/true
mkdir -p "$scratch/unit"
sed "s|/opt/sipwatch/bin/sipwatch|$sipwatch_bin|g" "$unit" >"$scratch/unit/sipwatch.service"
if out=$(cd "$scratch/unit" && SYSTEMD_LOG_COLOR=0 systemd-analyze verify ./sipwatch.service 2>&1); then
    if [ -n "$out" ]; then
        printf '%s\n' "$out" >&2
        fail "systemd-analyze verify printed warnings"
    else
        echo "verify OK"
    fi
else
    printf '%s\n' "$out" >&2
    fail "systemd-analyze verify"
fi

step "systemd: systemd-analyze security (exposure must stay <= 2.0)"
if out=$(cd "$scratch/unit" && systemd-analyze security --offline=yes --threshold=20 \
        ./sipwatch.service 2>&1); then
    printf '%s\n' "$out" | tail -1
else
    printf '%s\n' "$out" | grep -v '^✓' >&2 || true
    fail "systemd-analyze security"
fi

step "systemd: required directives"
"$PY" .ci/unit_check.py "$unit" || fail "unit_check.py"

step "systemd: sysusers"
mkdir -p "$scratch/root/etc"
if systemd-sysusers --root="$scratch/root" - <systemd/sipwatch.sysusers.conf >"$scratch/sysusers.out" 2>&1 \
        && grep -q '^sipwatch:' "$scratch/root/etc/passwd"; then
    grep '^sipwatch:' "$scratch/root/etc/passwd"
else
    cat "$scratch/sysusers.out" >&2
    fail "systemd-sysusers"
fi

step "systemd: sipwatch.env.example names"
"$PY" - systemd/sipwatch.env.example <<'EOF' || fail "sipwatch.env.example"
import re, sys
from sipwatch.config import GENERIC_ENV_PREFIX, env_aliases
known = set(env_aliases()) | {"DOCKER_HOST", "SIPWATCH_CONFIG"}
bad = []
for number, line in enumerate(open(sys.argv[1], encoding="utf-8"), 1):
    m = re.match(r"^#?([A-Z][A-Z0-9_]*)=", line.strip())
    if m and not (m.group(1) in known or m.group(1).startswith(GENERIC_ENV_PREFIX)):
        bad.append(f"{sys.argv[1]}:{number}: unknown variable {m.group(1)}")
print("\n".join(bad) if bad else "env names OK", file=sys.stderr if bad else sys.stdout)
sys.exit(1 if bad else 0)
EOF

# ---------------------------------------------------------------------------- kubernetes
step "kubernetes: generated manifests are fresh"
"$PY" -m tools.k8s_manifests --check && echo "generated manifests fresh" \
    || fail "k8s_manifests --check"

step "kubernetes: kubectl kustomize $k8s_dir"
if kubectl=$(bash .ci/kubectl.sh); then
    "$kubectl" version --client 2>/dev/null | head -1
    if "$kubectl" kustomize "$k8s_dir" >"$scratch/k8s.yaml" 2>"$scratch/kustomize.err"; then
        echo "kustomize OK"
        step "kubernetes: schemas, RBAC and policy"
        "$PY" .ci/k8s_check.py "$scratch/k8s.yaml" || fail "k8s_check.py"
    else
        cat "$scratch/kustomize.err" >&2
        fail "kubectl kustomize"
    fi
else
    fail "kubectl not obtainable"
fi

echo
if ((${#failures[@]})); then
    printf 'deploy-lint: %d check(s) failed: %s\n' "${#failures[@]}" "$(IFS=,; echo "${failures[*]}")" >&2
    exit 1
fi
echo "deploy-lint: all checks passed"
