"""How a pass feeds a model and reads "the" output, shared by the structure analysis and the final-layer pass.

* :func:`run_model`: ``model(x)``, ``model(*args)`` for a tuple or list, ``model(**kwargs)`` for a dict;
* :func:`default_output`: the output tensor of a raw output (tensor, tuple, dict, HF ``ModelOutput``);
* :func:`output_tensors`: every floating tensor of a raw output (the auxiliary outputs too);
* :func:`shadow_copy`: a copy of a model that shares its tensors, in eval mode, for passes that must not
  touch the user's model (its mode, hooks or parametrizations).

Example:
    >>> import torch
    >>> from prune_landscape.model_io import default_output
    >>> default_output({"loss": torch.zeros(()), "logits": torch.ones(2)}).tolist()
    [1.0, 1.0]
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

__all__ = ["default_output", "output_tensors", "run_model", "shadow_copy"]


def run_model(model: nn.Module, example: Any) -> Any:
    """Call ``model`` on ``example``: a dict as keyword arguments, a tuple or list as positional ones."""
    if isinstance(example, Mapping):
        return model(**example)
    if isinstance(example, (tuple, list)):
        return model(*example)
    return model(example)


def output_tensors(raw: Any) -> list[torch.Tensor]:
    """Every floating tensor in a raw output (tensors, tuples, lists, dicts, HF ModelOutputs)."""
    if isinstance(raw, torch.Tensor):
        return [raw] if raw.is_floating_point() else []
    if isinstance(raw, Mapping):
        return [t for v in raw.values() for t in output_tensors(v)]
    if isinstance(raw, (tuple, list)):
        return [t for v in raw for t in output_tensors(v)]
    return []


def default_output(raw: Any) -> torch.Tensor:
    """The output tensor of a raw model output: a tensor itself; ``logits`` of a dict or HF ModelOutput,
    else its first tensor value; the first element of a tuple or list (recursively).

    Raises:
        ValueError: when no floating tensor can be found.
    """
    if isinstance(raw, torch.Tensor):
        return raw
    if isinstance(raw, Mapping):
        if "logits" in raw and isinstance(raw["logits"], torch.Tensor):
            return raw["logits"]
        values = list(raw.values())
    elif isinstance(raw, (tuple, list)):
        values = list(raw)
    else:
        values = []
    for value in values:
        if isinstance(value, torch.Tensor) and value.is_floating_point():
            return value
        if isinstance(value, (tuple, list, Mapping)):
            try:
                return default_output(value)
            except ValueError:
                continue
    raise ValueError(
        f"cannot find the output tensor in a {type(raw).__name__}; pass output_transform= "
        f"(a function from the model's output to one tensor), e.g. lambda out: out['logits']"
    )


def shadow_copy(model: nn.Module) -> nn.Module:
    """A copy of ``model`` sharing its tensors (nothing is copied), in eval mode.

    The copy's modules, hook dicts and parametrization lists are its own, so a pass may remove hooks,
    replace parameters or change modes on it without the user's model seeing any of it. Tensors are shared:
    a pass must never write into them.
    """
    memo: dict[int, Any] = {}
    for tensor in list(model.parameters()) + list(model.buffers()):
        memo[id(tensor)] = tensor
    for module in model.modules():  # plain tensor attributes (prune's ``weight = orig * mask``) are shared too
        for value in module.__dict__.values():
            if isinstance(value, torch.Tensor):
                memo[id(value)] = value
    shadow = copy.deepcopy(model, memo)
    shadow.eval()
    return shadow
