#!/usr/bin/env bash
# Install the fonts of the glyph benchmark: the pinned Debian font packages of one font set
# (core | extended | all; default core). The package list lives in one place,
# benchmarks/harness/glyphs/fonts.py, and is read from there.
#
#   bash scripts/fonts.sh [core|extended|all]
#
# - Packages already installed (dpkg) or already extracted are left alone.
# - As root: `apt-get install --no-install-recommends` (files under /usr/share/fonts/...).
# - Otherwise: `apt-get download` + `dpkg-deb -x` into the font cache
#   ($PMLAC_FONT_CACHE, else ${XDG_CACHE_HOME:-~/.cache}/pml-anticollapse/fonts/<package>/),
#   where the benchmark looks for them; no root needed.
# - Off Debian/Ubuntu (no apt-get/dpkg): a message saying how to use --font-dir instead.
# Needs the network only while packages are missing. The test suite does not need any of this.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
SET="${1:-core}"
PY="${PY:-}"  # any python3 works: the list is read from fonts.py, which needs only the stdlib
if [ -z "$PY" ]; then
    if [ -n "${VIRTUAL_ENV:-}" ]; then PY="$VIRTUAL_ENV/bin/python"; else PY="$ROOT/.venv/bin/python"; fi
fi
[ -x "$PY" ] || PY=python3
PACKAGES="$("$PY" "$ROOT/benchmarks/harness/glyphs/fonts.py" "$SET")" || {
    echo "[fonts] unknown font set '$SET' (expected core, extended or all)" >&2; exit 2; }
CACHE="${PMLAC_FONT_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/pml-anticollapse/fonts}"

if ! command -v apt-get >/dev/null 2>&1 || ! command -v dpkg-query >/dev/null 2>&1; then
    cat >&2 <<EOF
[fonts] this system has no apt-get/dpkg (not Debian/Ubuntu): the pinned font packages cannot be
[fonts] installed here. Put .ttf/.otf/.ttc files of several Japanese typefaces in a folder and run
[fonts]   bash scripts/benchmark.sh --font-dir DIR
[fonts] (or use --dataset digits). Packages of the '$SET' set: $PACKAGES
EOF
    exit 1
fi

missing=()
for p in $PACKAGES; do
    if dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q ' installed$'; then continue; fi
    if [ -f "$CACHE/$p/VERSION" ]; then continue; fi
    missing+=("$p")
done
if [ "${#missing[@]}" -eq 0 ]; then
    echo "[fonts] font set '$SET': all packages present" >&2
    exit 0
fi
echo "[fonts] font set '$SET': installing ${#missing[@]} package(s): ${missing[*]}" >&2
if [ "$(id -u)" -eq 0 ]; then
    export DEBIAN_FRONTEND=noninteractive
    if ! apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null; then
        apt-get update -q >/dev/null
        apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
    fi
else
    mkdir -p "$CACHE/.debs"
    (cd "$CACHE/.debs" && apt-get download "${missing[@]}" >/dev/null) || {
        echo "[fonts] apt-get download failed (no network, or stale package lists: as root run" \
             "apt-get update); alternatively pass --font-dir DIR" >&2; exit 1; }
    for p in "${missing[@]}"; do
        deb="$(ls "$CACHE/.debs/${p}_"*.deb | head -n 1)"
        rm -rf "$CACHE/$p.tmp" && mkdir -p "$CACHE/$p.tmp"
        dpkg-deb -x "$deb" "$CACHE/$p.tmp"
        dpkg-deb -f "$deb" Version > "$CACHE/$p.tmp/VERSION"
        rm -rf "$CACHE/$p" && mv "$CACHE/$p.tmp" "$CACHE/$p"
    done
    rm -rf "$CACHE/.debs"
    echo "[fonts] extracted into $CACHE" >&2
fi
echo "[fonts] font set '$SET': done" >&2
