"""The interception mode of the dependence pass (:mod:`prune_landscape.dependence`): it swaps in the ops of
:mod:`prune_landscape.tracing.generic_ops` and records, per call of a prunable weight, how much each unit changes
with the input and (through a gradient hook) how much the output changes with each unit.

Weights are recognised by tensor identity: the pass installs one generic tensor per prunable weight in a
shadow of the model, and ``tracked`` maps its ``id`` to the weight's name.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.autograd.forward_ad as fwAD  # noqa: N812
from torch.nn import functional as F  # noqa: N812
from torch.overrides import TorchFunctionMode

from prune_landscape.tracing.forward_order import weight_argument
from prune_landscape.tracing.generic_ops import (
    ARITHMETIC,
    SUBSTITUTES,
    attention_math,
    batch_norm_dual,
    dual_arithmetic,
    dual_linear_call,
    layer_norm_dual,
    mha_forward,
    scaled_call,
)

__all__ = ["CallRecord", "Recorder", "feature_reduce"]


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


def feature_reduce(tensor: torch.Tensor, axis: int) -> torch.Tensor:
    """max |tensor| over every axis but ``axis`` -> one value per feature (one pass, no |.| copy)."""
    moved = tensor.detach().movedim(axis, -1)
    flat = moved.reshape(-1, moved.shape[-1])
    if not flat.numel():
        return flat.sum(0)
    low, high = torch.aminmax(flat, dim=0)
    return torch.maximum(high, low.neg())


def _feature_axis(kind: str) -> int:
    return 1 if kind == "conv" else -1


class Recorder(TorchFunctionMode):
    """Swaps path-hiding ops and records every call of a tracked weight (by tensor identity).

    Two ways to read "depends on the input": ``dual`` (forward-mode AD: a non-zero tangent), or, when an op
    has no forward-mode rule, two passes on independent generic inputs: pass B (``reference=None``) stores
    every call's values, pass A (``reference=`` pass B's ``stored``) compares with them.
    """

    def __init__(self, tracked: Mapping[int, tuple[str, str]], soft: set[int], generator: torch.Generator, *,
                 output_scale: Mapping[int, torch.Tensor], grad_leaf: torch.Tensor | None = None, dual: bool = False,
                 id_storages: set[int] | None = None, reference: list | None = None):
        super().__init__()
        self.tracked = tracked  # id(generic tensor) -> (weight name, home kind)
        self.soft = soft  # ids of masked embedding tables: read as generic mixtures of rows
        self.generator = generator
        self.output_scale = output_scale  # id(generic weight) -> per-unit scale of its layer's output
        self.grad_leaf = grad_leaf  # a zero scalar that requires grad (graph anchor), for the backward pass
        self.dual = dual
        self.id_storages = id_storages or set()  # storages of the token-id inputs (dual mode)
        self.reference = reference  # pass B's (output, input) per call, consumed by pass A
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
        if self.dual:
            out = self._dual_op(func, name, args, kwargs)
            if out is not None:
                return out
        weight, kind, x = weight_argument(name, args, kwargs)
        if not isinstance(weight, torch.Tensor) or id(weight) not in self.tracked:
            return func(*args, **kwargs)
        axis = _feature_axis(kind)
        scale = self.output_scale.get(id(weight)) if kind != "embedding" else None
        if kind == "embedding" and id(weight) in self.soft:
            out = self._soft_embedding(name, args, kwargs, weight)
        elif self.dual and kind in ("linear", "conv"):
            out = dual_linear_call(func, name, args, kwargs, scale, axis)
        elif scale is not None:
            out = scaled_call(func, name, args, kwargs, scale, axis)
        else:
            out = func(*args, **kwargs)
        return self.record(self.tracked[id(weight)][0], kind, out, x)

    def _dual_op(self, func: Callable, name: str, args: tuple, kwargs: dict) -> torch.Tensor | None:
        """The dual-mode replacements (fused kernels without a fast tangent rule); None for other ops."""
        if name == "scaled_dot_product_attention":
            return attention_math(*args, **kwargs)
        if name == "layer_norm":
            return layer_norm_dual(*args, **kwargs)
        if name == "batch_norm":
            return batch_norm_dual(*args, **kwargs)
        if name in ARITHMETIC and len(args) == 2 and not kwargs:
            return dual_arithmetic(func, name, args)
        if name in ("embedding", "embedding_bag"):
            return self._dual_embedding(func, args, kwargs)
        return None

    def _mixture(self, weight: torch.Tensor) -> torch.Tensor:
        """A generic mixture of the table's rows: entry d is 0 iff column d is fully pruned."""
        if id(weight) not in self.mixtures:
            mixer = torch.rand(weight.shape[0], generator=self.generator, dtype=weight.dtype, device=weight.device)
            self.mixtures[id(weight)] = (mixer.add_(0.5) @ fwAD.unpack_dual(weight).primal).detach()
        return self.mixtures[id(weight)]

    def _dual_embedding(self, func: Callable, args: tuple, kwargs: dict) -> torch.Tensor:
        """A lookup of the input's token ids gets the tangent ``noise * c`` (``c`` as in
        :meth:`_soft_embedding`): a feature then depends on the ids iff its column has a kept entry. Lookups
        of other ids (positions, token types) are constants."""
        ids, weight = args[0], args[1] if len(args) > 1 else kwargs["weight"]
        out = func(*args, **kwargs)
        if isinstance(ids, torch.Tensor) and ids.untyped_storage().data_ptr() in self.id_storages:
            mixture = self._mixture(weight)  # drawn before the noise: the order of the generator's draws is fixed
            noise = torch.randn(out.shape, generator=self.generator, dtype=out.dtype, device=out.device)
            out = fwAD.make_dual(out, noise * mixture)
        if isinstance(weight, torch.Tensor) and id(weight) in self.tracked:
            return self.record(self.tracked[id(weight)][0], "embedding", out, None)
        return out

    def _soft_embedding(self, name: str, args: tuple, kwargs: dict, weight: torch.Tensor) -> torch.Tensor:
        """The lookup plus ``noise * c``, where ``c[d]`` is a generic mixture of column d (0 iff the column
        is fully pruned): a feature then varies with the input iff some entry of its column is kept,
        whichever ids were drawn, at the cost of one vector-matrix product."""
        plain = (F.embedding if name == "embedding" else F.embedding_bag)(*args, **kwargs)
        mixture = self._mixture(weight)
        noise = torch.randn(plain.shape, generator=self.generator, dtype=plain.dtype, device=plain.device)
        return plain + noise * mixture

    def record(self, weight_name: str, kind: str, out: torch.Tensor, x: Any) -> torch.Tensor:
        """Record one call of a tracked weight (``x``: its input, for the fan-in of a linear/conv call) and
        return its output, hooked so the backward pass fills the record's gradient fields."""
        feature_in = x if isinstance(x, torch.Tensor) and x.is_floating_point() and kind in ("linear", "conv") else None
        axis = _feature_axis(kind)
        if self.dual:
            tangent = fwAD.unpack_dual(out).tangent
            changes = (torch.zeros(out.shape[axis], dtype=out.dtype) if tangent is None
                       else feature_reduce(tangent, axis).cpu())
            record = CallRecord(weight_name, kind, len(self.calls), changes)
            if feature_in is not None:
                tangent_in = fwAD.unpack_dual(feature_in).tangent
                record.input_change = (feature_reduce(tangent_in, axis).cpu() if tangent_in is not None
                                       else torch.zeros(feature_in.shape[axis], dtype=feature_in.dtype))
            return self._watch(record, out, axis)
        if self.reference is None:  # pass B: keep the values for pass A to compare with
            # Copies: the model may later modify these tensors in place (SiLU(inplace=True), ``x += y``).
            self.stored.append((out.detach().clone(), None if feature_in is None else feature_in.detach().clone()))
            return out
        return self._watch(self._compare(weight_name, kind, out, feature_in), out, axis)

    def _compare(self, weight_name: str, kind: str, out: torch.Tensor, feature_in: Any) -> CallRecord:
        """Pass A's record of a call: the change from pass B's values of the same call."""
        index, axis = len(self.calls), _feature_axis(kind)
        if index >= len(self.reference):
            raise RuntimeError("the forward pass called prunable layers in a different order on a second input")
        ref_out, ref_in = self.reference[index]
        self.reference[index] = (None, None)  # release what is no longer needed
        if ref_out.shape != out.shape:
            raise RuntimeError(f"{weight_name}: output shape {tuple(out.shape)} differs between two generic inputs "
                               f"({tuple(ref_out.shape)}); the model's control flow depends on input values")
        record = CallRecord(weight_name, kind, index, feature_reduce(out - ref_out, axis).cpu())
        if feature_in is not None and ref_in is not None and ref_in.shape == feature_in.shape:
            record.input_change = feature_reduce(feature_in - ref_in, axis).cpu()
        return record

    def _watch(self, record: CallRecord, out: torch.Tensor, axis: int) -> torch.Tensor:
        """Keep ``record`` and have the backward pass fill its ``to_selected`` / ``to_output``."""
        self.calls.append(record)
        if out._is_view():
            # A dual made by make_dual is a view: an in-place op after it (ReLU(inplace=True) right after a
            # conv) would drop a hook registered on it. A copy keeps the hook.
            out = out.clone()
        if not out.requires_grad and self.grad_leaf is not None:
            out = out + self.grad_leaf
        if out.requires_grad:
            def hook(grad: torch.Tensor, record: CallRecord = record, axis: int = axis) -> None:
                reduced = feature_reduce(grad, axis).cpu()
                field_name = "to_selected" if self.phase == "selected" else "to_output"
                previous = getattr(record, field_name)
                setattr(record, field_name, reduced if previous is None else torch.maximum(previous, reduced))

            out.register_hook(hook)
        return out
