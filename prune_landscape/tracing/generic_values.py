"""Generic values for the dependence pass (:mod:`prune_landscape.dependence`): the shadow model with every
parameter replaced by generic values (pruned entries exact zeros), fresh BatchNorm statistics, and generic
inputs (random floats, random token ids; dual tensors with random tangents for forward-mode AD).

In float64 (small models) the generic weights are fresh random draws; in float32 (large models, where a
random draw of every parameter would cost as much as a forward pass) they are the model's own weights with
exact zeros replaced by random draws. Either way each row is scaled to unit norm (in float32 through a
per-unit scale applied to the layer's output), vectors (norm scales, biases) are drawn in [0.5, 1).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.autograd.forward_ad as fwAD  # noqa: N812
from torch import nn
from torch.nn.utils import parametrize

from prune_landscape.layers import PrunableWeight, current_tensor
from prune_landscape.masks.mechanisms import drop_prune_hooks, pruned_attrs, replace_with_plain
from prune_landscape.tracing.model_io import shadow_copy

__all__ = ["GenericShadow", "dual_inputs", "generic_inputs", "generic_shadow", "generic_tensor", "row_norms"]


@dataclass(frozen=True)
class GenericShadow:
    """A shadow of the model holding generic values.

    Attributes:
        module: the shadow (shares no writable state with the user's model).
        tracked: id(generic weight tensor) -> (weight name, weight kind), for every prunable weight.
        output_scale: id(generic weight tensor) -> per-unit scale of its layer's output (float32 path).
        soft: ids of masked embedding tables (read as generic mixtures of rows).
    """

    module: nn.Module
    tracked: dict[int, tuple[str, str]]
    output_scale: dict[int, torch.Tensor]
    soft: set[int]


def row_norms(weights: torch.Tensor, unit_axis: int) -> torch.Tensor:
    """Euclidean norm of each unit's weights. Units along axis 0: a norm over contiguous rows. Along another
    axis (HF Conv1D, transposed convs): squares summed across rows, ~5x faster than a strided norm."""
    if unit_axis == 0:
        return torch.linalg.vector_norm(weights.reshape(weights.shape[0], -1), dim=1)
    return weights.square().sum(dim=[axis for axis in range(weights.dim()) if axis != unit_axis]).sqrt()


def generic_tensor(tensor: torch.Tensor, mask: torch.Tensor | None, unit_axis: int, dtype: torch.dtype,
                   generator: torch.Generator, embedding: bool,
                   from_model: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Generic non-zero values of ``tensor``'s shape, zero where ``mask`` is False, each row scaled to its
    kept fan-in so activations stay O(1) (see the module docstring for ``from_model``); with
    ``from_model`` the per-unit scale is returned for the layer's output instead of applied."""
    if from_model and tensor.dim() > 1:
        return _from_model(tensor, mask, unit_axis, dtype, generator, embedding)
    return _random(tensor, mask, unit_axis, dtype, generator, embedding)


def _from_model(tensor: torch.Tensor, mask: torch.Tensor | None, unit_axis: int, dtype: torch.dtype,
                generator: torch.Generator, embedding: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The model's own weight (exact zeros replaced by draws, masked entries 0) and its per-unit scale."""
    values = tensor.detach().to(dtype)
    if mask is None and int(torch.count_nonzero(values)) < values.numel():
        nonzero = values != 0
        scale = float(values[nonzero].abs().mean()) if bool(nonzero.any()) else 1.0
        values = torch.where(nonzero, values, torch.randn(values.shape, generator=generator, dtype=dtype,
                                                         device=values.device) * scale)
    weights = values if mask is None else torch.where(mask.to(values.device), values, 0.0)
    if embedding:
        return weights, None
    # Rows rescaled to unit norm, as the random draws below: the model's directions, a controlled scale
    # (random-init weights with BatchNorm statistics of 0 and 1 would otherwise blow activations up).
    # The scale is returned, to be applied to the layer's output (cheaper than rewriting the weight).
    norms = row_norms(weights, unit_axis)
    empty = norms == 0
    if mask is not None and bool(empty.any()):
        # Kept entries that are all exactly 0 in a row (a zero-initialised head): random values instead.
        kept_rows = mask.movedim(unit_axis, 0).reshape(mask.shape[unit_axis], -1).any(dim=1).to(empty.device)
        if bool((empty & kept_rows).any()):
            fill = torch.randn(weights.shape, generator=generator, dtype=dtype, device=weights.device)
            row_shape = [1] * weights.dim()
            row_shape[unit_axis] = -1
            weights = torch.where((empty & kept_rows).reshape(row_shape) & mask.to(fill.device), fill, weights)
            norms = row_norms(weights, unit_axis)
    # A row with no kept weight outputs its bias alone: leave it unscaled (1/0 would turn it into NaN).
    return weights, torch.where(norms > 0, norms.reciprocal(), torch.ones_like(norms))


def _random(tensor: torch.Tensor, mask: torch.Tensor | None, unit_axis: int, dtype: torch.dtype,
            generator: torch.Generator, embedding: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Fresh draws, masked entries 0, rows scaled to their kept fan-in (the scale applied here)."""
    values = torch.randn(tensor.shape, generator=generator, dtype=dtype, device=tensor.device)
    if tensor.dim() <= 1:
        # Norm scales, biases: non-zero and below one, so activations stay O(1) through deep stacks and
        # saturating functions (sigmoid, GELU's tail) are not pushed to exact constants.
        return torch.rand(tensor.shape, generator=generator, dtype=dtype, device=tensor.device).mul_(0.5).add_(0.5), None
    # Kept entries must be non-zero: a randn draw of exactly 0 has probability ~1e-8 per entry in float32.
    values[values == 0] = 1.0
    if embedding:
        return (values if mask is None else values * mask.to(device=values.device, dtype=dtype)), None
    if mask is None:
        fan_in = tensor.numel() // max(1, tensor.shape[unit_axis])
        return values.mul_(1.0 / math.sqrt(max(1, fan_in))), None
    # Each row scaled to its own kept fan-in: an input-dependent signal on a sparse path keeps its size
    # instead of shrinking until a bias absorbs it in floating point.
    mask = mask.to(device=values.device)
    kept = mask.movedim(unit_axis, 0).reshape(mask.shape[unit_axis], -1).sum(dim=1).clamp(min=1)
    shape = [1] * mask.dim()
    shape[unit_axis] = -1
    return values.mul_(mask.to(dtype)).mul_(kept.to(dtype).rsqrt().reshape(shape)), None


def plain_tensors(shadow: nn.Module) -> list[tuple[nn.Module, str, str, torch.Tensor]]:
    """``(module, module name, attr, current value)`` of every floating tensor attribute a forward reads,
    with pruning hooks dropped in the shadow (values read first, through :func:`layers.current_tensor`;
    the prune and parametrization details are :mod:`prune_landscape.masks.mechanisms`')."""
    found = []
    for module_name, module in shadow.named_modules():
        drop_prune_hooks(module)
        pruned = pruned_attrs(module)
        for attr in pruned:
            found.append((module, module_name, attr, current_tensor(module, attr)))
        if parametrize.is_parametrized(module):
            for attr in list(module.parametrizations):
                found.append((module, module_name, attr, current_tensor(module, attr)))
        for attr, tensor in module._parameters.items():
            if tensor is not None and attr not in {f"{p}_orig" for p in pruned} and ".parametrizations." not in f".{module_name}.":
                if type(module).__name__ != "ParametrizationList":
                    found.append((module, module_name, attr, tensor))
    return found


def generic_inputs(example: Any, dtype: torch.dtype, vocab: int | None, generator: torch.Generator, top: bool = True,
                    key: str | None = None, position: int | None = None) -> Any:
    if isinstance(example, torch.Tensor):
        if example.is_floating_point():
            return torch.randn(example.shape, generator=generator, dtype=dtype, device=example.device)
        is_ids = (key is not None and key.endswith("input_ids")) or (key is None and position == 0)
        if is_ids and vocab is not None and example.dtype in (torch.int64, torch.int32):
            return torch.randint(0, vocab, example.shape, generator=generator, device=example.device, dtype=example.dtype)
        return example
    if isinstance(example, Mapping):
        return {k: generic_inputs(v, dtype, vocab, generator, False, key=str(k)) for k, v in example.items()}
    if isinstance(example, (tuple, list)):
        return type(example)(generic_inputs(v, dtype, vocab, generator, False, position=i) for i, v in enumerate(example))
    return example


def dual_inputs(example: Any, generator: torch.Generator) -> tuple[Any, set[int]]:
    """Float inputs as dual tensors with random tangents; the storages of integer (token-id) inputs."""
    storages: set[int] = set()

    def visit(value: Any) -> Any:
        if isinstance(value, torch.Tensor):
            if value.is_floating_point():
                tangent = torch.randn(value.shape, generator=generator, dtype=value.dtype, device=value.device)
                return fwAD.make_dual(value, tangent)
            storages.add(value.untyped_storage().data_ptr())
            return value
        if isinstance(value, Mapping):
            return {k: visit(v) for k, v in value.items()}
        if isinstance(value, (tuple, list)):
            return type(value)(visit(v) for v in value)
        return value

    return visit(example), storages


def generic_shadow(model: nn.Module, weights: list[PrunableWeight], masks: Mapping[str, torch.Tensor],
                   dtype: torch.dtype, generator: torch.Generator) -> GenericShadow:
    """A shadow of ``model`` with generic parameters (tied tensors stay tied) and fresh BatchNorm statistics."""
    shadow = shadow_copy(model)
    by_owner = {owner: weight for weight in weights for owner in (weight.name, *weight.aliases)}
    result = GenericShadow(shadow, {}, {}, set())
    generic_of: dict[int, torch.Tensor] = {}  # raw tensor id -> generic value (ties stay ties)
    for module, module_name, attr, value in plain_tensors(shadow):
        if not value.is_floating_point():
            continue
        weight = by_owner.get(f"{module_name}.{attr}" if module_name else attr)
        key = id(value) if weight is None else id(weight)
        if key not in generic_of:
            generic_of[key] = _generic_parameter(result, module, value, weight, masks, dtype, generator)
        replace_with_plain(module, attr, generic_of[key])
    _fresh_buffers(shadow, dtype, generator)
    return result


def _generic_parameter(result: GenericShadow, module: nn.Module, value: torch.Tensor, weight: PrunableWeight | None,
                       masks: Mapping[str, torch.Tensor], dtype: torch.dtype,
                       generator: torch.Generator) -> nn.Parameter:
    """The generic value of one parameter; a prunable weight is entered in ``result``'s maps."""
    mask = masks.get(weight.name) if weight is not None else None
    is_embedding = isinstance(module, (nn.Embedding, nn.EmbeddingBag))
    axis = weight.unit_axis if weight is not None else 0
    values, unit_scale = generic_tensor(value, mask, axis, dtype, generator, is_embedding,
                                        from_model=dtype != torch.float64)
    if unit_scale is not None and (weight is None or weight.kind not in ("linear", "conv")):
        # Only F.linear / conv / addmm outputs are seen by the recorder; scale the weight itself.
        shape = [1] * values.dim()
        shape[axis] = -1
        values, unit_scale = values * unit_scale.reshape(shape), None
    generic = nn.Parameter(values, requires_grad=False)
    if unit_scale is not None:
        result.output_scale[id(generic)] = unit_scale
    if weight is not None:
        result.tracked[id(generic)] = (weight.name, weight.kind)
        if is_embedding and mask is not None and not bool(mask.all()):
            result.soft.add(id(generic))
    return generic


def _fresh_buffers(shadow: nn.Module, dtype: torch.dtype, generator: torch.Generator) -> None:
    """Floating buffers in ``dtype``; BatchNorm statistics drawn afresh (trained ones can scale generic
    activations by orders of magnitude per layer)."""
    for module in shadow.modules():
        for name, buffer in list(module._buffers.items()):
            if buffer is None or not buffer.is_floating_point():
                continue
            if isinstance(module, nn.modules.batchnorm._NormBase) and name in ("running_mean", "running_var"):
                fresh = torch.rand(buffer.shape, generator=generator, dtype=dtype, device=buffer.device)
                module._buffers[name] = fresh.add_(1.0) if name == "running_var" else fresh.sub_(0.5).mul_(0.2)
            else:
                module._buffers[name] = buffer.to(dtype)
        if isinstance(module, nn.RNNBase):
            module._init_flat_weights()
