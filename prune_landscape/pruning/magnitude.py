"""Magnitude scores: ``|w|`` of the weights in force (OpenLTH, JaxPruner, Han et al. 2015).

Example:
    >>> import torch
    >>> from prune_landscape import models
    >>> net = models.mlp([2, 1], bias=False)
    >>> with torch.no_grad():
    ...     _ = net.fc1.weight.copy_(torch.tensor([[-3.0, 2.0]]))
    >>> masks = {"fc1.weight": torch.ones(1, 2, dtype=torch.bool)}
    >>> magnitude_scores(net, masks, None, None)["fc1.weight"].tolist()
    [[3.0, 2.0]]
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from prune_landscape.layers import current_tensor, find_parameter

__all__ = ["magnitude_scores"]


def magnitude_scores(
    model: nn.Module, masks: Mapping[str, torch.Tensor], data: object, generator: torch.Generator | None
) -> dict[str, torch.Tensor]:
    """``|w|`` per masked tensor; reads plain, torch.nn.utils.prune and parametrized weights alike."""
    return {name: current_tensor(*find_parameter(model, name)).abs() for name in masks}
