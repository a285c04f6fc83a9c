"""SynFlow (Tanaka, Kunin, Yamins & Ganguli, NeurIPS 2020): iterative synaptic flow, data-free.

Every parameter and floating buffer (BatchNorm running mean/var included) is replaced by its absolute
value, the network runs in eval mode on ONE all-ones input with the data's sample shape,
``R = sum(outputs)`` and the score is ``|theta * dR/dtheta|`` for the masked weights ``theta`` (pruned
entries score 0). :func:`prune` iterates the exponential schedule (100 iterations by default), scoring
again under each new mask.

Precision (``double``): ``None`` (default) scores in float32, the official code's precision, and
re-scores that iteration in float64 only when float32 overflows or underflows (``R`` not finite, or 0
although weights are kept); deep or wide nets make ``R`` grow like the product of the layer norms.
``True`` always scores in float64 (slower; ranks cannot flip with the thread count, see the README);
``False`` is float32 only and raises on overflow.

Speed (one input sample: the cost is a few small convolutions plus per-call overhead): the |parameters|
live in a private twin of the network built once per model state (cached, keyed by the tensors' identities
and versions, so a changed model is re-read). The |BatchNorm| statistics and affine parameters never change
across iterations, so they are folded once into the conv/linear layer before them
(:mod:`prune_landscape.pruning.bnfold`; ``fold_batchnorm=False`` keeps them as layers): the score
``|theta * dR/dtheta|`` equals ``|(s * theta) * dR/d(s * theta)|`` for the folded weight ``s * theta``, so
this is the same quantity, computed in a different float order. Each iteration writes ``theta * m`` into
reused leaf tensors, runs one forward and ONE backward w.r.t. those leaves, and leaves the model it was
given untouched, so :func:`prune` skips restoring it (``synflow_scores.preserves_model``).

Example (two-layer linear net, hand-worked: ``score1[i, j] = |W1[i, j]| * sum_k |W2[k, i]|``):
    >>> import torch
    >>> from prune_landscape import models
    >>> from prune_landscape.pruning.workspace import working_copy
    >>> net = working_copy(models.mlp([2, 2, 1], activation="linear", bias=False))
    >>> with torch.no_grad():
    ...     _ = net.fc1.weight.copy_(torch.tensor([[1.0, -2.0], [3.0, 4.0]]))
    ...     _ = net.fc2.weight.copy_(torch.tensor([[-5.0, 6.0]]))
    >>> masks = {n: torch.ones_like(p, dtype=torch.bool) for n, p in net.named_parameters()}
    >>> synflow_scores(net, masks, (torch.zeros(1, 2), torch.zeros(1)), None)["fc1.weight"].tolist()
    [[5.0, 10.0], [18.0, 24.0]]
"""

from __future__ import annotations

import copy
import warnings
import weakref
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from prune_landscape.batching import map_tensors
from prune_landscape.progress import report
from prune_landscape.pruning.bnfold import FoldedNetwork
from prune_landscape.pruning.workspace import output_of

__all__ = ["synflow_scores"]


@dataclass(frozen=True)
class _Twin:
    """A private copy of the network with |parameters| and |buffers| in one dtype, masked weights detached.

    Attributes:
        net: the network run per call (eval mode; with ``fold_batchnorm`` the traced twin whose BatchNorms
            are folded into the layers before them); each masked weight is a plain attribute set per call.
        owners: per masked name, (module, attribute name) that receives ``theta * m``.
        theta: per masked name, ``|theta|``, times the folded BatchNorm's per-channel scale if folded.
        leaves: per masked name, the reused leaf tensor holding ``theta * m`` (requires grad).
        ones: the all-ones input, batch of one.
        folded: whether BatchNorms were folded.
    """

    net: nn.Module
    owners: dict[str, tuple[nn.Module, str]]
    theta: dict[str, torch.Tensor]
    leaves: dict[str, torch.Tensor]
    ones: Any
    folded: bool
    source: nn.Module  # the working copy whose output_transform picks "the" output of a dict/tuple output

    @classmethod
    def build(
        cls, model: nn.Module, names: list[str], sample: Any, dtype: torch.dtype, fold: bool
    ) -> _Twin:
        net = copy.deepcopy(model).to(dtype).eval()
        with torch.no_grad():
            for tensor in list(net.parameters()) + list(net.buffers()):
                if tensor.is_floating_point():
                    tensor.abs_()
                    tensor.requires_grad_(False)
        device = next(iter(net.parameters())).device
        # A tuple/dict input (several float tensors) gets all-ones in every tensor; folding traces tensors only.
        structured = not isinstance(sample, torch.Tensor)
        ones = map_tensors(lambda t: torch.ones((1, *t.shape[1:]), dtype=dtype, device=device), sample)
        folded = FoldedNetwork.build(net, ones) if fold and not structured else None
        fixed: dict[str, torch.Tensor] = {}
        if folded is not None:
            # |BN| statistics and affine parameters never change across iterations: fold them once.
            # score = |theta * dR/dtheta| = |(theta * s) * dR/d(theta * s)|, so the folded weight serves as theta.
            with torch.no_grad():
                fixed = {k: v.detach() for k, v in folded.folded_parameters().items()}
            net = folded.twin
            for key, value in fixed.items():
                if key.rpartition(".")[0] in folded.pairs and key.endswith(".bias"):
                    module = net.get_submodule(key.rpartition(".")[0])
                    module._parameters["bias"] = nn.Parameter(value, requires_grad=False)
        # Channels-last images: oneDNN then skips a layout reorder per convolution (about 12 % on ResNet-20).
        layout = torch.channels_last if not structured and ones.dim() == 4 else torch.contiguous_format
        if not structured:
            ones = ones.contiguous(memory_format=layout)
        owners, theta, leaves = {}, {}, {}
        for name in names:
            module_name, _, attribute = name.rpartition(".")
            module = net.get_submodule(module_name)
            own = module._parameters.pop(attribute).detach()
            value = fixed.get(name, own)
            theta[name] = value.contiguous(memory_format=layout) if value.dim() == 4 else value
            owners[name] = (module, attribute)
            # The leaf is the module's weight from now on (a plain tensor); each call rewrites it in place.
            leaves[name] = torch.empty_like(theta[name]).requires_grad_(True)
            setattr(module, attribute, leaves[name])
        return cls(net, owners, theta, leaves, ones, folded is not None, model)

    def scores(self, masks: Mapping[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """``R`` and ``|theta * dR/dtheta|`` under ``masks`` (one forward, one backward)."""
        names = list(self.leaves)
        leaves = [self.leaves[n] for n in names]
        with torch.no_grad():
            for name, leaf in zip(names, leaves):
                torch.mul(self.theta[name], masks[name], out=leaf)
        if isinstance(self.ones, Mapping):
            raw = self.net(**self.ones)
        else:
            raw = self.net(*self.ones) if isinstance(self.ones, tuple) else self.net(self.ones)
        flow = output_of(self.source, raw).sum()
        grads = torch.autograd.grad(flow, leaves, allow_unused=True)
        with torch.no_grad():
            used = [i for i, g in enumerate(grads) if g is not None]
            # The official |p.grad * p| with p.grad = m * dR/dW; theta * m is the leaf itself (m is 0 or 1,
            # so the products are the same floats), and pruned entries score exactly 0.
            products = torch._foreach_mul([grads[i] for i in used], [leaves[i] for i in used])
            torch._foreach_abs_(products)
        out = {n: torch.zeros_like(self.theta[n]) for n in names}  # no gradient: the weight carries no flow
        out.update({names[i]: p.contiguous() for i, p in zip(used, products)})
        return flow.detach(), out


@dataclass
class _Cache:
    """The twins built from one state of one model, and how to tell that the state changed."""

    slots: list[tuple[dict, str, torch.Tensor, int]]  # (module._parameters or ._buffers, key, tensor, version)
    twins: dict[tuple, _Twin]

    @classmethod
    def of(cls, model: nn.Module) -> _Cache:
        slots = [
            (store, key, value, value._version)
            for module in model.modules()
            for store in (module._parameters, module._buffers)
            for key, value in store.items()
            if value is not None
        ]
        return cls(slots, {})

    def current(self) -> bool:
        """Whether every tensor is still the one cached (not replaced) and unwritten (same version)."""
        return all(store.get(key) is value and value._version == version for store, key, value, version in self.slots)


# Per model; dropped with the model. Built on the first call of a prune() run and reused by the next ones.
_CACHES: weakref.WeakKeyDictionary[nn.Module, _Cache] = weakref.WeakKeyDictionary()


def _twin(model: nn.Module, names: list[str], sample: Any, dtype: torch.dtype, fold: bool) -> _Twin:
    cache = _CACHES.get(model)
    if cache is None or not cache.current():
        cache = _Cache.of(model)
        _CACHES[model] = cache
    key = (tuple(names), repr(map_tensors(lambda t: tuple(t.shape[1:]), sample)), dtype, fold)
    if key not in cache.twins:
        cache.twins[key] = _Twin.build(model, names, sample, dtype, fold)
    return cache.twins[key]


def _usable(flow: torch.Tensor, masks: Mapping[str, torch.Tensor]) -> bool:
    """False when float32 overflowed (R inf/NaN) or underflowed (R == 0 with weights still kept)."""
    value = float(flow)
    if value != value or value in (float("inf"), float("-inf")):
        return False
    return value != 0.0 or not any(bool(m.any()) for m in masks.values())


def synflow_scores(
    model: nn.Module,
    masks: Mapping[str, torch.Tensor],
    data: tuple[torch.Tensor, torch.Tensor],
    generator: torch.Generator | None,
    *,
    double: bool | None = None,
    fold_batchnorm: bool = True,
) -> dict[str, torch.Tensor]:
    """``|theta * dR/dtheta|`` with |parameters|, |buffers| and one all-ones input (see module docstring).

    Raises:
        ValueError: if ``double`` is not None/True/False, or ``double=False`` and float32 overflows.
    """
    if double not in (None, True, False):
        raise ValueError(f"double must be None (float32, float64 on overflow), True or False, got {double!r}")
    names = list(masks)
    sample = data[0]
    dtype = torch.float64 if double else torch.float32
    flow, scores = _twin(model, names, sample, dtype, fold_batchnorm).scores(masks)
    if dtype == torch.float32 and not _usable(flow, masks):
        if double is False:
            raise ValueError(
                f"SynFlow's flow R = {float(flow)} is not usable in float32 (overflow or underflow); "
                "use double=None (falls back to float64) or double=True"
            )
        dtype = torch.float64
        flow, scores = _twin(model, names, sample, dtype, fold_batchnorm).scores(masks)
        if float(flow) == 0.0:
            warnings.warn(
                "SynFlow's flow R is exactly 0, so every score is 0 and the kept set falls to the tie rule "
                "(lower index first); typical cause: a zero-initialised layer on every path, such as "
                "torchvision ViT's classification head",
                RuntimeWarning,
                stacklevel=2,
            )
    report(synflow_flow=float(flow), synflow_float64=float(dtype == torch.float64))
    return scores


#: :func:`prune` need not restore the working copy between iterations: this scorer never writes to it.
synflow_scores.preserves_model = True  # type: ignore[attr-defined]
