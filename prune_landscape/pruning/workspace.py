"""The private working copy every scorer runs on, and masked forward passes through it.

Scoring on a deep copy (made once per :func:`prune` call) is what guarantees that the user's model is left
exactly as found: weights bit for bit, train/eval mode, ``.grad``, hooks, BatchNorm statistics,
parametrizations and tied parameters.

The copy remembers how to read the model's output (``output_transform``, see
:func:`prune_landscape.batching.select_output`), so every scorer's :func:`masked_call` feeds tuple and dict
inputs and returns "the" output tensor without knowing the model's conventions. Tied parameters stay tied
in the copy: replacing one name replaces every use (``functional_call`` ties them). The user's own
forward hooks are copied with the model and run while scoring, since they may be part of what the model
computes; a hook with side effects (appending activations to a list) therefore sees the scoring passes.

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
from typing import Any

import torch
from torch import nn
from torch.func import functional_call

from prune_landscape.batching import OutputTransform, select_output
from prune_landscape.modelcopy import plain_copy

__all__ = ["classification_loss", "masked_call", "model_device", "output_of", "weight_of", "working_copy"]

_TRANSFORM_ATTRIBUTE = "_prune_landscape_output_transform"


def working_copy(model: nn.Module, output_transform: OutputTransform | None = None) -> nn.Module:
    """A deep copy with pruning hooks and parametrizations folded into plain parameters, grads off, eval mode.

    Args:
        model: the user's model (never changed).
        output_transform: how :func:`masked_call` reads the copy's output (None: the automatic rule).

    Raises:
        TypeError: if the model cannot be deep-copied (the message says why).
    """
    work = plain_copy(model)
    for parameter in work.parameters():
        parameter.requires_grad_(False)
        parameter.grad = None
    # object.__setattr__: a transform that is itself a module must not become a submodule of the copy.
    object.__setattr__(work, _TRANSFORM_ATTRIBUTE, output_transform)
    return work.eval()


def output_of(model: nn.Module, raw_output: Any) -> torch.Tensor:
    """"The" output tensor of a working copy's raw output (its ``output_transform`` or the automatic rule)."""
    return select_output(raw_output, getattr(model, _TRANSFORM_ATTRIBUTE, None))


def model_device(model: nn.Module) -> torch.device:
    """Device of the first parameter (CPU for a parameterless model)."""
    for parameter in model.parameters():
        return parameter.device
    return torch.device("cpu")


def weight_of(model: nn.Module, name: str) -> torch.Tensor:
    """The plain parameter ``name`` of a working copy, detached."""
    return model.get_parameter(name).detach()


def masked_call(model: nn.Module, weights: Mapping[str, torch.Tensor], inputs: Any) -> torch.Tensor:
    """Run the model with the named parameters replaced by ``weights`` (the rest as they are); "the" output.

    ``inputs``: a tensor, a tuple of positional arguments or a dict of keyword arguments.
    """
    if isinstance(inputs, Mapping):
        raw = functional_call(model, dict(weights), (), dict(inputs), strict=False)
    else:
        raw = functional_call(model, dict(weights), inputs if isinstance(inputs, tuple) else (inputs,), strict=False)
    return output_of(model, raw)


def classification_loss(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy; ``(N, C)`` logits with ``(N,)`` classes, or per-token ``(N, ..., C)`` with ``(N, ...)``.

    Per-token targets equal to -100 are ignored (the HuggingFace convention for padding). For a causal LM
    the targets are compared with the logits position by position: pass targets already shifted by one
    token (or a ``loss_fn``) to score next-token prediction.
    """
    if outputs.dim() > 2 and targets.dim() == outputs.dim() - 1:
        return nn.functional.cross_entropy(outputs.reshape(-1, outputs.shape[-1]), targets.reshape(-1), ignore_index=-100)
    return nn.functional.cross_entropy(outputs, targets)
