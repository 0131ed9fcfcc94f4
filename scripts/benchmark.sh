#!/usr/bin/env bash
# Set up (if needed) and run the main job: the benchmark harness on the embedded default data.
# Extra arguments go to `python -m benchmarks` (see `--help`).
PMLAC_EXTRA=benchmarks
source "$(dirname "$0")/_env.sh"
exec "$PY" -m benchmarks "$@"
