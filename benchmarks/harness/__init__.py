"""The benchmark harness: ``python -m benchmarks``.

Modules, in the order data flows:

- ``schema`` + ``config``: YAML + CLI checked against one typed schema (dataclasses), which also
  writes ``--help-config``;
- ``registry``: class names in configs -> losses, miners, regularizers, reducers, distances of the
  plugin or of PML;
- ``datasets/``: the dataset and protocol registry (``digits``, ``real`` = CUB/Cars196/SOP,
  ``glyphs``), each protocol handing over a train, query and (optional) reference set;
- ``models/``: the model registry (digits MLPs, image backbones);
- ``train``: one resumable cell (PML trainer, hooks, record-keeper, :class:`train.Checkpoint`);
- ``evaluate``: PML tester + AccuracyCalculator, collapse diagnostics;
- ``report``: Markdown table, results.json, plots (rebuilt from the run folder alone);
- ``pml2/``: every use of a PML-2-only API (trainers, testers, logging presets, record-keeper,
  PML's dataset readers), so that a port to PML 3 touches these files only;
- ``cli``: the steps of a run, top to bottom.
"""
