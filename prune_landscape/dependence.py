"""The generic-values dependence pass behind :func:`~prune_landscape.structure.analyze_structure`.

What it computes, per output unit of every prunable weight (see the semantics table in structure.py):

* ``from_input``: does the unit's value depend on the model input? Two forward passes (A and B) run
  through the model's *real modules* on two independent generic inputs; the unit depends on the input iff
  its value differs between them at some position (batch, token, pixel). Units are read along the
  *feature* axis of the layer's output (the last axis for Linear / HF Conv1D / embeddings, axis 1 for
  convolutions), never along tokens.
* ``to_output``: does the output depend on the unit? One backward pass of a generic random cotangent of
  the output from pass A; the unit reaches the output iff the gradient arriving at it is non-zero at some
  position (absolute values, so softmax's zero-sum gradients over keys cannot cancel).

"Generic" means every parameter and input is replaced by random values (the mask respected: pruned
entries are exact zeros, kept entries random and non-zero), so an exact zero can only come from the
structure, never from a coincidence of values. Ops that hide paths for *particular* values are made
path-preserving while the pass runs (a TorchFunctionMode on a shallow copy of the model): ReLU becomes a
leaky ReLU, ReLU6/Hardtanh a leaky clamp, Hardsigmoid a sigmoid, Hardswish x*sigmoid(x), max-pooling
average-pooling; saturating functions (sigmoid, tanh, SiLU, GELU, softplus, Mish, ELU) get ``+ 0.01 x``,
which keeps their zeros and makes their derivative non-zero everywhere. Token-id inputs get random ids; an embedding whose table is masked adds generic noise
times a generic mixture of each column to its lookup, so a kept entry is seen whatever ids were drawn.

In float64 (small models) the generic weights are fresh random draws; in float32 (large models, where a
random draw of every parameter would cost as much as a forward pass) they are the model's own weights with
exact zeros replaced by random draws (random-init and trained weights are generic in this sense). Either
way each row is scaled to unit norm, vectors (norm scales, biases) are drawn in [0.5, 1) and BatchNorm
statistics are drawn afresh, so activations stay O(1) and no saturating function is pushed to a constant.

"Depends on the input" is read from forward-mode AD tangents (one pass that also records the graph for
the backward pass); tangents are never added to constants, so a small dependence cannot be absorbed by a
bias in floating point. For a model with an op that has no forward-mode rule (the oneDNN LSTM kernel),
it falls back to comparing two forward passes on independent generic inputs (noted in the result).

The user's model is never written to: the pass runs on a structural copy that shares no writable state
(parameters are replaced, parametrizations and torch.nn.utils.prune hooks are removed in the copy only).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.autograd.forward_ad as fwAD  # noqa: N812
from torch import nn
from torch.nn import functional as F  # noqa: N812
from torch.nn.utils import parametrize, prune
from torch.overrides import TorchFunctionMode

from prune_landscape.generic_ops import (
    CONV_NAMES,
    SUBSTITUTES,
    attention_math,
    batch_norm_dual,
    layer_norm_dual,
    mha_forward,
)
from prune_landscape.layers import PrunableWeight, current_tensor

__all__ = ["CallRecord", "DependencePass", "default_output", "run_dependence"]



@dataclass
class CallRecord:
    """One call of a prunable weight in the forward pass.

    Attributes:
        weight: canonical weight name.
        kind: ``"linear"`` (F.linear, HF Conv1D's addmm), ``"conv"``, ``"embedding"`` or ``"recurrent"``.
        index: position of the call in the forward order.
        from_input: per unit, max |A - B| over positions.
        to_output: per unit, max |gradient| over positions, from every output tensor.
        to_selected: the same from "the" output only (the one ``output_transform`` picks).
        input_change: per input feature of a linear/conv call, max |A - B| (None for others).
    """

    weight: str
    kind: str
    index: int
    from_input: torch.Tensor
    to_output: torch.Tensor | None = None
    to_selected: torch.Tensor | None = None
    input_change: torch.Tensor | None = None


@dataclass
class DependencePass:
    """Everything the structure analysis reads from the two passes."""

    calls: list[CallRecord]
    ran_modules: set[str]
    call_order: tuple[tuple[str, str], ...]
    dtype: torch.dtype
    output_shape: tuple[int, ...]
    notes: list[str] = field(default_factory=list)


def _output_tensors(raw: Any) -> list[torch.Tensor]:
    """Every floating tensor in a raw output (tensors, tuples, lists, dicts, HF ModelOutputs)."""
    if isinstance(raw, torch.Tensor):
        return [raw] if raw.is_floating_point() else []
    if isinstance(raw, Mapping):
        return [t for v in raw.values() for t in _output_tensors(v)]
    if isinstance(raw, (tuple, list)):
        return [t for v in raw for t in _output_tensors(v)]
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


def _feature_reduce(tensor: torch.Tensor, axis: int) -> torch.Tensor:
    """max |tensor| over every axis but ``axis`` -> one value per feature (one pass, no |.| copy)."""
    moved = tensor.detach().movedim(axis, -1)
    flat = moved.reshape(-1, moved.shape[-1])
    if not flat.numel():
        return flat.sum(0)
    low, high = torch.aminmax(flat, dim=0)
    return torch.maximum(high, low.neg())


_ADD, _SUB, _RSUB, _MUL, _DIV = "add", "sub", "rsub", "mul", "div"
_ARITHMETIC = {
    "__add__": _ADD, "__radd__": _ADD, "add": _ADD, "__sub__": _SUB, "sub": _SUB, "subtract": _SUB,
    "__rsub__": _RSUB, "rsub": _RSUB, "__mul__": _MUL, "__rmul__": _MUL, "mul": _MUL, "multiply": _MUL,
    "__truediv__": _DIV, "div": _DIV, "divide": _DIV, "true_divide": _DIV,
}


def _dual_arithmetic(func: Callable, name: str, args: tuple) -> torch.Tensor | None:
    """``a op b`` with exactly one dual operand, its tangent computed directly; None when not that case.

    Forward-mode AD gives the constant operand a zero tangent of the "efficient zero" kind, whose kernels
    run through Python reference implementations: about 1 ms per op, for every bias, norm scale and scalar
    a forward multiplies or adds. The value is computed by ``func`` on the primal (so the backward pass
    sees it), the tangent is +-t, t * b or t / b.
    """
    tangents = [fwAD.unpack_dual(a).tangent if isinstance(a, torch.Tensor) else None for a in args]
    if (tangents[0] is None) == (tangents[1] is None):
        return None
    side = 0 if tangents[0] is not None else 1
    kind, other, tangent = _ARITHMETIC[name], args[1 - side], tangents[side]
    if kind == _DIV and side == 1:
        return None
    primals = list(args)
    primals[side] = fwAD.unpack_dual(args[side]).primal
    out = func(*primals)
    with torch.no_grad():
        if kind in (_MUL, _DIV):
            change = tangent * other if kind == _MUL else tangent / other
        else:
            negate = (kind == _SUB and side == 1) or (kind == _RSUB and side == 0)
            change = -tangent if negate else tangent
        if change.shape != out.shape or change.dtype != out.dtype:
            change = change.expand(out.shape).to(out.dtype, copy=True)
    return fwAD.make_dual(out, change)


# ---------------------------------------------------------------------------------------------------
# The interception mode
# ---------------------------------------------------------------------------------------------------


class _Recorder(TorchFunctionMode):
    """Swaps path-hiding ops and records every call of a tracked weight (by tensor identity)."""

    def __init__(self, tracked: Mapping[int, tuple[str, str]], soft: set[int], generator: torch.Generator,
                 reference: list[tuple[torch.Tensor, torch.Tensor | None]] | None, grad_leaf: torch.Tensor | None,
                 dual: bool = False, id_storages: set[int] | None = None):
        super().__init__()
        self.dual = dual  # forward-mode AD: "depends on the input" is a non-zero tangent
        self.output_scale: Mapping[int, torch.Tensor] = {}
        self.id_storages = id_storages or set()  # storages of the token-id inputs (dual mode)
        self.tracked = tracked  # id(generic tensor) -> (weight name, home kind)
        self.soft = soft  # ids of masked embedding tables: read as generic mixtures of rows
        self.generator = generator
        self.reference = reference  # pass B's (output, input) per call, consumed by pass A
        self.grad_leaf = grad_leaf  # pass A: a zero scalar that requires grad (graph anchor)
        self.stored: list[tuple[torch.Tensor, torch.Tensor | None]] = []
        self.calls: list[CallRecord] = []
        self.phase = "selected"
        self.mixtures: dict[int, torch.Tensor] = {}

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = getattr(func, "__name__", "")
        if name == "multi_head_attention_forward":
            with self:  # our re-statement has no torch-function guard, so its F.linear calls are seen
                return mha_forward(*args, **kwargs)
        substitute = SUBSTITUTES.get(name)
        if substitute is not None and args and isinstance(args[0], torch.Tensor) and args[0].is_floating_point():
            return substitute(*args, **kwargs)
        if self.dual and name == "scaled_dot_product_attention":
            return attention_math(*args, **kwargs)
        if self.dual and name == "layer_norm":
            return layer_norm_dual(*args, **kwargs)
        if self.dual and name == "batch_norm":
            out = batch_norm_dual(*args, **kwargs)
            if out is not None:
                return out
        if self.dual and name in _ARITHMETIC and len(args) == 2 and not kwargs:
            out = _dual_arithmetic(func, name, args)
            if out is not None:
                return out
        if self.dual and name in ("embedding", "embedding_bag"):
            return self._dual_embedding(func, name, args, kwargs)
        weight, kind, x = self._tracked_weight(name, args, kwargs)
        if weight is None:
            return func(*args, **kwargs)
        axis = 1 if kind == "conv" else -1
        scale = self.output_scale.get(id(weight)) if kind != "embedding" else None
        if kind == "embedding" and id(weight) in self.soft:
            out = self._soft_embedding(name, args, kwargs, weight)
        elif self.dual and kind in ("linear", "conv"):
            out = self._dual_linear(func, name, args, kwargs, scale, axis)
        elif scale is not None:
            out = self._scaled(func, name, args, kwargs, scale, axis)
        else:
            out = func(*args, **kwargs)
        return self._record(self.tracked[id(weight)][0], kind, out, x, axis)

    def _tracked_weight(self, name: str, args: tuple, kwargs: dict) -> tuple[Any, str, Any]:
        if name == "linear" or name in CONV_NAMES or name in ("embedding", "embedding_bag"):
            weight = args[1] if len(args) > 1 else kwargs.get("weight")
            if isinstance(weight, torch.Tensor) and id(weight) in self.tracked:
                kind = "linear" if name == "linear" else ("conv" if name in CONV_NAMES else "embedding")
                return weight, kind, args[0] if kind != "embedding" else None
        elif name == "addmm" and len(args) > 2:  # HF Conv1D: addmm(bias, x, weight)
            weight = args[2]
            if isinstance(weight, torch.Tensor) and id(weight) in self.tracked:
                return weight, "linear", args[1]
        return None, "", None

    @classmethod
    def _dual_linear(cls, func: Callable, name: str, args: tuple, kwargs: dict, scale: torch.Tensor | None,
                     axis: int) -> torch.Tensor:
        """A linear/conv call on a dual input, its tangent computed as one product ``W t`` (scaled like the
        output, no bias). Forward-mode AD would also multiply by the weight's (zero) tangent: one more
        product of the layer's size."""
        position = 1 if name == "addmm" else 0
        primal, tangent = fwAD.unpack_dual(args[position])
        args = list(args)
        args[position] = primal
        out = cls._scaled(func, name, args, kwargs, scale, axis) if scale is not None else func(*args, **kwargs)
        if tangent is None:
            return out
        with torch.no_grad():
            if name == "addmm":
                change = torch.mm(tangent, args[2]) * kwargs.get("alpha", 1)
            else:
                args[position], kwargs = tangent, dict(kwargs)
                if len(args) > 2:
                    args[2] = None
                else:
                    kwargs["bias"] = None
                change = func(*args, **kwargs)
            if scale is not None:
                shape = [1] * change.dim()
                shape[axis] = -1
                change = change * scale.reshape(shape)
        return fwAD.make_dual(out, change)

    @staticmethod
    def _scaled(func: Callable, name: str, args: tuple, kwargs: dict, scale: torch.Tensor, axis: int) -> torch.Tensor:
        """``(W x) * scale + b``: the weight's rows at unit norm, the bias left as it is (a scaled bias could
        push a softmax or a gate into exact saturation)."""
        args, kwargs = list(args), dict(kwargs)
        if name == "addmm":
            bias = args[0]
            out = torch.mm(args[1], args[2])
        else:
            if len(args) > 2:
                bias, args[2] = args[2], None
            else:
                bias = kwargs.pop("bias", None)
                kwargs["bias"] = None
            out = func(*args, **kwargs)
        shape = [1] * out.dim()
        shape[axis] = -1
        out = out * scale.reshape(shape)
        return out if bias is None else out + (bias.reshape(shape) if axis == 1 else bias)

    def _dual_embedding(self, func: Callable, name: str, args: tuple, kwargs: dict) -> torch.Tensor:
        """A lookup of the input's token ids gets the tangent ``noise * c`` (``c`` as in
        :meth:`_soft_embedding`): a feature then depends on the ids iff its column has a kept entry. Lookups
        of other ids (positions, token types) are constants."""
        ids, weight = args[0], args[1] if len(args) > 1 else kwargs["weight"]
        out = func(*args, **kwargs)
        from_input = isinstance(ids, torch.Tensor) and ids.untyped_storage().data_ptr() in self.id_storages
        if from_input:
            if id(weight) not in self.mixtures:
                mixer = torch.rand(weight.shape[0], generator=self.generator, dtype=weight.dtype, device=weight.device)
                self.mixtures[id(weight)] = (mixer.add_(0.5) @ fwAD.unpack_dual(weight).primal).detach()
            noise = torch.randn(out.shape, generator=self.generator, dtype=out.dtype, device=out.device)
            out = fwAD.make_dual(out, noise * self.mixtures[id(weight)])
        if isinstance(weight, torch.Tensor) and id(weight) in self.tracked:
            return self._record(self.tracked[id(weight)][0], "embedding", out, None, -1)
        return out

    def _soft_embedding(self, name: str, args: tuple, kwargs: dict, weight: torch.Tensor) -> torch.Tensor:
        """The lookup plus ``noise * c``, where ``c[d]`` is a generic mixture of column d (0 iff the column
        is fully pruned): a feature then varies with the input iff some entry of its column is kept,
        whichever ids were drawn, at the cost of one vector-matrix product."""
        plain = (F.embedding if name == "embedding" else F.embedding_bag)(*args, **kwargs)
        if id(weight) not in self.mixtures:
            mixer = torch.rand(weight.shape[0], generator=self.generator, dtype=weight.dtype, device=weight.device)
            self.mixtures[id(weight)] = (mixer.add_(0.5) @ weight).detach()
        noise = torch.randn(plain.shape, generator=self.generator, dtype=plain.dtype, device=plain.device)
        return plain + noise * self.mixtures[id(weight)]

    def _record(self, weight_name: str, kind: str, out: torch.Tensor, x: Any, axis: int) -> torch.Tensor:
        feature_in = x if isinstance(x, torch.Tensor) and x.is_floating_point() and kind in ("linear", "conv") else None
        if self.dual:
            tangent = fwAD.unpack_dual(out).tangent
            record = CallRecord(weight_name, kind, len(self.calls),
                                _feature_reduce(tangent, axis).cpu() if tangent is not None else
                                torch.zeros(out.shape[axis], dtype=out.dtype))
            if feature_in is not None:
                tangent_in = fwAD.unpack_dual(feature_in).tangent
                in_axis = 1 if kind == "conv" else -1
                record.input_change = (_feature_reduce(tangent_in, in_axis).cpu() if tangent_in is not None
                                       else torch.zeros(feature_in.shape[in_axis], dtype=feature_in.dtype))
            return self._watch(record, out, axis)
        index = len(self.calls) if self.reference is not None else len(self.stored)
        if self.reference is None:  # pass B: keep the values for pass A to compare with
            # Copies: the model may later modify these tensors in place (SiLU(inplace=True), ``x += y``).
            self.stored.append((out.detach().clone(), None if feature_in is None else feature_in.detach().clone()))
            return out
        if index >= len(self.reference):
            raise RuntimeError("the forward pass called prunable layers in a different order on a second input")
        ref_out, ref_in = self.reference[index]
        self.reference[index] = (ref_out, None)  # release what is no longer needed
        if ref_out.shape != out.shape:
            raise RuntimeError(f"{weight_name}: output shape {tuple(out.shape)} differs between two generic inputs "
                               f"({tuple(ref_out.shape)}); the model's control flow depends on input values")
        record = CallRecord(weight_name, kind, index, _feature_reduce(out - ref_out, axis).cpu())
        if feature_in is not None and ref_in is not None and ref_in.shape == feature_in.shape:
            record.input_change = _feature_reduce(feature_in - ref_in, 1 if kind == "conv" else -1).cpu()
        self.reference[index] = (None, None)  # type: ignore[assignment]
        return self._watch(record, out, axis)

    def _watch(self, record: CallRecord, out: torch.Tensor, axis: int) -> torch.Tensor:
        """Keep ``record`` and have the backward pass fill its ``to_selected`` / ``to_output``."""
        self.calls.append(record)
        if not out.requires_grad and self.grad_leaf is not None:
            out = out + self.grad_leaf
        if out.requires_grad:
            def hook(grad: torch.Tensor, record: CallRecord = record, axis: int = axis) -> None:
                reduced = _feature_reduce(grad, axis).cpu()
                field_name = "to_selected" if self.phase == "selected" else "to_output"
                previous = getattr(record, field_name)
                setattr(record, field_name, reduced if previous is None else torch.maximum(previous, reduced))

            out.register_hook(hook)
        return out


# ---------------------------------------------------------------------------------------------------
# The shadow model and the generic inputs
# ---------------------------------------------------------------------------------------------------


def _row_norms(weights: torch.Tensor, unit_axis: int) -> torch.Tensor:
    """Euclidean norm of each unit's weights. Units along axis 0: a norm over contiguous rows. Along another
    axis (HF Conv1D, transposed convs): squares summed across rows, ~5x faster than a strided norm."""
    if unit_axis == 0:
        return torch.linalg.vector_norm(weights.reshape(weights.shape[0], -1), dim=1)
    return weights.square().sum(dim=[axis for axis in range(weights.dim()) if axis != unit_axis]).sqrt()


def _generic(tensor: torch.Tensor, mask: torch.Tensor | None, unit_axis: int, dtype: torch.dtype,
             generator: torch.Generator, embedding: bool, from_model: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Generic non-zero values of ``tensor``'s shape, zero where ``mask`` is False, each row scaled to its
    kept fan-in so activations stay O(1) (see the module docstring for ``from_model``); with
    ``from_model`` the per-unit scale is returned for the layer's output instead of applied."""
    if from_model and tensor.dim() > 1:
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
        norms = _row_norms(weights, unit_axis)
        empty = norms == 0
        if mask is not None and bool(empty.any()):
            # Kept entries that are all exactly 0 in a row (a zero-initialised head): random values instead.
            kept_rows = mask.movedim(unit_axis, 0).reshape(mask.shape[unit_axis], -1).any(dim=1).to(empty.device)
            if bool((empty & kept_rows).any()):
                fill = torch.randn(weights.shape, generator=generator, dtype=dtype, device=weights.device)
                row_shape = [1] * weights.dim()
                row_shape[unit_axis] = -1
                weights = torch.where((empty & kept_rows).reshape(row_shape) & mask.to(fill.device), fill, weights)
                norms = _row_norms(weights, unit_axis)
        # A row with no kept weight outputs its bias alone: leave it unscaled (1/0 would turn it into NaN).
        return weights, torch.where(norms > 0, norms.reciprocal(), torch.ones_like(norms))
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


def _build_shadow(model: nn.Module) -> nn.Module:
    """A copy of ``model`` sharing its tensors (nothing is copied), in eval mode, hooks of
    torch.nn.utils.prune and parametrizations removed from the copy only."""
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


def _plain_tensors(shadow: nn.Module) -> list[tuple[nn.Module, str, str, torch.Tensor]]:
    """``(module, module name, attr, current value)`` of every floating tensor attribute a forward reads,
    with pruning hooks and parametrizations unwrapped in the shadow (values computed first)."""
    found = []
    for module_name, module in shadow.named_modules():
        for key, hook in list(module._forward_pre_hooks.items()):
            if isinstance(hook, prune.BasePruningMethod):
                del module._forward_pre_hooks[key]
        pruned = [n[: -len("_orig")] for n in list(module._parameters) if n.endswith("_orig") and f"{n[:-5]}_mask" in module._buffers]
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


def _install(module: nn.Module, attr: str, value: torch.Tensor) -> None:
    """Make ``module.<attr>`` the plain tensor ``value`` in the shadow (the user's model is not touched)."""
    if parametrize.is_parametrized(module, attr):
        del module.parametrizations[attr]
        if len(module.parametrizations) == 0:
            del module._modules["parametrizations"]
            module.__class__ = type(module).__bases__[0]
    if f"{attr}_orig" in module._parameters:
        del module._parameters[f"{attr}_orig"]
        module._buffers.pop(f"{attr}_mask", None)
        module.__dict__.pop(attr, None)
    module._parameters[attr] = value


def _generic_inputs(example: Any, dtype: torch.dtype, vocab: int | None, generator: torch.Generator, top: bool = True,
                    key: str | None = None, position: int | None = None) -> Any:
    if isinstance(example, torch.Tensor):
        if example.is_floating_point():
            return torch.randn(example.shape, generator=generator, dtype=dtype, device=example.device)
        is_ids = (key is not None and key.endswith("input_ids")) or (key is None and position == 0)
        if is_ids and vocab is not None and example.dtype in (torch.int64, torch.int32):
            return torch.randint(0, vocab, example.shape, generator=generator, device=example.device, dtype=example.dtype)
        return example
    if isinstance(example, Mapping):
        return {k: _generic_inputs(v, dtype, vocab, generator, False, key=str(k)) for k, v in example.items()}
    if isinstance(example, (tuple, list)):
        return type(example)(_generic_inputs(v, dtype, vocab, generator, False, position=i) for i, v in enumerate(example))
    return example


def _call(model: nn.Module, example: Any) -> Any:
    if isinstance(example, Mapping):
        return model(**example)
    if isinstance(example, (tuple, list)):
        return model(*example)
    return model(example)


def run_dependence(
    model: nn.Module,
    example: Any,
    weights: list[PrunableWeight],
    masks: Mapping[str, torch.Tensor],
    *,
    output_transform: Callable[[Any], torch.Tensor] | None,
    dtype: torch.dtype,
    seed: int = 0,
) -> DependencePass:
    """Run passes A and B and the backward pass on a shadow of ``model`` (see the module docstring)."""
    device = next(iter(model.parameters())).device
    generator = torch.Generator(device=device).manual_seed(seed)
    cpu_generator = torch.Generator().manual_seed(seed + 1)
    shadow = _build_shadow(model)
    by_owner = {}
    for weight in weights:
        for owner in (weight.name, *weight.aliases):
            by_owner[owner] = weight
    tracked: dict[int, tuple[str, str]] = {}
    output_scale: dict[int, torch.Tensor] = {}  # id(generic weight) -> per-unit scale of its layer's output
    soft: set[int] = set()
    generic_of: dict[int, torch.Tensor] = {}  # raw tensor id -> generic value (ties stay ties)
    for module, module_name, attr, value in _plain_tensors(shadow):
        full = f"{module_name}.{attr}" if module_name else attr
        if not value.is_floating_point():
            continue
        weight = by_owner.get(full)
        key = id(value) if weight is None else id(weight)
        if key not in generic_of:
            mask = masks.get(weight.name) if weight is not None else None
            is_embedding = isinstance(module, (nn.Embedding, nn.EmbeddingBag))
            values, unit_scale = _generic(value, mask, weight.unit_axis if weight is not None else 0, dtype, generator,
                                          is_embedding, from_model=dtype != torch.float64)
            if unit_scale is not None and (weight is None or weight.kind not in ("linear", "conv")):
                # Only F.linear / conv / addmm outputs are seen by the recorder; scale the weight itself.
                shape = [1] * values.dim()
                shape[weight.unit_axis if weight is not None else 0] = -1
                values, unit_scale = values * unit_scale.reshape(shape), None
            generic_of[key] = nn.Parameter(values, requires_grad=False)
            if unit_scale is not None:
                output_scale[id(generic_of[key])] = unit_scale
            if weight is not None:
                tracked[id(generic_of[key])] = (weight.name, weight.kind)
                if is_embedding and mask is not None and not bool(mask.all()):
                    soft.add(id(generic_of[key]))
        _install(module, attr, generic_of[key])
    for module in shadow.modules():
        for name, buffer in list(module._buffers.items()):
            if buffer is None or not buffer.is_floating_point():
                continue
            if isinstance(module, nn.modules.batchnorm._NormBase) and name in ("running_mean", "running_var"):
                # Trained statistics can scale generic activations by orders of magnitude per layer.
                fresh = torch.rand(buffer.shape, generator=generator, dtype=dtype, device=buffer.device)
                module._buffers[name] = fresh.add_(1.0) if name == "running_var" else fresh.sub_(0.5).mul_(0.2)
            else:
                module._buffers[name] = buffer.to(dtype)
        if isinstance(module, nn.RNNBase):
            module._init_flat_weights()

    module_names = {id(m): n for n, m in shadow.named_modules()}
    ran: set[str] = set()
    order: list[tuple[str, str]] = []
    recurrent = {id(m): m for m in shadow.modules() if isinstance(m, nn.RNNBase)}
    rnn_weight = {}
    for weight in weights:
        if weight.kind == "recurrent":
            rnn_weight.setdefault(weight.module, []).append(weight.name)
    state: dict[str, Any] = {}

    def on_forward(module: nn.Module, args: Any, output: Any) -> Any:
        name = module_names.get(id(module), "?")
        ran.add(name)
        if not any(True for _ in module.children()):
            order.append((name, type(module).__name__))
        recorder = state.get("recorder")
        if id(module) in recurrent and recorder is not None:
            sequence = output[0] if isinstance(output, tuple) else output
            tensor = sequence.data if isinstance(sequence, nn.utils.rnn.PackedSequence) else sequence
            recorded = tensor
            for weight_name in rnn_weight.get(name, []):
                recorded = recorder._record(weight_name, "recurrent", recorded, None, -1)
            if recorded is not tensor:
                if isinstance(sequence, nn.utils.rnn.PackedSequence):
                    sequence = sequence._replace(data=recorded)
                else:
                    sequence = recorded
                return (sequence, *output[1:]) if isinstance(output, tuple) else sequence
        return None

    handles = [m.register_forward_hook(on_forward) for m in shadow.modules()]
    vocab_sizes = [m.num_embeddings for m in shadow.modules() if isinstance(m, (nn.Embedding, nn.EmbeddingBag))]
    vocab = min(vocab_sizes) if vocab_sizes else None
    transform = output_transform or default_output
    anchor = torch.zeros((), dtype=dtype, device=device, requires_grad=True)
    notes: list[str] = []
    try:
        try:
            # One pass: forward-mode tangents (depends on the input) and the graph for the backward pass.
            # Tangents are never added to constants, so a small dependence cannot be absorbed by a bias.
            order.clear()
            ran.clear()
            with fwAD.dual_level(), torch.enable_grad():
                inputs, storages = _dual_inputs(_generic_inputs(example, dtype, vocab, cpu_generator, position=0), generator)
                recorder_a = _Recorder(tracked, soft, generator, None, anchor, dual=True, id_storages=storages)
                recorder_a.output_scale = output_scale
                state["recorder"] = recorder_a
                with recorder_a:
                    raw = _call(shadow, inputs)
                    output = transform(raw)
            # Outside the dual level the tangents are gone and the backward pass runs on primal values only.
            with torch.enable_grad():
                _backward(raw, output, recorder_a, generator)
        except (NotImplementedError, RuntimeError) as error:
            if "forward AD" not in str(error) and "forward-mode" not in str(error):
                raise
            # An op without a forward-mode rule (e.g. the oneDNN LSTM kernel): two generic inputs instead.
            notes.append(f"finite differences ({str(error).splitlines()[0][:120]})")
            recorder_b = _Recorder(tracked, soft, generator, None, None)
            recorder_b.output_scale = output_scale
            state["recorder"] = recorder_b
            order.clear()
            ran.clear()
            with torch.no_grad(), recorder_b:
                _call(shadow, _generic_inputs(example, dtype, vocab, cpu_generator, position=0))
            order.clear()
            ran.clear()
            recorder_a = _Recorder(tracked, soft, generator, recorder_b.stored, anchor)
            recorder_a.output_scale = output_scale
            state["recorder"] = recorder_a
            with torch.enable_grad(), recorder_a:
                raw = _call(shadow, _generic_inputs(example, dtype, vocab, cpu_generator, position=0))
                output = transform(raw)
            _backward(raw, output, recorder_a, generator)
    finally:
        for handle in handles:
            handle.remove()
    for record in recorder_a.calls:
        if record.to_selected is None:
            record.to_selected = torch.zeros_like(record.from_input)
        if record.to_output is None:
            record.to_output = record.to_selected.clone()
        else:
            record.to_output = torch.maximum(record.to_output, record.to_selected)
    return DependencePass(recorder_a.calls, ran, tuple(order), dtype, tuple(output.shape), notes)


def _dual_inputs(example: Any, generator: torch.Generator) -> tuple[Any, set[int]]:
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


def _backward(raw: Any, output: Any, recorder: _Recorder, generator: torch.Generator) -> None:
    """Random cotangents: first on "the" output (it decides the final layer), then on every other output
    tensor, so a unit is alive when it reaches any output (an auxiliary head's units are not dead)."""
    if not isinstance(output, torch.Tensor) or not output.is_floating_point():
        raise ValueError(f"output_transform must return a floating tensor, got {type(output).__name__}")
    others = [t for t in _output_tensors(raw) if t is not output and t.requires_grad]
    for phase, targets in (("selected", [output] if output.requires_grad else []), ("other", others)):
        if not targets:
            continue
        recorder.phase = phase
        primals = [fwAD.unpack_dual(t).primal for t in targets]
        cotangents = [torch.randn(t.shape, generator=generator, dtype=t.dtype, device=t.device) for t in primals]
        torch.autograd.backward(primals, cotangents, retain_graph=phase == "selected" and bool(others))
