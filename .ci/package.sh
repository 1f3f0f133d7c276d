#!/usr/bin/env bash
# Build the wheel and sdist, install the wheel into a fresh venv and run the CLI from it:
# proves the package works outside the source tree (bundled rules, example config), that the
# wheel carries the compiled hot path and runs it, and that a machine without a C compiler
# still gets a working (pure-Python) install from the sdist.
set -euo pipefail
cd "$(dirname "$0")/.."
rm -rf dist .venv-wheel .venv-nocc
python -m pip install --quiet build
# build makes the sdist, then the wheel from that sdist in an isolated environment with only
# the [build-system] requirements (Cython included): nothing from this venv leaks in.
python -m build --quiet --sdist --wheel --outdir dist . >/dev/null
# (listings in variables: `grep -q` in a pipe would end the lister early, failing pipefail)
sdist=$(tar -tzf dist/sipwatch-*.tar.gz)
wheel=$(python -m zipfile -l dist/sipwatch-*.whl)
for ext in _speedups _transactions; do
    grep -q "sipwatch/ingest/$ext.pyx\$" <<<"$sdist" || { echo "sdist lacks $ext.pyx" >&2; exit 1; }
done
if grep -q 'sipwatch/ingest/_speedups.c$' <<<"$sdist"; then
  echo "sdist ships the generated C (a build product)" >&2; exit 1
fi
for ext in _speedups _transactions; do
    grep -q "sipwatch/ingest/$ext\..*\.so" <<<"$wheel" || { echo "wheel lacks the compiled $ext" >&2; exit 1; }
done
python3 -m venv .venv-wheel
.venv-wheel/bin/pip install --quiet dist/sipwatch-*.whl
cd /tmp
version=$("$OLDPWD/.venv-wheel/bin/sipwatch" --version)
echo "$version"
[[ "$version" == *"(compiled parser)"* ]] || { echo "installed wheel does not run the compiled parser" >&2; exit 1; }
# imported from the installed wheel, not from the source tree
"$OLDPWD/.venv-wheel/bin/python" -c 'import sipwatch.ingest._speedups as m, sipwatch.ingest._transactions as t, sys; sys.exit(not all(".venv-wheel" in x.__file__ for x in (m, t)))'
"$OLDPWD/.venv-wheel/bin/sipwatch" --help >/dev/null
"$OLDPWD/.venv-wheel/bin/sipwatch" replay --help >/dev/null
"$OLDPWD/.venv-wheel/bin/sipwatch" check-config "$OLDPWD/examples/sipwatch.toml"
out=$("$OLDPWD/.venv-wheel/bin/sipwatch" replay "$OLDPWD/examples/drachtio-sbc.log" "$OLDPWD/examples/sbc-sip-sidecar.log")
echo "$out" | head -20
echo "$out" | grep -q "cause \[error\] realm_is_ip" || { echo "wheel replay shows no rule-based cause: rules not packaged?" >&2; exit 1; }
# what the no-compiler install must reproduce: the JSON report (the text one's header says how
# long the replay took, which differs between the two implementations)
report() { "$1" replay --format json "$OLDPWD/examples/drachtio-sbc.log" "$OLDPWD/examples/sbc-sip-sidecar.log" 2>/dev/null; }
wheel_report=$(report "$OLDPWD/.venv-wheel/bin/sipwatch")
cd "$OLDPWD"

# No C compiler (CC=false): the sdist still installs, runs the pure-Python implementation,
# says so once at start, and replays the examples to the same report.
python3 -m venv .venv-nocc
CC=false .venv-nocc/bin/pip install --quiet --no-cache-dir dist/sipwatch-*.tar.gz 2>/dev/null
cd /tmp
version=$("$OLDPWD/.venv-nocc/bin/sipwatch" --version)
[[ "$version" == *"(python parser)"* ]] || { echo "no-compiler install: $version" >&2; exit 1; }
err=$("$OLDPWD/.venv-nocc/bin/sipwatch" replay "$OLDPWD/examples/drachtio-sbc.log" "$OLDPWD/examples/sbc-sip-sidecar.log" 2>&1 >/dev/null)
[[ $(grep -c "compiled parser is not installed" <<<"$err") == 1 ]] || { echo "no-compiler install: expected one notice, got: $err" >&2; exit 1; }
nocc_report=$(report "$OLDPWD/.venv-nocc/bin/sipwatch")
[[ -n "$wheel_report" && "$nocc_report" == "$wheel_report" ]] || { echo "no-compiler install replays the examples differently" >&2; exit 1; }
cd "$OLDPWD"
rm -rf .venv-nocc
echo "wheel OK (compiled), sdist without a C compiler OK (pure Python)"
