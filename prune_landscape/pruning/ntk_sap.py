"""NTK-SAP (Wang, Li & Sun, ICLR 2023): neural tangent kernel spectrum-aware pruning, weight-agnostic.

For the mask ``m`` in force the score is (Algorithm 1, eq. 10; details from the official code)::

    S = | d/dm  sum_i || f(z_i; theta_i * m) - f(z_i; (theta_i + eps * xi_i) * m) ||^2 |  * (m != 0)

- ``z ~ N(0, I)`` with each prune-set batch's shape: the data values are never used.
- ``theta_i``: the network is re-initialised from its init distribution before EVERY batch
  (:mod:`prune_landscape.pruning.reinit`), which makes the score independent of the actual weights.
- ``xi ~ N(0, I)`` perturbs the prunable weights only; ``eps = 0.01`` is a standard deviation.
- BatchNorm (``batchnorm=``): ``"batch"`` (default) resets the running statistics and recomputes them from
  the noise batch with momentum 1 (one no-grad forward in train mode), then BOTH forwards run in eval mode
  with those statistics: the official scripts' ``--prune-train-mode True``. ``"eval"`` skips that pass and
  normalises with the reset statistics (mean 0, variance 1: BatchNorm in eval mode as freshly
  initialised; the model's own statistics belong to other weights, since the network is re-drawn). The
  official code's default (flag not given) does that for its very first noise batch only: its scorer
  switches the model to train mode after every batch, so all later batches use batch statistics.
- The loss sums over the batch; the mask gradient accumulates over ``repeats`` x #batches; the
  absolute value is taken after accumulating; already-pruned entries score 0.

Random numbers, all from the generator, in this order per batch: re-initialisation, ``z``, ``xi`` (per
masked tensor, in mask order). :func:`prune` runs the exponential schedule (``iterations = 20``) and
scores on a private copy, so the user's weights are untouched.

Precision: scores are computed in the model's dtype. Float32 convolutions sum in an order that depends on
the thread count, which flips near-tied scores and then the later iterations; ``double=True`` scores in
float64 (the private copy is converted), where masks agree across thread counts (a test), at about 2-3x
the cost on CPU.

Efficiency: the gradient is taken w.r.t. a float mask through ``torch.func.functional_call`` with
weights ``theta * m`` (no deep copies, no weight gradients); conv inputs go in channels-last memory
format, which oneDNN runs faster on CPU (``channels_last=False`` turns that off); and the two eval-mode
forwards run with each BatchNorm folded into the conv before it (:mod:`prune_landscape.pruning.bnfold`),
which is the same function in exact arithmetic and differs by float rounding only (``fold_batchnorm=False``
runs the BatchNorms as they are).

Example:
    >>> import torch
    >>> from prune_landscape import models
    >>> from prune_landscape.pruning.workspace import working_copy
    >>> net = working_copy(models.mlp([4, 3, 2]))
    >>> masks = {n: torch.ones_like(p, dtype=torch.bool) for n, p in net.named_parameters() if p.dim() > 1}
    >>> scores = ntk_sap_scores(net, masks, (torch.zeros(8, 4), torch.zeros(8)), torch.Generator().manual_seed(0))
    >>> scores["fc1.weight"].shape
    torch.Size([3, 4])
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import partial

import torch
from torch import nn

from prune_landscape.batching import iter_batches
from prune_landscape.progress import advance, report
from prune_landscape.pruning.bnfold import FoldedNetwork
from prune_landscape.pruning.reinit import InitFn, resolve_init_fn
from prune_landscape.pruning.workspace import masked_call, weight_of

__all__ = ["ntk_sap_scores"]


def ntk_sap_scores(
    model: nn.Module,
    masks: Mapping[str, torch.Tensor],
    data: tuple[torch.Tensor, torch.Tensor],
    generator: torch.Generator,
    *,
    batch_size: int = 256,
    repeats: int = 5,
    eps: float = 0.01,
    init_fn: InitFn | None = None,
    channels_last: bool = True,
    fold_batchnorm: bool = True,
    batchnorm: str = "batch",
    double: bool = False,
) -> dict[str, torch.Tensor]:
    """The NTK-SAP saliency of every masked weight (see module docstring).

    Raises:
        ValueError: on ``repeats < 1``, ``eps <= 0``, or ``batchnorm`` not ``"batch"``/``"eval"``.
    """
    if not isinstance(repeats, int) or repeats < 1:
        raise ValueError(f"repeats must be an integer >= 1, got {repeats!r}")
    if not eps > 0:
        raise ValueError(f"eps must be > 0, got {eps!r}")
    if batchnorm not in ("batch", "eval"):
        raise ValueError(f"batchnorm must be 'batch' (each noise batch's statistics) or 'eval', got {batchnorm!r}")
    initialise = resolve_init_fn(model, init_fn)
    if double:
        model.double()  # the private working copy; re-initialisation then draws in float64 too
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    for norm in norms:
        norm.momentum = 1.0  # running stats = exactly this batch's stats (private copy: nothing to restore)
    names = list(masks)
    dtype = weight_of(model, names[0]).dtype
    device = weight_of(model, names[0]).device
    hard = {n: masks[n].to(device=device, dtype=dtype) for n in names}
    soft = {n: hard[n].clone().requires_grad_(True) for n in names}
    shapes = [tuple(inputs.shape) for inputs, _ in iter_batches(data, batch_size)]
    total = {n: torch.zeros_like(hard[n]) for n in names}
    distances: list[torch.Tensor] = []
    forward = None  # the eval-mode forward: folded once the statistics exist, else the model as it is
    for _ in range(repeats):
        for shape in shapes:
            initialise(model, generator)
            theta = {n: weight_of(model, n) for n in names}
            noise = torch.randn(shape, generator=generator, dtype=dtype).to(device)
            if channels_last and noise.dim() == 4:
                noise = noise.contiguous(memory_format=torch.channels_last)
            perturbation = {n: torch.randn(theta[n].shape, generator=generator, dtype=dtype).to(device) for n in names}
            for norm in norms:  # after the re-draw: an init_fn may have loaded statistics too
                norm.reset_running_stats()
            if batchnorm == "batch":
                model.train()
                with torch.no_grad():
                    masked_call(model, {n: theta[n] * hard[n] for n in names}, noise)
            model.eval()
            if forward is None:
                folded = FoldedNetwork.build(model, noise) if fold_batchnorm and norms else None
                forward = folded or partial(masked_call, model)
            clean = forward({n: theta[n] * soft[n] for n in names}, noise)
            perturbed = forward({n: (theta[n] + eps * perturbation[n]) * soft[n] for n in names}, noise)
            distance = (clean - perturbed).pow(2).sum()
            distances.append(distance.detach())
            for n, g in zip(names, torch.autograd.grad(distance, [soft[n] for n in names], allow_unused=True)):
                if g is not None:
                    total[n] += g
            advance(len(distances), repeats * len(shapes))
    report(ntk_sap_distance=float(torch.stack(distances).mean()))
    return {n: total[n].abs() * hard[n] for n in names}
