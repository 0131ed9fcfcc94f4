"""The benchmark harness: ``python -m benchmarks``.

Modules, in the order data flows:

- ``schema`` + ``config``: YAML + CLI checked against one typed schema (dataclasses), which also
  writes ``--help-config``;
- ``class_lookup``: class names in configs -> losses, miners, regularizers, reducers, distances
  of the plugin or of PML;
- ``datasets/``: the dataset and protocol registry (``digits``, ``real`` = CUB/Cars196/SOP,
  ``glyphs``), each protocol handing over a train, query and (optional) reference set;
- ``models/``: the model registry (digits MLPs, image backbones);
- ``train``: one resumable cell (PML trainer, hooks, record-keeper, :class:`train.Checkpoint`);
- ``evaluate``: PML tester + AccuracyCalculator, collapse diagnostics;
- ``report``: Markdown table, results.json, plots (rebuilt from the run folder alone);
- ``pml2/``: every use of a PML-2-only API (trainers, testers, logging presets, record-keeper,
  PML's dataset readers), so that a port to PML 3 touches these files only;
- ``ranks``: this process among torchrun's ranks: its device, threads and share of the cells;
- ``runner``: the run folder's life (plan, lock, cells in parallel, resume, report), used by both
  commands;
- ``search_space`` + ``search``: the equal-budget hyperparameter search on validation folds
  (``python -m benchmarks tune``);
- ``cli``: parses the command line and hands over to ``runner`` or ``search``.
"""
