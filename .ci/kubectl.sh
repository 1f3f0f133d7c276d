#!/bin/sh
# Obtain kubectl (Debian's package) into <repo>/.tools/ and print its path.
#
# kubectl is not a Python package, and `kubectl kustomize` is what renders deploy/kubernetes.
# Debian bookworm ships it as `kubernetes-client` (later releases as `kubectl`); .ci/deb-tool.sh
# unpacks it.  KUBECTL=/path/to/kubectl uses another one instead.
#
# Usage: KUBECTL=$(.ci/kubectl.sh) && "$KUBECTL" kustomize deploy/kubernetes
set -eu

if [ -n "${KUBECTL:-}" ]; then
    echo "$KUBECTL"
    exit 0
fi
here=$(CDPATH='' cd -- "$(dirname -- "$0")" && pwd)
exec sh "$here/deb-tool.sh" kubectl "kubernetes-client kubectl" "version --client" kubectl
