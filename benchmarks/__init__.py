"""The benchmarks of pml-anticollapse (not shipped in the wheel): three small products.

- ``harness/``  ``python -m benchmarks``: the anti-collapse benchmark on PML's trainers and testers;
- ``speed/``    ``python -m benchmarks.speed``: the coding rate against the naive formula;
- ``examples/`` runnable examples (multi-process training with PML's distributed wrapper);
- ``_shared``   what they share: atomic files, run metadata, argparse types.

Results of every product go under one root, ``benchmarks/results/``: runs write to
``benchmarks/results/runs/`` (not tracked); the published runs sit beside it.
"""
