"""The benchmark harness: ``python -m benchmarks``.

Modules, in the order data flows: ``config`` (YAML + CLI) -> ``registry`` (class names -> PML or
plugin classes) -> ``data`` (digits protocols | real datasets) -> ``train`` (PML trainer, hooks,
record-keeper, resumable cells) -> ``evaluate`` (PML tester, AccuracyCalculator, diagnostics) ->
``report`` (Markdown table, results.json, plots). ``cli`` ties them together.
"""
