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

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import partial
from typing import Any

import torch
from torch import nn

from prune_landscape.batching import iter_batches
from prune_landscape.checks import check_bool, check_callable, check_one_of, check_positive_int, check_positive_number
from prune_landscape.progress import advance, report
from prune_landscape.pruning.bnfold import FoldedNetwork
from prune_landscape.pruning.reinit import InitFn, resolve_init_fn
from prune_landscape.pruning.workspace import masked_call, weight_of

__all__ = ["NtkSapOptions", "ntk_sap_scores"]

Forward = Callable[[Mapping[str, torch.Tensor], torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class NtkSapOptions:
    """NTK-SAP's options, checked once when built (module docstring for their meaning).

    Attributes:
        batch_size: noise batch size (the prune set's batches).
        repeats: passes over the prune set, each with freshly re-drawn weights.
        eps: standard deviation of the weight perturbation.
        init_fn: ``init_fn(model, generator)`` re-drawing the network; None = :func:`resolve_init_fn`'s rule.
        channels_last: conv inputs in channels-last memory format.
        fold_batchnorm: fold each BatchNorm into the conv before it for the eval-mode forwards.
        batchnorm: ``"batch"`` (each noise batch's statistics) or ``"eval"`` (freshly reset statistics).
        double: score in float64.
    """

    batch_size: int = 256
    repeats: int = 5
    eps: float = 0.01
    init_fn: InitFn | None = None
    channels_last: bool = True
    fold_batchnorm: bool = True
    batchnorm: str = "batch"
    double: bool = False

    def __post_init__(self) -> None:
        check_positive_int("batch_size", self.batch_size)
        check_positive_int("repeats", self.repeats)
        check_positive_number("eps", self.eps)
        check_callable("init_fn", self.init_fn, "a callable init_fn(model, generator)", optional=True)
        check_one_of("batchnorm", self.batchnorm, ("batch", "eval"))
        for name in ("channels_last", "fold_batchnorm", "double"):
            check_bool(name, getattr(self, name))


def _batchnorms(model: nn.Module) -> list[nn.Module]:
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    for norm in norms:
        norm.momentum = 1.0  # running stats = exactly this batch's stats (private copy: nothing to restore)
    return norms


Weights = dict[str, torch.Tensor]


def _draws(
    model: nn.Module, names: list[str], shape: tuple[int, ...], generator: torch.Generator, options: NtkSapOptions
) -> tuple[Weights, torch.Tensor, Weights]:
    """(theta, z, xi) for one batch, drawn in the documented order after the re-initialisation."""
    theta = {n: weight_of(model, n) for n in names}
    reference = theta[names[0]]
    noise = torch.randn(shape, generator=generator, dtype=reference.dtype).to(reference.device)
    if options.channels_last and noise.dim() == 4:
        noise = noise.contiguous(memory_format=torch.channels_last)
    perturbation = {
        n: torch.randn(theta[n].shape, generator=generator, dtype=reference.dtype).to(reference.device) for n in names
    }
    return theta, noise, perturbation


def _set_statistics(
    model: nn.Module, norms: list[nn.Module], weights: Mapping[str, torch.Tensor], noise: torch.Tensor, mode: str
) -> None:
    """Reset BatchNorm statistics; for ``"batch"`` recompute them from the noise batch; leave eval mode."""
    for norm in norms:  # after the re-draw: an init_fn may have loaded statistics too
        norm.reset_running_stats()
    if mode == "batch":
        model.train()
        with torch.no_grad():
            masked_call(model, weights, noise)
    model.eval()


def ntk_sap_scores(
    model: nn.Module,
    masks: Mapping[str, torch.Tensor],
    data: tuple[torch.Tensor, torch.Tensor],
    generator: torch.Generator,
    options: NtkSapOptions | None = None,
    **overrides: Any,
) -> dict[str, torch.Tensor]:
    """The NTK-SAP saliency of every masked weight (see module docstring).

    Args:
        model, masks, data, generator: the scorer contract (:mod:`prune_landscape.pruning.registry`).
        options: an :class:`NtkSapOptions` (default: the defaults).
        **overrides: :class:`NtkSapOptions` fields by keyword (``repeats=1``), applied over ``options``.

    Raises:
        ValueError: on an unknown option or a bad value (``repeats < 1``, ``eps <= 0``, ``batchnorm`` not
            ``"batch"``/``"eval"``, ...).
    """
    options = _options(options, overrides)
    initialise = resolve_init_fn(model, options.init_fn)
    if options.double:
        model.double()  # the private working copy; re-initialisation then draws in float64 too
    norms = _batchnorms(model)
    names = list(masks)
    reference = weight_of(model, names[0])
    hard = {n: masks[n].to(device=reference.device, dtype=reference.dtype) for n in names}
    soft = {n: hard[n].clone().requires_grad_(True) for n in names}
    shapes = [tuple(inputs.shape) for inputs, _ in iter_batches(data, options.batch_size)]
    total = {n: torch.zeros_like(hard[n]) for n in names}
    distances: list[torch.Tensor] = []
    forward: Forward | None = None  # the eval-mode forward: folded once the statistics exist, else the model as it is
    for _ in range(options.repeats):
        for shape in shapes:
            initialise(model, generator)
            theta, noise, perturbation = _draws(model, names, shape, generator, options)
            _set_statistics(model, norms, {n: theta[n] * hard[n] for n in names}, noise, options.batchnorm)
            if forward is None:
                folded = FoldedNetwork.build(model, noise) if options.fold_batchnorm and norms else None
                forward = folded or partial(masked_call, model)
            clean = forward({n: theta[n] * soft[n] for n in names}, noise)
            perturbed = forward({n: (theta[n] + options.eps * perturbation[n]) * soft[n] for n in names}, noise)
            distance = (clean - perturbed).pow(2).sum()
            distances.append(distance.detach())
            for n, g in zip(names, torch.autograd.grad(distance, [soft[n] for n in names], allow_unused=True)):
                if g is not None:
                    total[n] += g
            advance(len(distances), options.repeats * len(shapes))
    report(ntk_sap_distance=float(torch.stack(distances).mean()))
    return {n: total[n].abs() * hard[n] for n in names}


def _options(options: NtkSapOptions | None, overrides: Mapping[str, Any]) -> NtkSapOptions:
    base = NtkSapOptions() if options is None else options
    if not isinstance(base, NtkSapOptions):
        raise ValueError(f"options must be an NtkSapOptions or None, got {type(base).__name__}")
    valid = [f.name for f in dataclasses.fields(NtkSapOptions)]
    unknown = sorted(set(overrides) - set(valid))
    if unknown:
        raise ValueError(f"unknown option(s) {unknown} for method 'ntk_sap'; valid options: {valid}")
    return dataclasses.replace(base, **overrides) if overrides else base
