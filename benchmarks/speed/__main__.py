"""``python -m benchmarks.speed`` — see ``benchmarks/speed/bench.py``."""

from .bench import main

if __name__ == "__main__":
    main()
