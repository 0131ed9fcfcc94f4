#!/usr/bin/env bash
# Set up (if needed) and run the test suite. Extra arguments go to pytest.
PMLAC_EXTRA=test
source "$(dirname "$0")/_env.sh"
exec "$PY" -m pytest -q "$@"
