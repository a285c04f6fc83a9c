"""How a pass feeds a model and reads "the" output, shared by the structure analysis and the final-layer pass.

* :func:`run_model`: ``model(x)``, ``model(*args)`` for a tuple or list, ``model(**kwargs)`` for a dict;
* :func:`default_output`: the output tensor of a raw output (tensor, tuple, dict, HF ``ModelOutput``), the
  one owner of that rule (:func:`prune_landscape.batching.select_output` is its strict level);
* :func:`output_tensors`: every floating tensor of a raw output (the auxiliary outputs too);
* :func:`shadow_copy`: a copy of a model that shares its tensors, in eval mode, for passes that must not
  touch the user's model (its mode, hooks or parametrizations).

Example:
    >>> import torch
    >>> from prune_landscape.tracing.model_io import default_output
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


def default_output(raw: Any, *, strict: bool = False) -> torch.Tensor:
    """The output tensor of a raw model output: the one owner of the "which tensor is the output" rule.

    Both levels share the first two steps: a tensor is itself; a tensor under ``logits`` (a dict key or an
    HF ``ModelOutput`` field; with ``strict`` also a ``.logits`` attribute, e.g. a named tuple) wins. Then:

    * lenient (default; the structure and forward-order passes): the first floating tensor of a dict's
      values or a tuple/list, depth first. These passes run inside ``prune()`` even for data-free methods
      on a model the user has not described, and only need *a* tensor downstream of the head, so a model
      returning ``{"out": x, "aux": y}`` must not fail there.
    * strict (:func:`prune_landscape.batching.select_output`, i.e. every loss a pruner or probe computes):
      a dict must hold exactly one tensor and a tuple/list's first element must be a tensor (whatever its
      dtype); anything else raises, asking for ``output_transform``, because silently training or scoring
      on a dict's first tensor (an auxiliary head) would give a wrong number, not an error.

    The two cannot be one rule without a behaviour change in one of the two callers: a dict holding several
    tensors is an answer for the lenient level and an error for the strict one (so are a non-floating first
    tuple element and a nested first element).

    Raises:
        ValueError: when no tensor can be found (or, with ``strict``, when the choice is ambiguous).
    """
    if isinstance(raw, torch.Tensor):
        return raw
    if isinstance(raw, Mapping):
        logits = raw.get("logits")
    else:  # the lenient level never read attributes: a named tuple's first floating field stays its answer
        logits = getattr(raw, "logits", None) if strict else None
    if isinstance(logits, torch.Tensor):
        return logits
    return _strict_output(raw) if strict else _first_floating(raw)


def _first_floating(raw: Any) -> torch.Tensor:
    if isinstance(raw, Mapping):
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


def _strict_output(raw: Any) -> torch.Tensor:
    if isinstance(raw, Mapping):
        tensors = [k for k, v in raw.items() if isinstance(v, torch.Tensor)]
        if len(tensors) == 1:
            return raw[tensors[0]]
        raise ValueError(
            f"the model returns a dict with tensors {tensors} and no 'logits': pass "
            f"output_transform=lambda out: out[{tensors[0]!r}] (or the key of the output to use)"
        )
    if isinstance(raw, (tuple, list)) and raw and isinstance(raw[0], torch.Tensor):
        return raw[0]
    raise ValueError(
        f"cannot pick the output tensor from a {type(raw).__name__}: pass output_transform=..., a function "
        "from the model's output to the one tensor to use"
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
