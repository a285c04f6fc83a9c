"""An independent reference for the structure analysis, written apart from prune_landscape.dependence.

Same definition of "alive" (the module docstring of prune_landscape.structure), different machinery:

* a full float64 deep copy of the model (``.double()``), parametrizations baked in with
  ``remove_parametrizations``, every parameter redrawn from this module's own generator and multiplied by
  its mask in place; BatchNorm statistics reset to (0, 1);
* path-hiding functions patched at the ``torch.nn.functional`` attribute level with ``unittest.mock``
  (ReLU -> leaky ReLU of slope 0.3, ReLU6 / Hardtanh -> leaky clamp, Hardsigmoid -> sigmoid, Hardswish ->
  x*sigmoid(x), max-pooling -> average pooling), not through a TorchFunctionMode;
* unit values read by *module* hooks (Linear / Conv / HF Conv1D outputs, MultiheadAttention's packed
  projection recomputed from its inputs, its out_proj from its output), over several inputs: a unit
  depends on the input iff its value differs between inputs at some position. Token inputs cover every
  id of the vocabulary (so a single kept embedding entry is always exercised);
* "reaches an output" from the *weight* gradient of every output tensor under random cotangents: row j
  of a weight gets a non-zero gradient iff unit j's value moves some output (the row's inputs are generic).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Mapping
from typing import Any
from unittest import mock

import torch
from torch import nn
from torch.nn import functional as F  # noqa: N812
from torch.nn.utils import parametrize

_SLOPE = 0.3


def _leaky(x, inplace=False):
    return F.leaky_relu(x, _SLOPE)


def _leaky_clamp(low: float, high: float):
    def clamp(x, *args, **kwargs):
        lo = args[0] if args else kwargs.get("min_val", low)
        hi = args[1] if len(args) > 1 else kwargs.get("max_val", high)
        y = x.clamp(lo, hi)
        return y + _SLOPE * (x - y)

    return clamp


def _avg(pool):
    def substitute(x, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False, return_indices=False):
        return pool(x, kernel_size, stride if stride not in (None, []) else kernel_size, padding, ceil_mode=ceil_mode,
                    count_include_pad=False)

    return substitute


def _patches():
    return [
        mock.patch.object(F, "relu", _leaky),
        mock.patch.object(torch, "relu", _leaky),
        mock.patch.object(F, "relu6", lambda x, inplace=False: _leaky_clamp(0.0, 6.0)(x)),
        mock.patch.object(F, "hardtanh", _leaky_clamp(-1.0, 1.0)),
        mock.patch.object(F, "hardsigmoid", lambda x, inplace=False: torch.sigmoid(x)),
        mock.patch.object(F, "hardswish", lambda x, inplace=False: x * torch.sigmoid(x)),
        mock.patch.object(F, "max_pool1d", _avg(F.avg_pool1d)),
        mock.patch.object(F, "max_pool2d", _avg(F.avg_pool2d)),
        mock.patch.object(F, "max_pool3d", _avg(F.avg_pool3d)),
        mock.patch.object(F, "adaptive_max_pool2d", lambda x, size, return_indices=False: F.adaptive_avg_pool2d(x, size)),
    ]


def _floats(raw: Any) -> list[torch.Tensor]:
    if isinstance(raw, torch.Tensor):
        return [raw] if raw.is_floating_point() else []
    if isinstance(raw, Mapping):
        return [t for v in raw.values() for t in _floats(v)]
    if isinstance(raw, (tuple, list)):
        return [t for v in raw for t in _floats(v)]
    return []


def _inputs(example: Any, vocab: int | None, generator: torch.Generator, count: int) -> list[Any]:
    """``count`` generic inputs shaped like ``example``; token ids cover the vocabulary across them."""

    def draw(value: Any, index: int, key: str | None, position: int | None) -> Any:
        if isinstance(value, torch.Tensor):
            if value.is_floating_point():
                return torch.randn(value.shape, generator=generator, dtype=torch.float64)
            is_ids = (key is not None and key.endswith("input_ids")) or (key is None and position == 0)
            if is_ids and vocab is not None:
                flat = torch.randint(0, vocab, (value.numel(),), generator=generator)
                cover = torch.arange(vocab)[index * value.numel() : (index + 1) * value.numel()]
                flat[: cover.numel()] = cover[torch.randperm(cover.numel(), generator=generator)]
                return flat.reshape(value.shape).to(value.dtype)
            return value
        if isinstance(value, Mapping):
            return {k: draw(v, index, str(k), None) for k, v in value.items()}
        if isinstance(value, (tuple, list)):
            return type(value)(draw(v, index, None, i) for i, v in enumerate(value))
        return value

    if vocab is not None:
        per_input = max(1, sum(t.numel() for t in _floats_or_ints(example)))
        count = max(count, math.ceil(vocab / per_input) + 1)
    return [draw(example, i, None, 0) for i in range(count)]


def _floats_or_ints(example: Any) -> list[torch.Tensor]:
    if isinstance(example, torch.Tensor):
        return [example] if not example.is_floating_point() else []
    if isinstance(example, Mapping):
        return [t for k, v in example.items() if str(k).endswith("input_ids") for t in _floats_or_ints(v)]
    if isinstance(example, (tuple, list)):
        return _floats_or_ints(example[0]) if example else []
    return []


def _call(model: nn.Module, example: Any) -> Any:
    if isinstance(example, Mapping):
        return model(**example)
    if isinstance(example, (tuple, list)):
        return model(*example)
    return model(example)


def _bake(model: nn.Module) -> nn.Module:
    copy_ = copy.deepcopy(model).double().eval()
    for module in list(copy_.modules()):
        if parametrize.is_parametrized(module):
            # Not parametrize.remove_parametrizations: it deletes the property from the parametrized class,
            # which a deep copy shares with the user's model (issue #11, failure class 3).
            with torch.no_grad():
                baked = {attr: getattr(module, attr).detach().clone() for attr in module.parametrizations}
            module.__class__ = type(module).__bases__[0]
            del module._modules["parametrizations"]
            for attr, value in baked.items():
                module.register_parameter(attr, nn.Parameter(value))
    return copy_


def oracle_alive(
    model: nn.Module,
    example: Any,
    masks: Mapping[str, torch.Tensor],
    names: list[str],
    final: str,
    *,
    output_transform: Callable[[Any], torch.Tensor] | None = None,
    seed: int = 1234,
    inputs: int = 3,
) -> dict[str, torch.Tensor]:
    """Per prunable weight name (of ``names``, observed by module hooks): bool alive per unit.

    ``final``'s units are alive iff they depend on the input (as in the analysis).
    """
    del output_transform  # every output tensor counts for "reaches an output"
    generator = torch.Generator().manual_seed(seed)
    net = _bake(model)
    with torch.no_grad():
        for p in net.parameters():
            if p.dim() <= 1:
                p.copy_(torch.rand(p.shape, generator=generator, dtype=p.dtype) * 0.5 + 0.5)
            else:
                p.copy_(torch.randn(p.shape, generator=generator, dtype=p.dtype) / math.sqrt(max(1, p[0].numel())))
        for m in net.modules():
            if isinstance(m, nn.modules.batchnorm._NormBase) and m.running_var is not None:
                m.running_var.fill_(1.0)
                m.running_mean.zero_()
        for name, mask in masks.items():
            owner, _, attr = name.rpartition(".")
            module = net.get_submodule(owner) if owner else net
            tensor = getattr(module, attr)
            # Rescale each row to its kept fan-in, so a sparse path's signal is not absorbed by biases.
            unit_axis = 1 if type(module).__name__ == "Conv1D" else 0
            rows = mask.movedim(unit_axis, 0).reshape(mask.shape[unit_axis], -1)
            full = math.sqrt(rows.shape[1])
            scale = full / rows.sum(dim=1).clamp(min=1).to(tensor.dtype).sqrt()
            shape = [1] * mask.dim()
            shape[unit_axis] = -1
            tensor.mul_(mask.to(tensor.dtype) * scale.reshape(shape))

    # -- where each weight's unit values appear: Conv and HF Conv1D through their module's output;
    # everything called through F.linear (Linear modules, MultiheadAttention's packed and output
    # projections, Swin's qkv) through a patched F.linear that matches the weight by identity.
    readers: dict[str, list[tuple[str, nn.Module, Callable]]] = {}
    linear_names: dict[int, str] = {}
    for name in names:
        owner_name, _, attr = name.rpartition(".")
        owner = net.get_submodule(owner_name) if owner_name else net
        if isinstance(owner, nn.modules.conv._ConvNd) or type(owner).__name__ == "Conv1D":
            readers.setdefault(name, []).append(("post", owner, lambda m, args, out: out))
        else:
            linear_names[id(getattr(owner, attr))] = name
    axis_of = {name: 1 if isinstance(net.get_submodule(name.rpartition(".")[0]), nn.modules.conv._ConvNd) else -1 for name in names}

    values: dict[str, list[torch.Tensor]] = {}

    def install() -> list:
        handles = []
        for name, entries in readers.items():
            for when, module, read in entries:
                if when == "pre":
                    handles.append(module.register_forward_pre_hook(
                        lambda m, args, kwargs, name=name, read=read: values.setdefault(name, []).append(read(m, args, kwargs).detach()),
                        with_kwargs=True))
                else:
                    handles.append(module.register_forward_hook(
                        lambda m, args, out, name=name, read=read: values.setdefault(name, []).append(read(m, args, out).detach().clone())))
        return handles

    vocab_sizes = [m.num_embeddings for m in net.modules() if isinstance(m, (nn.Embedding, nn.EmbeddingBag))]
    examples = _inputs(example, min(vocab_sizes) if vocab_sizes else None, generator, inputs)
    weights = {name: getattr(net.get_submodule(name.rpartition(".")[0]), name.rpartition(".")[2]) for name in names}
    for w in weights.values():
        w.requires_grad_(True)
    per_input: list[dict[str, torch.Tensor]] = []
    reach: dict[str, torch.Tensor] = {}
    real_linear = F.linear

    def recording_linear(x, weight, bias=None):
        out = real_linear(x, weight, bias)
        if id(weight) in linear_names:
            values.setdefault(linear_names[id(weight)], []).append(out.detach().clone())
        return out

    patches = [*_patches(), mock.patch.object(F, "linear", recording_linear)]
    for patch in patches:
        patch.start()
    handles = install()
    try:
        for x in examples:
            values.clear()
            with torch.enable_grad():
                outputs = _floats(_call(net, x))
                total = sum((o * torch.randn(o.shape, generator=generator, dtype=o.dtype)).sum() for o in outputs)
                grads = torch.autograd.grad(total, list(weights.values()), allow_unused=True)
            per_input.append({n: torch.cat([v.movedim(axis_of[n], -1).reshape(-1, v.shape[axis_of[n]]) for v in vs])
                              for n, vs in values.items()})
            for (name, w), g in zip(weights.items(), grads):
                if g is None:
                    continue
                unit_axis = 1 if type(net.get_submodule(name.rpartition(".")[0])).__name__ == "Conv1D" else 0
                rows = g.abs().movedim(unit_axis, 0).reshape(g.shape[unit_axis], -1).amax(dim=1) > 0
                reach[name] = rows if name not in reach else reach[name] | rows
    finally:
        for handle in handles:
            handle.remove()
        for patch in patches:
            patch.stop()

    alive = {}
    for name in names:
        if name not in per_input[0]:
            continue
        base = per_input[0][name]
        depends = torch.zeros(base.shape[1], dtype=torch.bool)
        for other in per_input[1:]:
            if other[name].shape == base.shape:
                depends |= ((other[name] - base).abs().amax(dim=0) > 0)
        reaches = reach.get(name, torch.zeros_like(depends))
        alive[name] = depends if name == final else depends & reaches[: depends.numel()]
    return alive
