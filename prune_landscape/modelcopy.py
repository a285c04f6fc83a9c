"""Deep copies of models that carry pruning hooks, parametrizations or weight/spectral norm.

``torch.nn.utils.prune`` leaves ``module.weight = weight_orig * weight_mask`` as a non-leaf attribute after
each forward pass, and ``copy.deepcopy`` refuses non-leaf tensors. Every part of the package that needs a
private copy of a user's model (scoring, probes, the audit) goes through here.

A trap this module closes: ``torch.nn.utils.parametrize`` swaps a parametrized module's class for a
generated one (``ParametrizedLinear``) that holds the ``weight`` property, and ``copy.deepcopy`` keeps the
*same* class object. Removing a parametrization from the copy deletes that property from the shared
class, which silently breaks the user's model (``.weight`` disappears). :func:`plain_copy` therefore
gives every parametrized module of the copy a private class before folding.

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
from torch.nn.utils import parametrize, remove_spectral_norm, remove_weight_norm
from torch.nn.utils.spectral_norm import SpectralNorm, SpectralNormLoadStateDictPreHook
from torch.nn.utils.weight_norm import WeightNorm

from prune_landscape.masks import make_pruning_permanent

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


def _drop_spectral_norm_load_hook(module: nn.Module, name: str) -> None:
    # remove_spectral_norm misses its load-state-dict hook when torch has wrapped it (_WrappedHook), and the
    # hook would then demand `weight_orig` from every later load_state_dict of the copy.
    for key, hook in list(module._load_state_dict_pre_hooks.items()):
        inner = getattr(hook, "hook", hook)
        if isinstance(inner, SpectralNormLoadStateDictPreHook) and inner.fn.name == name:
            del module._load_state_dict_pre_hooks[key]


def _private_class(module: nn.Module) -> None:
    # A copy of the generated Parametrized* class: removal may delete properties from it (never from the
    # class the user's module still uses). Its base stays the original class, which removal restores.
    shared = type(module)
    namespace = {k: v for k, v in vars(shared).items() if k not in ("__dict__", "__weakref__")}
    module.__class__ = type(shared.__name__, shared.__bases__, namespace)


def plain_copy(model: nn.Module) -> nn.Module:
    """A deep copy whose pruning hooks, parametrizations (weight_norm, spectral_norm, masks, any
    ``torch.nn.utils.parametrize``) and hook-based weight_norm/spectral_norm are folded into plain
    parameters holding the values the forward pass uses. The user's model is never touched.

    Example:
        >>> from torch.nn.utils.parametrizations import weight_norm
        >>> from prune_landscape import models
        >>> net = models.mlp([3, 2]); _ = weight_norm(net.fc1)
        >>> twin = plain_copy(net)
        >>> type(twin.fc1).__name__, hasattr(net.fc1, "weight"), torch.equal(twin.fc1.weight, net.fc1.weight)
        ('Linear', True, True)
    """
    twin = make_pruning_permanent(copy_model(model))
    for module in twin.modules():
        for hook in list(module._forward_pre_hooks.values()):
            if isinstance(hook, WeightNorm):
                remove_weight_norm(module, hook.name)
            elif isinstance(hook, SpectralNorm):
                remove_spectral_norm(module, hook.name)
                _drop_spectral_norm_load_hook(module, hook.name)
        if parametrize.is_parametrized(module):
            _private_class(module)
            for attr in list(module.parametrizations):
                parametrize.remove_parametrizations(module, attr, leave_parametrized=True)
    return twin
