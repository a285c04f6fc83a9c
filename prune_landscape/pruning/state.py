"""What a pruning call starts from: the masks in force, the kept target, and the final layer's name.

Tied parameters are one prunable tensor reachable under several names; every mask and the final layer are
keyed by the canonical name (:func:`prune_landscape.layers.prunable_parameters`), whichever alias the user
or a hook used.

Example:
    >>> from prune_landscape import models
    >>> start = MasksInForce.read(models.mlp([4, 3, 2]))
    >>> start.total, start.kept, start.target(0.5)
    (18, 18, 9)
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from prune_landscape.layers import prunable_parameters, prunable_weights
from prune_landscape.masks import MaskSet
from prune_landscape.pruning.allocation import num_to_keep
from prune_landscape.layers import final_layer_name as _find_final_layer

__all__ = ["MasksInForce", "canonical_names", "resolve_final_layer"]

logger = logging.getLogger(__name__)


def canonical_names(model: nn.Module, names: list[str], prunable: str = "layers") -> dict[str, str]:
    """Every name a prunable tensor is reachable under (tied parameters) -> its canonical name in ``names``."""
    aliases = {n: n for n in names}
    for weight in prunable_weights(model, prunable=prunable):  # type: ignore[arg-type]
        if weight.name in aliases:
            aliases.update({alias: weight.name for alias in weight.aliases})
    return aliases


@dataclass(frozen=True)
class MasksInForce:
    """The masks a pruning call starts from: one per prunable tensor, canonical names, CPU bool tensors.

    Attributes:
        masks: name -> bool mask (dense where the model carries none).
        total: number of prunable weights.
        kept: number kept by ``masks``.
    """

    masks: Mapping[str, torch.Tensor]
    total: int
    kept: int

    @classmethod
    def of(cls, masks: Mapping[str, torch.Tensor]) -> MasksInForce:
        """Wrap ``masks`` (already canonical and complete)."""
        return cls(dict(masks), sum(m.numel() for m in masks.values()), sum(int(m.sum()) for m in masks.values()))

    @classmethod
    def read(cls, model: nn.Module, prunable: str = "layers", given: Mapping[str, torch.Tensor] | None = None) -> MasksInForce:
        """The masks of ``given`` (under any alias), else of the model's pruning hooks; dense where missing."""
        names = prunable_parameters(model, prunable=prunable)  # type: ignore[arg-type]
        aliases = canonical_names(model, names, prunable)
        source = MaskSet.from_module(model, source="hooks") if given is None else given
        found = {aliases.get(n, n): m for n, m in source.items()}
        dense = MaskSet.dense(model, names)
        return cls.of({n: (found[n].clone().cpu() if n in found else dense[n].clone()) for n in names})

    def target(self, sparsity: float, name: str = "sparsity") -> int:
        """The exact kept count at ``sparsity`` (checked in [0, 1) by the caller).

        Raises:
            ValueError: when that keeps more than the masks in force (masks only shrink).
        """
        target = num_to_keep(1.0 - sparsity, self.total)
        if target > self.kept:
            now = 1 - self.kept / self.total
            raise ValueError(
                f"the mask in force keeps {self.kept} of {self.total} weights (sparsity {now:.4f}); masks only shrink, "
                f"so {name} must be >= {now:.4f}, got {sparsity}"
            )
        return target


def resolve_final_layer(model: nn.Module, example: Any, feed: Any, names: list[str]) -> str:
    """The final layer's canonical name: ``feed.final_layer_name`` (checked), else found by structure analysis.

    Args:
        model: the model (or its working copy) to read.
        example: example inputs for the forward pass, or None.
        feed: a :class:`~prune_landscape.pruning.options.ModelFeed` (output transform, chosen name, prunable).
        names: the canonical prunable names.

    Raises:
        ValueError: when the chosen name is not a prunable weight.
    """
    aliases = canonical_names(model, names, feed.prunable)
    chosen = feed.final_layer_name
    if chosen is not None:
        if chosen not in aliases:
            raise ValueError(f"final_layer_name must be a prunable weight, one of {names}, got {chosen!r}")
        return aliases[chosen]
    found = _find_final_layer(model, example, output_transform=feed.output_transform)
    name = aliases.get(found, found)
    logger.info("final layer: %s (found automatically; pass final_layer_name=... to choose another)", name)
    return name
