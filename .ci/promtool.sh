#!/bin/sh
# Obtain promtool (from Debian's `prometheus` package) into <repo>/.tools/ and print its path.
# The whole package is unpacked, so the Prometheus server is there too (.ci/prometheus.sh).
#
# Why this way: no PyPI package ships promtool, and installing the `prometheus` package would
# also install and start the Prometheus service.  `apt-get download` + `dpkg -x` unpacks the
# binaries without running any maintainer script.  The result is cached, so calling this again
# is cheap; `apt-get update` runs only when the download fails (stale package lists).
#
# Usage: PROMTOOL=$(.ci/promtool.sh) && "$PROMTOOL" check rules prometheus/sipwatch-alerts.yml
set -eu

repo=$(CDPATH='' cd -- "$(dirname -- "$0")/.." && pwd)
tools="$repo/.tools"
dest="$tools/prometheus"
promtool="$dest/usr/bin/promtool"

usable() {
    [ -x "$promtool" ] && "$promtool" --version >/dev/null 2>&1 && [ -x "$dest/usr/bin/prometheus" ]
}

if usable; then
    echo "$promtool"
    exit 0
fi

mkdir -p "$tools"

# Serialise concurrent callers (parallel test runs) so only one downloads.
exec 9>"$tools/.promtool.lock"
if command -v flock >/dev/null 2>&1; then
    flock 9
fi
if usable; then
    echo "$promtool"
    exit 0
fi

work=$(mktemp -d "$tools/.promtool.XXXXXX")
trap 'rm -rf "$work"' EXIT INT TERM

download() {
    (cd "$work" && apt-get download prometheus) >"$work/apt.log" 2>&1
}

if ! download; then
    echo "promtool.sh: apt-get download failed, running apt-get update and retrying" >&2
    apt-get update >"$work/update.log" 2>&1 || {
        cat "$work/update.log" >&2
        exit 1
    }
    download || {
        cat "$work/apt.log" >&2
        exit 1
    }
fi

deb=$(ls "$work"/prometheus_*.deb)
dpkg -x "$deb" "$work/root"
for binary in promtool prometheus; do
    if [ ! -x "$work/root/usr/bin/$binary" ]; then
        echo "promtool.sh: $deb has no usr/bin/$binary" >&2
        exit 1
    fi
done

rm -rf "$dest"
mv "$work/root" "$dest"

if ! usable; then
    echo "promtool.sh: $promtool does not run" >&2
    exit 1
fi
echo "$promtool"
