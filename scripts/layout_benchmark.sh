#!/usr/bin/env bash
# Wall time of one glyph grid in two layouts of this machine's CPUs, in both orders (ABBA):
# 1 process x N threads (`python -m benchmarks --threads N`) against N processes x 1 thread
# (`python -m benchmarks.launch`, torchrun). The grid: the main job's config, seed 0, 10 epochs
# per protocol (--epochs 10), fresh folders each time. Prints one line per run (seconds).
# Take it with nothing else running (a study paused: kill -STOP, then kill -CONT).
set -euo pipefail
PMLAC_EXTRA=benchmarks
source "$(dirname "$0")/_env.sh"
N="$("$PY" -c 'import os; print(len(os.sched_getaffinity(0)))')"
OUT="$(mktemp -d)"
trap 'rm -rf "$OUT"' EXIT
ARGS=(--seeds 0 --epochs 10 --progress none --no-plots --fresh)
run() {  # $1 = layout name
    local t0 t1
    t0=$("$PY" -c 'import time; print(time.time())')
    if [ "$1" = "1x$N" ]; then
        "$PY" -m benchmarks "${ARGS[@]}" --threads "$N" --output "$OUT/a" >/dev/null 2>&1
    else
        PMLAC_NPROC="$N" "$PY" -m benchmarks.launch -- "${ARGS[@]}" --output "$OUT/b" >/dev/null 2>&1
    fi
    t1=$("$PY" -c 'import time; print(time.time())')
    "$PY" -c "print('$1', round($t1 - $t0, 1), 's')"
}
echo "# $("$PY" -c 'from benchmarks._shared import cpu_model; print(cpu_model())'), $N CPUs, $(date -u +%FT%TZ), commit $(git rev-parse --short HEAD)"
for layout in "1x$N" "${N}x1" "${N}x1" "1x$N"; do run "$layout"; done
