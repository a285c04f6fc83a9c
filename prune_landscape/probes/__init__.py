"""Empirical probes of a pruned network's loss landscape, all mask-aware.

Only kept coordinates move; pruned weights stay exactly zero; the model comes back in the mode and with
the weights it came in with. Masks default to ``MaskSet.from_module(model)``.

- :func:`hessian_spectrum`: top-k and most negative eigenvalues, trace, spectral density (kept coordinates).
- :func:`loss_surface` / :func:`interpolate`: filter-normalised 1-D/2-D slices; linear paths and barriers.
- :func:`final_layer_gap`: current vs masked-optimal vs dense-optimal final layer on fixed features.
- :func:`restart_spread` / :func:`final_layer_ab`: restarts of one mask; sparse vs dense final layer A/B.

Each entry takes its knobs as one frozen options value (:class:`HessianOptions`, :class:`SurfaceOptions`,
:class:`GridOptions`, :class:`GapOptions`) or, as before, as keywords. The pieces underneath are public:
:mod:`.kept` (kept coordinates, the probe set, the one :class:`ProbeLoss`), :mod:`.batched` (many points'
losses at once), :mod:`.hessian_operator` (``H_kk`` as a SciPy ``LinearOperator``), :mod:`.estimators`
(top-k, trace, density for any such operator) and :mod:`.head_solvers` (the head's convex problems).

``PROBES`` maps a name to a callable ``(model, data) -> result`` with default options; every result has
``to_dict()``, ``scalars()`` and ``figure()``.

Example:
    >>> import torch
    >>> from prune_landscape import models
    >>> from prune_landscape.probes import PROBES
    >>> data = (torch.randn(64, 4), torch.randint(0, 3, (64,)))
    >>> gap = PROBES["final_layer_gap"](models.mlp([4, 16, 3]), data)
    >>> sorted(gap.scalars())[:2]
    ['current', 'dense_optimum']
"""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from prune_landscape.batching import DataLike
from prune_landscape.probes.final_layer_gap import FinalLayerGapResult, GapOptions, final_layer_gap
from prune_landscape.probes.hessian import HessianOptions, HessianResult, hessian_spectrum
from prune_landscape.probes.hessian_operator import KeptHessianOperator
from prune_landscape.probes.kept import KeptParameters, ProbeLoss
from prune_landscape.probes.restarts import (
    FinalLayerABResult,
    RestartSpreadResult,
    budget_matched_masks,
    final_layer_ab,
    restart_spread,
)
from prune_landscape.probes.surface import (
    GridOptions,
    InterpolationResult,
    SurfaceOptions,
    SurfaceResult,
    filter_normalized_direction,
    interpolate,
    loss_surface,
)

__all__ = [
    "PROBES",
    "FinalLayerABResult",
    "FinalLayerGapResult",
    "GapOptions",
    "GridOptions",
    "HessianOptions",
    "HessianResult",
    "InterpolationResult",
    "KeptHessianOperator",
    "KeptParameters",
    "ProbeLoss",
    "RestartSpreadResult",
    "SurfaceOptions",
    "SurfaceResult",
    "budget_matched_masks",
    "filter_normalized_direction",
    "final_layer_ab",
    "final_layer_gap",
    "hessian_spectrum",
    "interpolate",
    "loss_surface",
    "restart_spread",
]


def _hessian(model: nn.Module, data: DataLike) -> HessianResult:
    return hessian_spectrum(model, data, k=5, max_samples=2048)


def _surface(model: nn.Module, data: DataLike) -> SurfaceResult:
    return loss_surface(model, data, steps=21, dims=2, max_samples=2048)


def _restart_spread(model: nn.Module, data: DataLike) -> RestartSpreadResult:
    return restart_spread(model, data, seeds=5, epochs=5)


#: Probe name -> callable ``(model, data) -> result`` with default options (``interpolate`` needs two
#: points and ``final_layer_ab`` a sparsity, so neither is here).
PROBES: dict[str, Callable[[nn.Module, DataLike], object]] = {
    "hessian": _hessian,
    "surface": _surface,
    "final_layer_gap": final_layer_gap,
    "restart_spread": _restart_spread,
}
