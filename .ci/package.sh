#!/usr/bin/env bash
# Build the wheel and sdist, install the wheel into a fresh venv and run the CLI from it:
# proves the package works outside the source tree (bundled rules, example config).
set -euo pipefail
cd "$(dirname "$0")/.."
rm -rf dist .venv-wheel
python -m pip install --quiet build
python -m build --quiet --sdist --wheel --outdir dist . >/dev/null
python3 -m venv .venv-wheel
.venv-wheel/bin/pip install --quiet dist/sipwatch-*.whl
cd /tmp
"$OLDPWD/.venv-wheel/bin/sipwatch" --version
"$OLDPWD/.venv-wheel/bin/sipwatch" --help >/dev/null
"$OLDPWD/.venv-wheel/bin/sipwatch" replay --help >/dev/null
"$OLDPWD/.venv-wheel/bin/sipwatch" check-config "$OLDPWD/examples/sipwatch.toml"
out=$("$OLDPWD/.venv-wheel/bin/sipwatch" replay "$OLDPWD/examples/drachtio-sbc.log" "$OLDPWD/examples/sbc-sip-sidecar.log")
echo "$out" | head -20
echo "$out" | grep -q "cause \[error\] realm_is_ip" || { echo "wheel replay shows no rule-based cause: rules not packaged?" >&2; exit 1; }
echo "wheel OK"
