#!/bin/sh
# Obtain binaries from a Debian package into <repo>/.tools/<dest>/ and print the first one's path.
#
#   .ci/deb-tool.sh DEST "PACKAGE [FALLBACK-PACKAGE...]" "PROBE-ARGS" BINARY [BINARY...]
#
# The one way .ci/kubectl.sh and .ci/promtool.sh get their tools.  Why this way: these are no
# Python packages, and installing the Debian package could start a service (prometheus);
# `apt-get download` + `dpkg -x` unpacks the binaries without running any maintainer script
# or installing anything system-wide.  The result is cached (usable = every BINARY is there
# and the first runs with PROBE-ARGS), so calling this again is cheap; concurrent callers
# (parallel test runs) are serialised with flock, and `apt-get update` runs only when the
# download fails (stale package lists).  The packages are tried in order (a package renamed
# between Debian releases).
set -eu

name=${1:?usage: deb-tool.sh DEST PACKAGES PROBE-ARGS BINARY...}
packages=${2:?no package named}
probe=${3:?no probe arguments}
shift 3
[ $# -gt 0 ] || { echo "deb-tool.sh: no binary named" >&2; exit 2; }
main=$1

repo=$(CDPATH='' cd -- "$(dirname -- "$0")/.." && pwd)
tools="$repo/.tools"
dest="$tools/$name"
path="$dest/usr/bin/$main"

usable() {
    for binary in "$@"; do
        [ -x "$dest/usr/bin/$binary" ] || return 1
    done
    # shellcheck disable=SC2086 # the probe is several words
    "$path" $probe >/dev/null 2>&1
}

if usable "$@"; then
    echo "$path"
    exit 0
fi

mkdir -p "$tools"
exec 9>"$tools/.$name.lock"
if command -v flock >/dev/null 2>&1; then
    flock 9
fi
if usable "$@"; then
    echo "$path"
    exit 0
fi

work=$(mktemp -d "$tools/.$name.XXXXXX")
chmod 0755 "$work"  # apt's _apt user writes the download here
trap 'rm -rf "$work"' EXIT INT TERM

download() {
    for pkg in $packages; do
        if (cd "$work" && apt-get download "$pkg") >"$work/apt.log" 2>&1; then
            return 0
        fi
    done
    return 1
}

if ! download; then
    echo "deb-tool.sh: apt-get download $packages failed, running apt-get update and retrying" >&2
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
for binary in "$@"; do
    if [ ! -x "$work/root/usr/bin/$binary" ]; then
        echo "deb-tool.sh: $deb has no usr/bin/$binary" >&2
        exit 1
    fi
done

rm -rf "$dest"
mv "$work/root" "$dest"

if ! usable "$@"; then
    echo "deb-tool.sh: $path does not run" >&2
    exit 1
fi
echo "$path"
