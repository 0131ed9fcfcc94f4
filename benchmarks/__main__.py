"""``python -m benchmarks`` — see ``benchmarks/cli.py`` and ``python -m benchmarks --help``."""

import sys

from .cli import main

if __name__ == "__main__":
    try:
        sys.exit(main())
    except (ValueError, FileNotFoundError) as e:  # a bad config, option or data root
        sys.exit(f"python -m benchmarks: error: {e}")
