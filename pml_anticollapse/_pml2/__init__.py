"""Adapters for the pytorch-metric-learning 2 APIs that PML 3 removes or moves.

The package pins ``pytorch-metric-learning>=2.9,<3``. PML 3.0 removes recorded statistics (and
with them record-keeper support) and moves the distributed wrappers; every use of those PML 2
pieces in the package goes through one module here, one module per concern, so that a port
touches these files only:

- :mod:`.stats` — recorded statistics (``collect_stats``, ``add_to_recordable_attributes``).
- :mod:`.wrapper` — recognising PML's ``DistributedLossWrapper`` and the regularizer mixins'
  methods on the call stack, with the names it relies on checked before first use.
"""
