"""Runnable examples (``torchrun --nproc_per_node 2 benchmarks/examples/ddp_example.py``)."""
