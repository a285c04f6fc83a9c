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

import copy
from collections.abc import Mapping

import torch
from torch import nn
from torch.func import functional_call
from torch.nn.utils import parametrize, prune

__all__ = ["masked_call", "model_device", "weight_of", "working_copy"]


def working_copy(model: nn.Module) -> nn.Module:
    """A deep copy with pruning hooks and parametrizations folded into plain parameters, grads off, eval mode.

    Raises:
        TypeError: if the model cannot be deep-copied (the message says why).
    """
    # torch.nn.utils.prune leaves `weight = weight_orig * weight_mask` as a non-leaf attribute, which
    # deepcopy refuses; hand deepcopy detached copies of such tensors through its memo instead.
    memo: dict[int, object] = {}
    for module in model.modules():
        for value in vars(module).values():
            if isinstance(value, torch.Tensor) and not value.is_leaf:
                memo[id(value)] = value.detach().clone()
    try:
        work = copy.deepcopy(model, memo)
    except Exception as error:  # noqa: BLE001 - re-raised with the reason
        raise TypeError(
            f"pruning scores are computed on a private copy of the model, but copy.deepcopy failed for "
            f"{type(model).__name__}: {error}"
        ) from error
    for module in work.modules():
        for hook in list(module._forward_pre_hooks.values()):
            if isinstance(hook, prune.BasePruningMethod):
                prune.remove(module, hook._tensor_name)
        if parametrize.is_parametrized(module):
            for attr in list(module.parametrizations):
                parametrize.remove_parametrizations(module, attr, leave_parametrized=True)
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
