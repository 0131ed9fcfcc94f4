"""``python -m benchmarks``: the anti-collapse benchmark harness (``benchmarks/harness/``)."""

import sys

from .harness.cli import run

if __name__ == "__main__":
    sys.exit(run())
