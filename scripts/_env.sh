# Sourced by scripts/benchmark.sh and scripts/test.sh: find or build the Python environment.
#
# - Inside an activated virtual environment ($VIRTUAL_ENV) that environment is used; otherwise
#   ./.venv is created with the first python3 found (3.10 or newer).
# - torch is installed only when absent, pinned to the CPU build (torch==2.13.0) so that pip does
#   not resolve an unpinned torch to a multi-GB CUDA build. A torch you already have is kept.
# - The project is installed editable with the extra named by $PMLAC_EXTRA; the install is
#   skipped when pyproject.toml has not changed since the last one (a stamp file records its hash).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
if [ -n "${VIRTUAL_ENV:-}" ]; then
    PY="$VIRTUAL_ENV/bin/python"
else
    if [ ! -x .venv/bin/python ]; then
        python3 -c 'import sys; sys.exit(sys.version_info < (3, 10))' \
            || { echo "pml-anticollapse needs Python 3.10 or newer" >&2; exit 1; }
        python3 -m venv .venv
    fi
    PY="$ROOT/.venv/bin/python"
fi
if ! "$PY" -c "import torch" >/dev/null 2>&1; then
    echo "[setup] torch not found: installing the pinned CPU build torch==2.13.0" >&2
    "$PY" -m pip install --quiet "torch==2.13.0"
fi
STAMP_DIR="$("$PY" -c 'import sys; print(sys.prefix)')"
STAMP="$STAMP_DIR/.pml_anticollapse-${PMLAC_EXTRA}-$(sha256sum pyproject.toml | cut -c1-16)"
if [ ! -f "$STAMP" ]; then
    echo "[setup] installing pml-anticollapse[${PMLAC_EXTRA}] (editable)" >&2
    "$PY" -m pip install --quiet -e ".[${PMLAC_EXTRA}]"
    touch "$STAMP"
fi
# The glyph benchmark's fonts (benchmark extra only; the tests need none): the pinned Debian font
# packages of $PMLAC_FONT_SET (default core) via scripts/fonts.sh, unless the arguments choose
# another font source (--font-dir, --set dataset.font_dir=...) or another dataset (--dataset X,
# X not glyphs), or PMLAC_SKIP_FONTS=1. A failure is reported and the run goes on (the harness
# then names the missing fonts; a font folder works without packages).
if [ "${PMLAC_EXTRA}" = "benchmarks" ] && [ "${PMLAC_SKIP_FONTS:-0}" != "1" ]; then
    _want_fonts=1
    _prev=""
    for _arg in "$@"; do
        case "$_arg" in
            --font-dir|--font-dir=*|dataset.font_dir=*) _want_fonts=0 ;;
            --dataset=*) [ "${_arg#--dataset=}" = glyphs ] || _want_fonts=0 ;;
        esac
        if [ "$_prev" = "--dataset" ] && [ "$_arg" != glyphs ]; then _want_fonts=0; fi
        _prev="$_arg"
    done
    if [ "$_want_fonts" = 1 ]; then
        PY="$PY" bash "$ROOT/scripts/fonts.sh" "${PMLAC_FONT_SET:-core}" \
            || echo "[setup] fonts not installed (see above)" >&2
    fi
    unset _want_fonts _prev _arg
fi
