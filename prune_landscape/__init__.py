"""prune_landscape: pruning pipelines that check where the zeros land.

The core (masks, structure, pruning, theory, probes, report) imports no lightning, hydra, omegaconf or
wandb; the adapters (callbacks, lit, loggers, datamodules, cli) call the core, never the other way round.

Example:
    >>> import torch
    >>> import prune_landscape as pl
    >>> net = pl.models.mlp([64, 256, 10])
    >>> masks = pl.prune(net, "magnitude", 0.8, final_layer="dense")
    >>> report = pl.audit(net, n_samples=1347, masks=masks)
    >>> report.structure.final_layer_dense, round(masks.density, 3)
    (True, 0.2)
"""

from __future__ import annotations

import importlib
from typing import Any

from prune_landscape import models
from prune_landscape.audit import audit
from prune_landscape.masks import MaskSet, prunable_parameters
from prune_landscape.pruning import (
    GradualSchedule,
    IMPSchedule,
    available_methods,
    magnitude_step,
    prune,
    register_pruner,
)
from prune_landscape.report import AuditReport, save_report
from prune_landscape.structure import LayerStructure, Structure, analyze_structure, final_layer_name

__all__ = [
    # masks
    "MaskSet",
    "prunable_parameters",
    # structure
    "LayerStructure",
    "Structure",
    "analyze_structure",
    "final_layer_name",
    # pruning
    "prune",
    "register_pruner",
    "available_methods",
    "magnitude_step",
    "GradualSchedule",
    "IMPSchedule",
    # audit
    "audit",
    "AuditReport",
    "save_report",
    # submodules: models (built-in nets), data, probes, theory, training, callbacks (Lightning)
    "models",
    "data",
    "probes",
    "theory",
    "training",
]

__version__ = "0.1.0"

_LAZY = {"data", "probes", "theory", "training", "callbacks", "datamodules", "lit", "loggers"}


def __getattr__(name: str) -> Any:
    # Heavy or framework-bound submodules load on first use, so `import prune_landscape` stays light.
    if name in _LAZY:
        return importlib.import_module(f"prune_landscape.{name}")
    raise AttributeError(f"module 'prune_landscape' has no attribute {name!r}")
