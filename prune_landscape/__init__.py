"""prune_landscape: pruning pipelines that check where the zeros land.

The core (masks, structure, pruning, theory, probes, report) imports no lightning, hydra, omegaconf or
wandb; the adapters (callbacks, cli) call the core, never the other way round.
"""

from prune_landscape import models
from prune_landscape.masks import MaskSet, prunable_parameters
from prune_landscape.structure import LayerStructure, Structure, analyze_structure

__all__ = [
    # masks
    "MaskSet",
    "prunable_parameters",
    # structure
    "LayerStructure",
    "Structure",
    "analyze_structure",
    # built-ins
    "models",
]

__version__ = "0.1.0"
