"""Deep copies of models that carry pruning hooks.

``torch.nn.utils.prune`` leaves ``module.weight = weight_orig * weight_mask`` as a non-leaf attribute after
each forward pass, and ``copy.deepcopy`` refuses non-leaf tensors. Every part of the package that needs a
private copy of a user's model (scoring, probes, the audit) goes through here.

Example:
    >>> import torch
    >>> from torch.nn.utils import prune
    >>> from prune_landscape import models
    >>> net = models.mlp([3, 4, 2]); _ = prune.random_unstructured(net.fc1, "weight", 0.5); _ = net(torch.ones(1, 3))
    >>> twin = plain_copy(net)
    >>> hasattr(twin.fc1, "weight_orig"), torch.equal(twin.fc1.weight, net.fc1.weight)
    (False, True)
"""

from __future__ import annotations

import copy

import torch
from torch import nn
from torch.nn.utils import parametrize, prune

__all__ = ["copy_model", "plain_copy"]


def copy_model(model: nn.Module) -> nn.Module:
    """``copy.deepcopy`` that also works on a model pruned with torch.nn.utils.prune after a forward pass.

    Raises:
        TypeError: if the model cannot be deep-copied, saying why.
    """
    memo: dict[int, object] = {}
    for module in model.modules():
        for value in vars(module).values():
            if isinstance(value, torch.Tensor) and not value.is_leaf:
                memo[id(value)] = value.detach().clone()
    try:
        return copy.deepcopy(model, memo)
    except Exception as error:  # noqa: BLE001 - re-raised with the reason
        raise TypeError(f"expected a model that copy.deepcopy can copy, got {type(model).__name__}: {error}") from error


def plain_copy(model: nn.Module) -> nn.Module:
    """A deep copy whose pruning hooks and parametrizations are folded into plain (zeroed) parameters."""
    twin = copy_model(model)
    for module in twin.modules():
        for hook in list(module._forward_pre_hooks.values()):
            if isinstance(hook, prune.BasePruningMethod):
                prune.remove(module, hook._tensor_name)
        if parametrize.is_parametrized(module):
            for attr in list(module.parametrizations):
                parametrize.remove_parametrizations(module, attr, leave_parametrized=True)
    return twin
