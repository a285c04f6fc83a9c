"""Hessian spectrum of the training loss restricted to the kept coordinates: the thin public entry.

The pieces are separate and usable alone: the operator ``H_kk`` (:class:`.hessian_operator.KeptHessianOperator`,
a SciPy ``LinearOperator`` over one :class:`.kept.ProbeLoss` for both backends) and the estimators that
take any such operator (:mod:`.estimators`: ARPACK top-k and smallest eigenvalue, Hutchinson's trace,
stochastic Lanczos quadrature). :func:`hessian_spectrum` builds the operator at the masked point, runs
the estimators asked for and returns one frozen :class:`HessianResult`. Its knobs travel together as a
frozen :class:`HessianOptions`; each is still accepted as a keyword.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.func import functional_call

from prune_landscape.batching import DataLike
from prune_landscape.options import with_keywords
from prune_landscape.probes.estimators import (
    Eigenvalues,
    dense_spectrum,
    hutchinson_trace,
    smallest_eigenvalue,
    spectral_density,
    top_eigenvalues,
)
from prune_landscape.probes.hessian_operator import KeptHessianOperator, check_products
from prune_landscape.probes.kept import Batches, KeptParameters, ProbeLoss, probing, resolve_loss

__all__ = ["HessianOptions", "HessianResult", "hessian_spectrum"]


@dataclass(frozen=True)
class HessianOptions:
    """How :func:`hessian_spectrum` streams the data, multiplies by the Hessian and estimates its spectrum.

    Attributes:
        min_eigenvalue: also compute the smallest algebraic eigenvalue.
        trace_probes: Rademacher probes for Hutchinson's trace (0 to skip).
        density_steps: Lanczos steps per spectral-density quadrature (0 to skip; 30-80 is typical).
        density_repeats: independent quadratures averaged.
        tol: relative tolerance handed to ARPACK.
        batch_size, max_samples: the probe set is streamed in batches of ``batch_size`` (at most
            ``max_samples`` samples; None for all).
        chunk: Hessian columns per batched product (memory grows with it).
        backend: ``"torch"`` (batched torch.func HVPs) or ``"curvlinops"``.
        seed: decides ARPACK's start vector and every random probe.
        cache_samples: with the torch backend and at most this many samples, the gradient's linearisation
            is kept between products (one pullback per product instead of a forward and two backwards);
            memory grows with the probe set, so larger sets are re-linearised per product.
    """

    min_eigenvalue: bool = True
    trace_probes: int = 100
    density_steps: int = 0
    density_repeats: int = 1
    tol: float = 1e-6
    batch_size: int = 256
    max_samples: int | None = None
    chunk: int = 64
    backend: str = "torch"
    seed: int = 0
    cache_samples: int = 4096

    def __post_init__(self):
        check_products(self.backend, self.chunk)
        if self.trace_probes < 0 or self.density_steps < 0 or self.density_repeats < 1:
            raise ValueError(
                f"expected trace_probes >= 0, density_steps >= 0, density_repeats >= 1, "
                f"got {self.trace_probes}, {self.density_steps}, {self.density_repeats}"
            )


@dataclass(frozen=True)
class HessianResult:
    """Curvature of the loss over the kept coordinates.

    Attributes:
        eigenvalues: the top-k eigenvalues, largest first.
        min_eigenvalue: the most negative (smallest algebraic) eigenvalue; clearly negative means a saddle.
        trace: Hutchinson estimate of the trace (None when not requested).
        trace_std_error: its standard error.
        density_grid, density: stochastic-Lanczos spectral density (empty when not requested).
        num_kept: dimension of the restricted Hessian.
        num_samples: data points in the loss.
        loss: the loss name; loss_value: the loss at the probed point.
        matvecs: Hessian-vector products used; backend: which engine produced them.
        converged: False when ARPACK stopped early (the values are its best estimates).
    """

    eigenvalues: tuple[float, ...]
    min_eigenvalue: float | None
    trace: float | None
    trace_std_error: float | None
    density_grid: tuple[float, ...]
    density: tuple[float, ...]
    num_kept: int
    num_samples: int
    loss: str
    loss_value: float
    matvecs: int
    backend: str
    converged: bool

    def to_dict(self) -> dict:
        """A JSON-ready dict."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    def scalars(self) -> dict[str, float]:
        """Flat numbers for loggers."""
        out = {f"eigenvalue_{i}": v for i, v in enumerate(self.eigenvalues)}
        out["top_eigenvalue"] = self.eigenvalues[0] if self.eigenvalues else math.nan
        if self.min_eigenvalue is not None:
            out["min_eigenvalue"] = self.min_eigenvalue
            top = abs(out["top_eigenvalue"])
            out["negative_ratio"] = min(self.min_eigenvalue, 0.0) / top if top > 0 else 0.0
        if self.trace is not None:
            out["trace"] = self.trace
        out["num_kept"] = float(self.num_kept)
        out["loss"] = self.loss_value
        return out

    def figure(self):
        """Spectral density (log scale) with the computed eigenvalues marked; None without a density."""
        if not self.density:
            return None
        from matplotlib.figure import Figure

        fig = Figure(figsize=(5, 3.2))
        ax = fig.add_subplot()
        ax.semilogy(self.density_grid, np.maximum(self.density, 1e-12), lw=1.2)
        for value in self.eigenvalues:
            ax.axvline(value, color="C3", lw=0.6, alpha=0.6)
        if self.min_eigenvalue is not None:
            ax.axvline(self.min_eigenvalue, color="C2", lw=0.8, ls="--")
        ax.set_xlabel("eigenvalue")
        ax.set_ylabel("density")
        ax.set_title(f"Hessian spectrum over {self.num_kept} kept coordinates")
        fig.tight_layout()
        return fig


def hessian_spectrum(
    model: nn.Module,
    data: DataLike,
    k: int = 5,
    *,
    masks: Mapping[str, torch.Tensor] | None = None,
    loss: str = "auto",
    options: HessianOptions | None = None,
    **knobs: Any,
) -> HessianResult:
    """Top-k and most negative Hessian eigenvalues, trace and (optionally) spectral density, on kept coordinates.

    Args:
        model: the (pruned) network; probed in eval mode, returned unchanged.
        data: the probe set, streamed in batches.
        k: number of top eigenvalues.
        masks: the masks; default the model's own (prune buffers, else exact zeros).
        loss: ``"cross_entropy"``, ``"mse"`` or ``"auto"`` (from the target dtype); both backends
            differentiate the same loss (``"mse"`` one-hot encodes integer class targets).
        options: a :class:`HessianOptions` (default ``HessianOptions()``).
        **knobs: any :class:`HessianOptions` field by name (``trace_probes=0``, ``backend="curvlinops"``,
            ...), overriding ``options``; an unknown name is a TypeError.

    Returns:
        A frozen :class:`HessianResult`.

    Example:
        >>> import torch
        >>> from prune_landscape import models
        >>> net = models.mlp([3, 4, 2]).double()
        >>> data = (torch.randn(20, 3, dtype=torch.float64), torch.randint(0, 2, (20,)))
        >>> result = hessian_spectrum(net, data, k=3)
        >>> result.eigenvalues[0] >= result.eigenvalues[1] >= result.eigenvalues[2]
        True
    """
    options = with_keywords(HessianOptions, options, knobs, where="hessian_spectrum")
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"k must be a positive int, got {k!r}")
    loss = resolve_loss(loss, data)
    kept = KeptParameters.from_model(model, masks)
    if k > kept.num_kept:
        raise ValueError(f"k must be at most the number of kept coordinates ({kept.num_kept}), got {k}")
    batches = Batches(data, options.batch_size, options.max_samples, kept.device)
    criterion = ProbeLoss(loss)
    with probing(model):
        loss_value = _checked_loss(model, kept, batches, criterion)
        operator = KeptHessianOperator(model, kept, batches, criterion, backend=options.backend, chunk=options.chunk,
                                       cache_samples=options.cache_samples)
        return _estimate(operator, k, options, loss, loss_value, batches.size)


def _eigenvalues(operator: KeptHessianOperator, k: int, options: HessianOptions) -> tuple[Eigenvalues, float | None]:
    """The top ``k`` and (when asked, or free) the smallest eigenvalue."""
    n = operator.shape[0]
    if n <= max(64, 2 * k + 2):  # small enough: the exact dense Hessian is cheaper than ARPACK
        spectrum = dense_spectrum(operator)
        return Eigenvalues(tuple(float(v) for v in spectrum[::-1][:k])), float(spectrum[0])
    try:
        top = top_eigenvalues(operator, k, tol=options.tol, seed=options.seed)
        if not options.min_eigenvalue:
            return top, None
        bottom = smallest_eigenvalue(operator, tol=options.tol, seed=options.seed)
    except RuntimeError as error:
        raise RuntimeError(f"hessian_spectrum: {error} (the {n}-dimensional kept-coordinate Hessian); check that the "
                           f"loss and its gradient are finite") from error
    return Eigenvalues(top.values, top.converged and bottom.converged), bottom.value


def _estimate(operator: KeptHessianOperator, k: int, options: HessianOptions, loss: str, loss_value: float,
              num_samples: int) -> HessianResult:
    """Run the estimators ``options`` ask for on ``operator``; the random probes share one generator."""
    top, bottom = _eigenvalues(operator, k, options)
    generator = torch.Generator().manual_seed(int(options.seed))
    trace = hutchinson_trace(operator, options.trace_probes, generator, block=options.chunk) if options.trace_probes else None
    grid: tuple[float, ...] = ()
    density: tuple[float, ...] = ()
    if options.density_steps:
        low = bottom if bottom is not None else min(top.values)
        bounds = (min(low, top.values[-1]), top.values[0])
        smoothed = spectral_density(operator, options.density_steps, bounds, generator, repeats=options.density_repeats)
        grid, density = smoothed.grid, smoothed.density
    return HessianResult(
        eigenvalues=top.values,
        min_eigenvalue=bottom,
        trace=None if trace is None else trace.mean,
        trace_std_error=None if trace is None else trace.std_error,
        density_grid=grid,
        density=density,
        num_kept=operator.shape[0],
        num_samples=num_samples,
        loss=loss,
        loss_value=loss_value,
        matvecs=operator.matvecs,
        backend=options.backend,
        converged=top.converged,
    )


def _checked_loss(model: nn.Module, kept: KeptParameters, batches: Batches, criterion: ProbeLoss) -> float:
    """The loss at the probed point; a diverged model (NaN/inf weights or loss) has no Hessian: say so before
    ARPACK fails on it."""
    bad = [kept.user_names.get(name, name) for name, value in kept.values.items() if not bool(torch.isfinite(value).all())]
    if bad:
        raise ValueError(f"hessian_spectrum: the model has non-finite weights in {bad} (it diverged); expected finite "
                         f"weights, the Hessian is undefined there")
    total = 0.0
    with torch.no_grad():
        for x, y in batches:
            total += float(criterion(functional_call(model, kept.values, (x,)), y)) * x.shape[0]
    value = total / batches.size
    if not math.isfinite(value):
        raise ValueError(f"hessian_spectrum: the {criterion.loss_name} loss at the probed point is {value} (the model "
                         f"diverged or the data holds non-finite values); expected a finite loss")
    return value
