#!/bin/sh
# Obtain kubectl (Debian's package) into <repo>/.tools/ and print its path.
#
# Why this way: kubectl is not a Python package, and `kubectl kustomize` is what renders
# deploy/kubernetes.  Debian bookworm ships it as `kubernetes-client` (later releases as
# `kubectl`); `apt-get download` + `dpkg -x` unpacks the binary without installing anything
# system-wide, the same way .ci/promtool.sh gets promtool.  The result is cached; concurrent
# callers are serialised with flock.  KUBECTL=/path/to/kubectl uses another one instead.
#
# Usage: KUBECTL=$(.ci/kubectl.sh) && "$KUBECTL" kustomize deploy/kubernetes
set -eu

if [ -n "${KUBECTL:-}" ]; then
    echo "$KUBECTL"
    exit 0
fi

repo=$(CDPATH='' cd -- "$(dirname -- "$0")/.." && pwd)
tools="$repo/.tools"
dest="$tools/kubectl"
kubectl="$dest/usr/bin/kubectl"

usable() {
    [ -x "$kubectl" ] && "$kubectl" version --client >/dev/null 2>&1
}

if usable; then
    echo "$kubectl"
    exit 0
fi

mkdir -p "$tools"
exec 9>"$tools/.kubectl.lock"
if command -v flock >/dev/null 2>&1; then
    flock 9
fi
if usable; then
    echo "$kubectl"
    exit 0
fi

work=$(mktemp -d "$tools/.kubectl.XXXXXX")
chmod 0755 "$work"  # apt's _apt user writes the download here
trap 'rm -rf "$work"' EXIT INT TERM

download() {
    for pkg in kubernetes-client kubectl; do
        if (cd "$work" && apt-get download "$pkg") >"$work/apt.log" 2>&1; then
            return 0
        fi
    done
    return 1
}

if ! download; then
    echo "kubectl.sh: apt-get download failed, running apt-get update and retrying" >&2
    apt-get update >"$work/update.log" 2>&1 || {
        cat "$work/update.log" >&2
        exit 1
    }
    download || {
        cat "$work/apt.log" >&2
        exit 1
    }
fi

deb=$(ls "$work"/*.deb | head -1)
dpkg -x "$deb" "$work/root"
if [ ! -x "$work/root/usr/bin/kubectl" ]; then
    echo "kubectl.sh: $deb has no usr/bin/kubectl" >&2
    exit 1
fi

rm -rf "$dest"
mv "$work/root" "$dest"

if ! usable; then
    echo "kubectl.sh: $kubectl does not run" >&2
    exit 1
fi
echo "$kubectl"
