"""The private working copy every scorer runs on, and masked forward passes through it.

Scoring on a deep copy (made once per :func:`prune` call) is what guarantees that the user's model is left
exactly as found: weights bit for bit, train/eval mode, ``.grad``, hooks, BatchNorm statistics.

Example:
    >>> import torch
    >>> from prune_landscape import models
    >>> work = working_copy(models.mlp([3, 2]))
    >>> weights = {"fc1.weight": torch.zeros(2, 3)}
    >>> masked_call(work, weights, torch.ones(1, 3)).shape
    torch.Size([1, 2])
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn
from torch.func import functional_call

from prune_landscape.modelcopy import plain_copy

__all__ = ["masked_call", "model_device", "weight_of", "working_copy"]


def working_copy(model: nn.Module) -> nn.Module:
    """A deep copy with pruning hooks and parametrizations folded into plain parameters, grads off, eval mode.

    Raises:
        TypeError: if the model cannot be deep-copied (the message says why).
    """
    work = plain_copy(model)
    for parameter in work.parameters():
        parameter.requires_grad_(False)
        parameter.grad = None
    return work.eval()


def model_device(model: nn.Module) -> torch.device:
    """Device of the first parameter (CPU for a parameterless model)."""
    for parameter in model.parameters():
        return parameter.device
    return torch.device("cpu")


def weight_of(model: nn.Module, name: str) -> torch.Tensor:
    """The plain parameter ``name`` of a working copy, detached."""
    return model.get_parameter(name).detach()


def masked_call(model: nn.Module, weights: Mapping[str, torch.Tensor], inputs: torch.Tensor) -> torch.Tensor:
    """Run ``model(inputs)`` with the named parameters replaced by ``weights`` (the rest as they are)."""
    return functional_call(model, dict(weights), (inputs,), strict=False)
