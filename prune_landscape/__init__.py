"""prune_landscape: pruning pipelines that check where the zeros land.

Three tiers, one folder each above the core: the core (this folder: masks, structure, pruning, theory,
probes, report, training) imports no lightning, hydra, omegaconf or wandb; ``experiments/`` (the sweep and
its reports) calls the core; ``integrations/`` (Lightning callbacks, lit, loggers, datamodules, the Hydra CLI)
calls both. Never the other way round.

Example:
    >>> import torch
    >>> import prune_landscape as pl
    >>> net = pl.models.mlp([64, 256, 10])
    >>> masks = pl.prune(net, "magnitude", 0.8, final_layer_policy="dense")
    >>> report = pl.audit(net, n_samples=1347, masks=masks)
    >>> report.structure.final_layer_dense, round(masks.density, 3)
    (True, 0.2)
"""

from __future__ import annotations

import importlib
import sys
import types
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the names below load on first use (see __getattr__): `prune-landscape --help` needs no torch
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
    from prune_landscape.remedy import plan_remedy
    from prune_landscape.report import AuditReport, save_report
    from prune_landscape.verdict import MaskLevel, MaskVerdict
    from prune_landscape.layers import final_layer_name
    from prune_landscape.structure import LayerStructure, Structure, analyze_structure

#: Public name -> the module that defines it (imported on first access).
_EXPORTS = {
    "audit": "prune_landscape.audit",
    "MaskSet": "prune_landscape.masks", "prunable_parameters": "prune_landscape.masks",
    **{name: "prune_landscape.pruning" for name in ("GradualSchedule", "IMPSchedule", "available_methods",
                                                    "magnitude_step", "prune", "register_pruner")},
    "AuditReport": "prune_landscape.report", "save_report": "prune_landscape.report",
    "MaskLevel": "prune_landscape.verdict", "MaskVerdict": "prune_landscape.verdict",
    "plan_remedy": "prune_landscape.remedy",
    **{name: "prune_landscape.structure" for name in ("LayerStructure", "Structure", "analyze_structure")},
    "final_layer_name": "prune_landscape.layers",
}

__all__ = [
    # masks and model introspection
    "MaskSet",
    "prunable_parameters",
    "final_layer_name",
    # structure
    "LayerStructure",
    "Structure",
    "analyze_structure",
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
    "MaskLevel",
    "MaskVerdict",
    "plan_remedy",
    # submodules: models (built-in nets), data, probes, theory, training; the tiers experiments, integrations
    "models",
    "data",
    "probes",
    "theory",
    "training",
    "experiments",
    "integrations",
]

__version__ = "0.1.0"

_LAZY = {"models", "data", "probes", "theory", "training", "experiments", "integrations",
         # deprecated aliases of integrations.<name> (each warns once): kept so old code keeps running
         "callbacks", "datamodules", "lit", "loggers"}


def __getattr__(name: str) -> Any:
    # Everything loads on first use, so `import prune_landscape` (and the CLI's argument checks) stays light.
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
        globals()[name] = value
        return value
    if name in _LAZY:
        return importlib.import_module(f"prune_landscape.{name}")
    raise AttributeError(f"module 'prune_landscape' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})


class _Package(types.ModuleType):
    """Keeps ``prune_landscape.audit`` the function: importing the submodule of the same name would rebind it."""

    def __setattr__(self, name: str, value: Any) -> None:
        if name == "audit" and isinstance(value, types.ModuleType) and hasattr(value, "audit"):
            value = value.audit  # the import system sets the parent's attribute after the submodule has run
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package
