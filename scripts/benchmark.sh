#!/usr/bin/env bash
# Set up (if needed) and run the main job: the benchmark harness on the embedded default data,
# on every core (or GPU) of this machine: `python -m benchmarks.launch` picks the layout and
# starts torchrun when it takes several processes. Extra arguments go to `python -m benchmarks`
# (see `--help`); PMLAC_NPROC=1 runs one process.
PMLAC_EXTRA=benchmarks
source "$(dirname "$0")/_env.sh"
exec "$PY" -m benchmarks.launch --resume-as "bash scripts/benchmark.sh" -- "$@"
