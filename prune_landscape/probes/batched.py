"""Many points of the loss at once: the model's fastest exact forward, and chunked ``torch.vmap`` evaluation.

:func:`batched_losses` gives the data-mean loss at every point ``base + sum_j c[i, j] * directions[j]``
(the loss slices and linear paths of :mod:`.surface`), streaming the data once. :func:`fast_forward` is
the forward pass the probes run: eval-mode BatchNorm folded into the conv before it and channels-last
images, each kept only where it agrees with the model. :func:`auto_chunk` sizes a vmapped chunk from one
forward pass's activation memory.

Example:
    >>> import torch
    >>> from prune_landscape import models
    >>> from prune_landscape.probes.kept import Batches, KeptParameters, ProbeLoss
    >>> net = models.mlp([3, 4, 2])
    >>> data = (torch.randn(8, 3), torch.randint(0, 2, (8,)))
    >>> kept = KeptParameters.from_model(net)
    >>> centre = batched_losses(net, kept, kept.values, [], torch.zeros(2, 0), Batches(data, 4, None, kept.device),
    ...                         ProbeLoss("cross_entropy"), chunk=1)
    >>> bool(centre[0] == centre[1])
    True
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping

import numpy as np
import torch
from torch import nn
from torch.func import functional_call

from prune_landscape.modelcopy import plain_copy
from prune_landscape.probes.kept import Batches, KeptParameters, Loss
from prune_landscape.pruning.bnfold import FoldedNetwork

__all__ = [
    "AUTO_CHUNK_BYTES",
    "AUTO_CHUNK_MAX",
    "Forward",
    "auto_chunk",
    "batched_losses",
    "check_chunk",
    "fast_forward",
    "point_footprint",
]

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


class _PointLosses:
    """Running data-sum of the loss at every point ``base + coefficients[i] @ directions``, batch by batch."""

    def __init__(self, base: Mapping[str, torch.Tensor], directions: list[Mapping[str, torch.Tensor]],
                 coefficients: torch.Tensor, criterion: Loss, device: torch.device):
        self.base, self.directions, self.criterion = base, directions, criterion
        self.coefficients = coefficients.to(device=device, dtype=next(iter(base.values())).dtype)
        self.count = int(self.coefficients.shape[0])
        self.totals = torch.zeros(self.count, dtype=torch.float64, device=device)
        self.forward: Forward | None = None  # set on the first batch (fast_forward needs an example input)
        self._vmapped = torch.vmap(self.point_loss, in_dims=(0, None, None))

    def point_loss(self, coeff: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The batch-mean loss at one point."""
        params = {}
        for name, value in self.base.items():
            for j, direction in enumerate(self.directions):
                if name in direction:
                    value = value + coeff[j] * direction[name]
            params[name] = value
        return self.criterion(self.forward(params, x), y)

    def evaluate(self, start: int, size: int, x: torch.Tensor, y: torch.Tensor) -> None:
        """Add the points ``start : start + size`` to the totals in one call (plain when ``size == 1``)."""
        part = self.coefficients[start : start + size]
        losses = self.point_loss(part[0], x, y).reshape(1) if size == 1 else self._vmapped(part, x, y)
        self.totals[start : start + part.shape[0]] += losses.double() * x.shape[0]


def _tune_chunk(points: _PointLosses, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[int, int]:
    """Time one-by-one calls, then vmapped chunks of growing size, on real points (their losses count).

    Returns the fastest chunk size and the number of points already evaluated. Escalation stops at the
    first size that is not faster, so a slow vmap costs one small trial, and vmap is not tried at all
    when one call already takes longer than :data:`AUTO_VMAP_MAX_SECONDS`.
    """
    largest = auto_chunk(model, points.base, x)
    done, best, best_rate = 0, 1, math.inf
    for size in sorted({1, min(AUTO_CHUNK_TRIAL, largest), largest}):
        warm_up = 1 if size == 1 else (2 if best == 1 else 0)  # first calls pay one-off costs
        timed = AUTO_CHUNK_TRIAL if size == 1 else size
        if done + warm_up + timed > points.count:
            break
        if warm_up:
            points.evaluate(done, warm_up, x, y)
            done += warm_up
        began = time.perf_counter()
        for start in range(done, done + timed, size):
            points.evaluate(start, size, x, y)
        rate = (time.perf_counter() - began) / timed
        done += timed
        if rate >= best_rate:
            break
        best, best_rate = size, rate
        if size == 1 and rate > AUTO_VMAP_MAX_SECONDS:
            break  # vmap only saves per-call overhead, negligible next to a call this long
    return best, done


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
    points = _PointLosses(base, directions, coefficients, criterion, batches.device)
    samples = 0
    with torch.no_grad():
        for x, y in batches:
            done = 0
            if points.forward is None:
                points.forward = fast_forward(model, kept, x)
            if chunk == "auto":
                chunk, done = _tune_chunk(points, model, x, y)
            for start in range(done, points.count, chunk):
                points.evaluate(start, chunk, x, y)
            samples += x.shape[0]
    if samples == 0:
        raise ValueError("probe: expected non-empty data, got 0 samples")
    return (points.totals / samples).cpu().numpy()
