"""Experiment runners: the pruning-method sweep and the reports it writes (plain arguments in, files out).

- :mod:`~prune_landscape.experiments.plan`: what a sweep runs (:class:`SweepPlan`, its cells), validated first.
- :mod:`~prune_landscape.experiments.sweep`: one cell pruned, trained by the core trainer and audited into a row.
- :mod:`~prune_landscape.experiments.rowstore`: how a row is written (``rows.jsonl``, appended under a lock).
- :mod:`~prune_landscape.experiments.headline` and :mod:`~prune_landscape.experiments.html`: the report pages.

Tier rule: experiments import the core, never :mod:`prune_landscape.integrations`, and import no lightning,
hydra, omegaconf or wandb (``tests/test_architecture.py`` checks both). Nothing is imported here, so
``import prune_landscape.experiments.plan`` loads only what the plan needs.
"""
