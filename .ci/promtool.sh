#!/bin/sh
# Obtain promtool (from Debian's `prometheus` package) into <repo>/.tools/ and print its path.
# The whole package is unpacked, so the Prometheus server is there too (.ci/prometheus.sh).
#
# No PyPI package ships promtool, and installing the `prometheus` package would also install
# and start the Prometheus service; .ci/deb-tool.sh unpacks it without running anything.
#
# Usage: PROMTOOL=$(.ci/promtool.sh) && "$PROMTOOL" check rules prometheus/sipwatch-alerts.yml
set -eu

here=$(CDPATH='' cd -- "$(dirname -- "$0")" && pwd)
exec sh "$here/deb-tool.sh" prometheus prometheus "--version" promtool prometheus
