"""The kept-coordinate parametrisation every probe shares, and the functional loss evaluation behind it.

A probe never writes into the model. It reads the trainable tensors once (``weight_orig`` under
torch.nn.utils.prune, the plain ``weight`` for a model pruned with exact zeros), multiplies masked ones by
their masks, and evaluates the loss at other points through ``torch.func.functional_call``. Only kept
coordinates ever move: directions are masked and the Hessian is restricted to the kept index set
(w.r.t. ``weight_orig`` it is exactly zero on pruned coordinates; for a zeros-pruned model we take the
principal sub-matrix, i.e. the Hessian of the masked network).
"""

from __future__ import annotations

import math
import time

from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cached_property

import numpy as np
import torch
from torch import nn
from torch.func import functional_call

from prune_landscape.batching import DataLike, first_batch, iter_batches, require_data
from prune_landscape.masks import MaskSet
from prune_landscape.modelcopy import plain_copy
from prune_landscape.pruning.bnfold import FoldedNetwork
from prune_landscape.training import loss_function, masked_parameters

Loss = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def resolve_loss(loss: str, data: DataLike) -> str:
    """``"auto"`` -> cross-entropy for integer targets, squared loss for real-valued ones."""
    if loss != "auto":
        loss_function(loss)  # raises on an unknown name before any work
        return loss
    _, targets = first_batch(data)
    return "mse" if targets.is_floating_point() else "cross_entropy"


class Batches:
    """A re-iterable view of ``data`` (streamed, never loaded whole), moved to ``device``."""

    def __init__(self, data: DataLike, batch_size: int, max_samples: int | None, device: torch.device):
        require_data(data, "probe")
        if batch_size < 1:
            raise ValueError(f"batch_size must be a positive int, got {batch_size}")
        if max_samples is not None and max_samples < 1:
            raise ValueError(f"max_samples must be a positive int or None, got {max_samples}")
        self.data, self.batch_size, self.max_samples, self.device = data, batch_size, max_samples, device

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for x, y in iter_batches(self.data, self.batch_size, max_samples=self.max_samples):
            yield x.to(self.device), y.to(self.device)

    @cached_property
    def size(self) -> int:
        """Number of samples the probe uses (one counting pass at most)."""
        total = sum(x.shape[0] for x, _ in iter_batches(self.data, self.batch_size, max_samples=self.max_samples))
        if total == 0:
            raise ValueError("probe: expected non-empty data, got 0 samples")
        return total


@dataclass(frozen=True)
class KeptParameters:
    """The model's trainable tensors at the masked point, and the flat index set of kept coordinates.

    Attributes:
        names: functional names (``named_parameters`` order), e.g. ``"fc.weight_orig"``.
        values: detached values, masked tensors multiplied by their masks.
        masks: functional name -> bool mask on the tensor's device (unmasked tensors are absent).
        user_names: functional name -> user-visible name (``"fc.weight"``).
    """

    names: tuple[str, ...]
    values: dict[str, torch.Tensor]
    masks: dict[str, torch.Tensor]
    user_names: dict[str, str]

    @classmethod
    def from_model(cls, model: nn.Module, masks: Mapping[str, torch.Tensor] | None = None) -> KeptParameters:
        mask_set = MaskSet.for_model(model, masks)
        by_identity = {id(p): mask for p, mask in masked_parameters(model, mask_set)}
        user_of = {id(p): user for user, (p, _) in zip(mask_set, masked_parameters(model, mask_set))}
        names, values, kept_masks, user_names = [], {}, {}, {}
        for name, param in model.named_parameters():
            if not param.requires_grad:
                continue
            names.append(name)
            value = param.detach()
            if id(param) in by_identity:
                mask = by_identity[id(param)]
                kept_masks[name] = mask
                user_names[name] = user_of[id(param)]
                value = value * mask
            else:
                user_names[name] = name
            values[name] = value
        return cls(tuple(names), values, kept_masks, user_names)

    @cached_property
    def kept_index(self) -> torch.Tensor:
        """Positions of kept coordinates in the concatenation of all tensors (flattened, in ``names`` order)."""
        parts, offset = [], 0
        for name in self.names:
            numel = self.values[name].numel()
            mask = self.masks.get(name)
            local = torch.arange(numel, device=self.device) if mask is None else mask.reshape(-1).nonzero().reshape(-1)
            parts.append(local + offset)
            offset += numel
        return torch.cat(parts)

    @property
    def device(self) -> torch.device:
        return self.values[self.names[0]].device

    @property
    def dtype(self) -> torch.dtype:
        return self.values[self.names[0]].dtype

    @property
    def num_total(self) -> int:
        return sum(v.numel() for v in self.values.values())

    @property
    def num_kept(self) -> int:
        return int(self.kept_index.numel())

    def gather(self, tensors: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """Kept coordinates of a stack of tensor dicts: each ``(K, *shape)`` -> one ``(K, num_kept)`` matrix."""
        flat = torch.cat([tensors[n].reshape(tensors[n].shape[0], -1) for n in self.names], dim=1)
        return flat[:, self.kept_index]

    def scatter(self, kept: torch.Tensor) -> dict[str, torch.Tensor]:
        """Inverse of :meth:`gather`: ``(K, num_kept)`` -> dict of ``(K, *shape)`` with zeros on pruned entries."""
        full = torch.zeros(kept.shape[0], self.num_total, dtype=kept.dtype, device=kept.device)
        full[:, self.kept_index] = kept
        out, offset = {}, 0
        for name in self.names:
            shape = self.values[name].shape
            out[name] = full[:, offset : offset + self.values[name].numel()].reshape(kept.shape[0], *shape)
            offset += self.values[name].numel()
        return out


@contextmanager
def probing(model: nn.Module):
    """Eval mode (BN running stats, no dropout) for the probe; mode, grads and requires_grad restored after."""
    modes = [(m, m.training) for m in model.modules()]
    grads = [(p, p.grad, p.requires_grad) for p in model.parameters()]
    # torch.nn.utils.prune's pre-hook re-sets `module.weight` on every forward, including functional ones
    # (where it would keep a tensor of the last probed point): put the original attributes back.
    hooked = [
        (m, attr[: -len("_orig")], getattr(m, attr[: -len("_orig")], None))
        for m in model.modules()
        for attr in m._parameters
        if attr.endswith("_orig")
    ]
    model.eval()
    try:
        yield
    finally:
        for module, mode in modes:
            module.training = mode
        for module, attr, tensor in hooked:
            setattr(module, attr, tensor)
        for param, grad, requires in grads:
            param.grad = grad
            param.requires_grad_(requires)


#: Peak activation memory a chunk of vmapped grid points may take when ``chunk="auto"``.
AUTO_CHUNK_BYTES = 256 * 2**20
#: Grid points per vmapped call are capped here: past ~32 the per-call overhead is already amortised and
#: larger chunks only fall out of cache (measured on CPU, benchmarks/bench_surface.py).
AUTO_CHUNK_MAX = 32
#: The smaller vmapped chunk tried first, and the number of one-by-one points timed against it.
AUTO_CHUNK_TRIAL = 8
#: One-by-one calls slower than this are kept without trying vmap (a trial on big conv nets costs seconds).
AUTO_VMAP_MAX_SECONDS = 0.02


def point_footprint(model: nn.Module, params: Mapping[str, torch.Tensor], x: torch.Tensor) -> int:
    """Bytes of the two largest module outputs of one forward pass on ``x``: one grid point's working set."""
    sizes: list[int] = []

    def record(_module, _inputs, output):
        if isinstance(output, torch.Tensor):
            sizes.append(output.numel() * output.element_size())

    handles = [m.register_forward_hook(record) for m in model.modules()]
    try:
        with torch.no_grad():
            functional_call(model, dict(params), (x,))
    finally:
        for handle in handles:
            handle.remove()
    largest = sorted(sizes, reverse=True)[:2] or [x.numel() * x.element_size()]
    return sum(largest)


def check_chunk(chunk: int | str) -> int | str:
    """``chunk`` if it is a positive int or ``"auto"``; a ValueError naming the value otherwise."""
    if chunk != "auto" and (isinstance(chunk, bool) or not isinstance(chunk, int) or chunk < 1):
        raise ValueError(f"chunk must be a positive int or 'auto', got {chunk!r}")
    return chunk


def auto_chunk(model: nn.Module, params: Mapping[str, torch.Tensor], x: torch.Tensor) -> int:
    """Grid points per vmapped call: as many as fit :data:`AUTO_CHUNK_BYTES`, at most :data:`AUTO_CHUNK_MAX`."""
    return max(1, min(AUTO_CHUNK_MAX, AUTO_CHUNK_BYTES // max(1, point_footprint(model, params, x))))


Forward = Callable[[Mapping[str, torch.Tensor], torch.Tensor], torch.Tensor]


def fast_forward(model: nn.Module, kept: KeptParameters, example: torch.Tensor) -> Forward:
    """``model(x)`` in eval mode with the kept tensors replaced (functional names), as fast as exactness allows.

    On a plain copy (pruning hooks folded in, user-visible names), every eval-mode BatchNorm is folded into
    the conv before it (:mod:`prune_landscape.pruning.bnfold`), and image batches go in channels-last
    memory format, which oneDNN runs up to 2x faster on CPU (ResNet-20 and VGG-16-BN here). Both are the
    same function up to float rounding; each is kept only if it runs and agrees with the model on two
    samples of ``example``, else the plain functional call is used.
    """
    def reference(params: Mapping[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        return functional_call(model, dict(params), (x,))

    try:
        folded = FoldedNetwork.build(plain_copy(model).eval(), example)
    except TypeError:  # a model deepcopy refuses: run it as it is
        folded = None
    rename = kept.user_names

    def fused(params: Mapping[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        return folded({rename.get(name, name): value for name, value in params.items()}, x)

    forward = reference if folded is None else fused
    if example.dim() != 4:
        return forward

    def channels_last(params: Mapping[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        return forward(params, x.contiguous(memory_format=torch.channels_last))

    sample = example[:2]
    with torch.no_grad():
        expected = reference(kept.values, sample)
        try:
            got = channels_last(kept.values, sample)
        except Exception:  # noqa: BLE001 - e.g. a .view() on the input: keep the contiguous layout
            return forward
    agrees = got.shape == expected.shape and bool((got - expected).abs().max() <= 1e-3 * expected.abs().max() + 1e-6)
    return channels_last if agrees else forward


def batched_losses(
    model: nn.Module,
    kept: KeptParameters,
    base: Mapping[str, torch.Tensor],
    directions: list[Mapping[str, torch.Tensor]],
    coefficients: torch.Tensor,
    batches: Batches,
    criterion: Loss,
    chunk: int | str = "auto",
) -> np.ndarray:
    """Data-mean loss at each point ``base + sum_j coefficients[i, j] * directions[j]``.

    The data are streamed once. For each batch, points are evaluated ``chunk`` at a time under
    ``torch.vmap`` (memory grows with ``chunk`` x activations), or one by one without vmap when
    ``chunk == 1``. ``"auto"`` bounds the chunk by one forward pass's activation memory on the first batch,
    then times one-by-one calls against vmapped chunks on the first points and keeps the fastest: on CPU,
    vmap over conv weights becomes a grouped convolution that can be several times slower than separate
    calls, and large batched activations fall out of cache, while for small layers vmap saves most of the
    per-call overhead. The model runs through :func:`fast_forward`, set up on the first batch. A NaN or
    inf stays NaN or inf.
    """
    check_chunk(chunk)
    forward: Forward | None = None
    names = list(base)
    coefficients = coefficients.to(device=batches.device, dtype=next(iter(base.values())).dtype)
    total_points = coefficients.shape[0]

    def point_loss(coeff: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        params = {}
        for name in names:
            value = base[name]
            for j, direction in enumerate(directions):
                if name in direction:
                    value = value + coeff[j] * direction[name]
            params[name] = value
        return criterion(forward(params, x), y)

    vmapped = torch.vmap(point_loss, in_dims=(0, None, None))
    totals = torch.zeros(total_points, dtype=torch.float64, device=batches.device)

    def evaluate(start: int, size: int, x: torch.Tensor, y: torch.Tensor) -> None:
        """Add the points ``start : start + size`` to the totals in one call (plain when ``size == 1``)."""
        part = coefficients[start : start + size]
        losses = point_loss(part[0], x, y).reshape(1) if size == 1 else vmapped(part, x, y)
        totals[start : start + part.shape[0]] += losses.double() * x.shape[0]

    def tune(x: torch.Tensor, y: torch.Tensor) -> tuple[int, int]:
        """Time one-by-one calls, then vmapped chunks of growing size, on real points (their losses count).

        Returns the fastest chunk size and the number of points already evaluated. Escalation stops at the
        first size that is not faster, so a slow vmap costs one small trial, and vmap is not tried at all
        when one call already takes longer than :data:`AUTO_VMAP_MAX_SECONDS`.
        """
        largest = auto_chunk(model, base, x)
        done, best, best_rate = 0, 1, math.inf
        for size in sorted({1, min(AUTO_CHUNK_TRIAL, largest), largest}):
            warm_up = 1 if size == 1 else (2 if best == 1 else 0)  # first calls pay one-off costs
            timed = AUTO_CHUNK_TRIAL if size == 1 else size
            if done + warm_up + timed > total_points:
                break
            if warm_up:
                evaluate(done, warm_up, x, y)
                done += warm_up
            began = time.perf_counter()
            for start in range(done, done + timed, size):
                evaluate(start, size, x, y)
            rate = (time.perf_counter() - began) / timed
            done += timed
            if rate >= best_rate:
                break
            best, best_rate = size, rate
            if size == 1 and rate > AUTO_VMAP_MAX_SECONDS:
                break  # vmap only saves per-call overhead, negligible next to a call this long
        return best, done

    count = 0
    with torch.no_grad():
        for x, y in batches:
            done = 0
            if forward is None:
                forward = fast_forward(model, kept, x)
            if chunk == "auto":
                chunk, done = tune(x, y)
            for start in range(done, total_points, chunk):
                evaluate(start, chunk, x, y)
            count += x.shape[0]
    if count == 0:
        raise ValueError("probe: expected non-empty data, got 0 samples")
    return (totals / count).cpu().numpy()
