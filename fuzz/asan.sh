#!/usr/bin/env bash
# The compiled hot path under AddressSanitizer + UndefinedBehaviorSanitizer: an over-read of
# the text, a use-after-free or signed overflow in sipwatch/ingest/_speedups.pyx aborts here
# even where the Python-level tests see a correct answer.
#
#   bash fuzz/asan.sh [seconds]      # default 120; Linux + gcc; run from an activated venv
#
# Builds the extension with -fsanitize=address,undefined into a copy of the committed tree
# (the checkout's own build is left alone), then runs, with the sanitizer runtimes preloaded
# into the Python process: the differential properties and the parser tests, and the
# `compiled` and `framer` fuzz targets on mutated fixture logs for the given time (random
# cuts, NUL, invalid UTF-8, lone CRs, huge lines and dumps).
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-120}
tree=$(mktemp -d /tmp/sipwatch-asan-XXXXXX)
trap 'rm -rf "$tree"' EXIT
git archive HEAD | tar -x -C "$tree"
cd "$tree"
# setup.py runs outside pip's isolated build here: give it the [build-system] requirements
python -c 'import tomllib; print("\n".join(tomllib.load(open("pyproject.toml", "rb"))["build-system"]["requires"]))' |
  xargs python -m pip install --quiet
CFLAGS="-fsanitize=address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer -O1 -g" \
  LDFLAGS="-fsanitize=address,undefined" python setup.py -q build_ext --inplace >/dev/null
LD_PRELOAD="$(gcc -print-file-name=libasan.so) $(gcc -print-file-name=libubsan.so)"
export LD_PRELOAD ASAN_OPTIONS=detect_leaks=0:abort_on_error=1 UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1
python -c 'import sipwatch.ingest._speedups as m, sys; sys.exit(not m.__file__.startswith(sys.argv[1]))' "$tree"
DIFFERENTIAL_EXAMPLES=500 python -m pytest -q -p no:cacheprovider tests/test_differential.py \
  tests/test_parser.py tests/test_parser_framing.py tests/test_parser_hostile.py \
  tests/test_parser_fixtures.py tests/test_parser_properties.py tests/test_parser_fuzz.py tests/test_sip.py
python - "$seconds" <<'PY'
import random, sys, time
from pathlib import Path

from fuzz.harnesses import compiled, framer

rnd = random.Random(7)
logs = [p.read_bytes() for p in Path("tests/fixtures").rglob("*.log")]
pieces = [b"\x00", b"\r", b"\r\n", b"\n", b"\xff\xfe", b"\xc3", "\u0663".encode(), b'{"',
          b"2026-11-27 08:00:00.001000 ", b"recv 99999999999999999999 bytes from udp/[",
          b"]:5060", b"Via: ", b"v:", b"^M\n", b" " * 70000]
start, n = time.time(), 0
while time.time() - start < float(sys.argv[1]):
    base = rnd.choice(logs)
    a = rnd.randrange(len(base) + 1)
    data = bytearray(base[a : rnd.randrange(a, min(len(base), a + 20000) + 1)])
    for _ in range(rnd.randrange(20)):
        pos, op = rnd.randrange(len(data) + 1), rnd.random()
        if op < 0.5:
            data[pos:pos] = rnd.choice(pieces)
        elif op < 0.8:
            data[pos : pos + rnd.randrange(1, 50)] = b""
        else:
            data[pos:pos] = rnd.randbytes(rnd.randrange(1, 30))
    compiled(bytes(data))
    framer(bytes([rnd.randrange(256), rnd.randrange(256)]) + bytes(data))
    n += 1
compiled(b"2026-11-27 08:00:00.001000 recv 5 bytes from udp/[1.2.3.4]:5060 at x:\n" + b"A" * 5_000_000)
compiled(b"x" * 3_000_000 + b"\r")
print(f"asan: {n} mutated logs through the compiled and framer targets, no error")
PY
