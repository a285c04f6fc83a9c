"""Pruning: one scorer per method, shared allocation, schedules and final-layer policy.

Methods (each file only computes scores): ``magnitude``, ``random``, ``snip``, ``grasp``, ``synflow``,
``ntk_sap``; add your own with :func:`register_pruner`. Shared pure code turns scores into masks:
:mod:`.topk` (exact counts, tie rule), :mod:`.allocation` (global / layer-wise / ERK, final-layer
policy), :mod:`.schedules` (exponential-iterative, cubic gradual, IMP). :func:`prune` is three steps:
:mod:`.options` (every argument checked once into a frozen ``PruneOptions``), :mod:`.prepare` (what the
scorer is fed) and :mod:`.rounds` (one shot or the exponential schedule).

Example:
    >>> import torch
    >>> from prune_landscape import models
    >>> from prune_landscape.pruning import prune
    >>> net = models.resnet20()
    >>> masks = prune(net, "synflow", 0.9, input_shape=(3, 32, 32), iterations=2, final_layer_policy="dense")
    >>> round(masks.density, 4), bool(masks["fc.weight"].all())
    (0.1, True)
"""

from prune_landscape.pruning.allocation import (
    FinalLayerMode,
    FinalLayerPolicy,
    Scope,
    allocate,
    masks_at_sparsity,
    num_to_keep,
)
from prune_landscape.pruning.api import magnitude_step, prune
from prune_landscape.pruning.fit import check_fit
from prune_landscape.pruning.grasp import grasp_scores
from prune_landscape.pruning.magnitude import magnitude_scores
from prune_landscape.pruning.ntk_sap import NtkSapOptions, ntk_sap_scores
from prune_landscape.pruning.random_scores import random_scores
from prune_landscape.pruning.registry import DataUse, PrunerSpec, available_methods, get_pruner, register_pruner
from prune_landscape.pruning.reinit import redraw_initial_weights
from prune_landscape.pruning.schedules import GradualSchedule, IMPSchedule, exponential_densities
from prune_landscape.pruning.snip import snip_scores
from prune_landscape.pruning.synflow import synflow_scores
from prune_landscape.pruning.topk import apportion, topk_mask

__all__ = [
    "DataUse",
    "FinalLayerMode",
    "FinalLayerPolicy",
    "GradualSchedule",
    "IMPSchedule",
    "NtkSapOptions",
    "PrunerSpec",
    "Scope",
    "allocate",
    "apportion",
    "available_methods",
    "check_fit",
    "exponential_densities",
    "get_pruner",
    "grasp_scores",
    "magnitude_scores",
    "magnitude_step",
    "masks_at_sparsity",
    "ntk_sap_scores",
    "num_to_keep",
    "prune",
    "random_scores",
    "redraw_initial_weights",
    "register_pruner",
    "snip_scores",
    "synflow_scores",
    "topk_mask",
]

register_pruner("magnitude", magnitude_scores, overwrite=True)
register_pruner("random", random_scores, overwrite=True)
register_pruner("snip", snip_scores, data=DataUse.VALUES, overwrite=True)
register_pruner("grasp", grasp_scores, data=DataUse.VALUES, overwrite=True)
register_pruner("synflow", synflow_scores, data=DataUse.SAMPLE_SHAPE, iterations=100, overwrite=True)
register_pruner(
    "ntk_sap", ntk_sap_scores, data=DataUse.SHAPES, iterations=20, overwrite=True, options_type=NtkSapOptions
)
