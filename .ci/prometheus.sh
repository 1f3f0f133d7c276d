#!/bin/sh
# Obtain the Prometheus server (from Debian's `prometheus` package) into <repo>/.tools/ and
# print its path.  The package is the one .ci/promtool.sh unpacks (promtool and prometheus
# ship together), so this only asks that script for it and points at the sibling binary.
# Nothing is installed or started: the end-to-end test (tests/test_prometheus_e2e.py) runs the
# binary itself, on loopback, with its storage in a temporary directory.
#
# Usage: PROMETHEUS=$(.ci/prometheus.sh) && "$PROMETHEUS" --version
set -eu

here=$(CDPATH='' cd -- "$(dirname -- "$0")" && pwd)
promtool=$("$here/promtool.sh")
prometheus="$(dirname -- "$promtool")/prometheus"
if ! [ -x "$prometheus" ] || ! "$prometheus" --version >/dev/null 2>&1; then
    echo "prometheus.sh: $prometheus is missing or does not run" >&2
    exit 1
fi
echo "$prometheus"
