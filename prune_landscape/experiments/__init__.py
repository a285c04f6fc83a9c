"""Experiment runners: the pruning-method sweep and the reports it writes (plain arguments in, files out).

- :mod:`~prune_landscape.experiments.plan`: what a sweep runs (:class:`SweepPlan`, its cells), validated first.
- :mod:`~prune_landscape.experiments.sweep`: one cell pruned, trained by the core trainer and audited (the same
  :func:`prune_landscape.audit.audit` call the Lightning callback makes).
- :mod:`~prune_landscape.experiments.row`: how a sweep row is written (an audit report plus its training
  result, and every flat view of it: the JSON row, logger numbers, the raw table).
- :mod:`~prune_landscape.experiments.rowstore`: where rows are kept (``rows.jsonl``, appended under a lock).
- :mod:`~prune_landscape.experiments.headline`, :mod:`~prune_landscape.experiments.plots` and
  :mod:`~prune_landscape.experiments.html`: the sweep report (``sweep.html``, ``sweep.md``, ``sweep.json``).

Tier rule: experiments import the core, never :mod:`prune_landscape.integrations`, and import no lightning,
hydra, omegaconf or wandb (``tests/test_architecture.py`` checks both). Nothing is imported here: each module
imports what it uses at its top.
"""
