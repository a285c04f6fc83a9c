"""Restart spread and the dense-vs-sparse final-layer A/B (THEORY.md section 6, rules NL-1 and NL-3).

``restart_spread`` trains one mask from K fresh initialisations and reports the spread of final training
losses. ``final_layer_ab`` prunes each of K initialisations twice at the same total budget, once with the
final layer pruned like the rest and once with it kept dense (its weights taken from the other layers),
trains both from the same initialisation and batch order, and compares the final losses pairwise:
mean difference (sparse - dense) with a t confidence interval, the paired t-test and Wilcoxon's
signed-rank test.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass

import numpy as np
import torch
from scipy import stats
from torch import nn

from prune_landscape.batching import DataLike, first_batch, num_samples
from prune_landscape.checks import check_sparsity, renamed_keyword
from prune_landscape.masks import MaskSet, find_parameter, make_pruning_permanent, prunable_parameters, stored_tensor
from prune_landscape.modelcopy import copy_model
from prune_landscape.probes.kept import resolve_loss
from prune_landscape.pruning import prune
from prune_landscape.pruning.allocation import FinalLayerPolicy, allocate, num_to_keep
from prune_landscape.pruning.reinit import redraw_initial_weights
from prune_landscape.layers import final_layer_name
from prune_landscape.structure import analyze_structure
from prune_landscape.training import train

__all__ = [
    "FinalLayerABResult",
    "RestartSpreadResult",
    "budget_matched_masks",
    "final_layer_ab",
    "restart_spread",
]


@dataclass(frozen=True)
class RestartSpreadResult:
    """Final training losses of one mask trained from several seeds."""

    seeds: tuple[int, ...]
    final_losses: tuple[float, ...]
    loss: str

    def to_dict(self) -> dict:
        """A JSON-ready dict with the summary numbers."""
        return {"seeds": list(self.seeds), "final_losses": list(self.final_losses), "loss": self.loss, **self.scalars()}

    def scalars(self) -> dict[str, float]:
        """Mean, standard deviation, min, max and the max/min ratio of the final losses."""
        values = np.asarray(self.final_losses)
        return {"mean": float(values.mean()), "std": float(values.std(ddof=1)) if len(values) > 1 else 0.0,
                "min": float(values.min()), "max": float(values.max()), "num_restarts": float(len(values))}

    def figure(self):
        """Strip plot of the final losses."""
        from matplotlib.figure import Figure

        fig = Figure(figsize=(4, 3.2))
        ax = fig.add_subplot()
        ax.plot(np.zeros(len(self.final_losses)), self.final_losses, "o", alpha=0.6)
        ax.set_xticks([])
        ax.set_ylabel(f"final {self.loss} loss")
        ax.set_title(f"{len(self.final_losses)} restarts")
        fig.tight_layout()
        return fig


@dataclass(frozen=True)
class FinalLayerABResult:
    """Paired comparison of final training losses: sparse final layer (A) vs dense final layer (B)."""

    seeds: tuple[int, ...]
    sparse_losses: tuple[float, ...]
    dense_losses: tuple[float, ...]
    sparse_fan_in_min: tuple[int, ...]
    num_samples: int
    sparsity: float
    loss: str
    confidence: float = 0.95

    @property
    def differences(self) -> np.ndarray:
        """``sparse - dense`` per seed; positive means the sparse final layer trained worse."""
        return np.asarray(self.sparse_losses) - np.asarray(self.dense_losses)

    def _statistics(self) -> dict[str, float]:
        d = self.differences
        n = len(d)
        mean = float(d.mean())
        if n < 2:
            return {"mean_difference": mean, "ci_low": math.nan, "ci_high": math.nan, "t_statistic": math.nan,
                    "t_pvalue": math.nan, "wilcoxon_pvalue": math.nan}
        half = float(stats.t.ppf(0.5 + self.confidence / 2, n - 1) * d.std(ddof=1) / math.sqrt(n))
        test = stats.ttest_rel(self.sparse_losses, self.dense_losses)
        wilcoxon = stats.wilcoxon(d) if np.any(d != 0) else None
        return {"mean_difference": mean, "ci_low": mean - half, "ci_high": mean + half,
                "t_statistic": float(test.statistic), "t_pvalue": float(test.pvalue),
                "wilcoxon_pvalue": float(wilcoxon.pvalue) if wilcoxon is not None else 1.0,
                "sparse_wins": float((d < 0).sum()), "dense_wins": float((d > 0).sum())}

    def to_dict(self) -> dict:
        """A JSON-ready dict: per-seed losses and the paired statistics."""
        out = {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}
        return {**out, **self._statistics()}

    def scalars(self) -> dict[str, float]:
        """Means of both arms and the paired statistics."""
        return {"sparse_mean": float(np.mean(self.sparse_losses)), "dense_mean": float(np.mean(self.dense_losses)),
                **self._statistics()}

    def figure(self):
        """Paired lines, one per seed, from the sparse to the dense final layer (log scale)."""
        from matplotlib.figure import Figure

        s = self._statistics()
        fig = Figure(figsize=(4.8, 3.6))
        ax = fig.add_subplot()
        for a, b in zip(self.sparse_losses, self.dense_losses):
            ax.plot([0, 1], [a, b], "-o", color="C0" if a > b else "C3", alpha=0.6, ms=4)
        ax.set_xticks([0, 1], ["sparse final layer", "dense final layer"])
        ax.set_xlim(-0.3, 1.3)
        if min(self.sparse_losses + self.dense_losses) > 0:
            ax.set_yscale("log")
        ax.set_ylabel(f"final training {self.loss} loss")
        ax.set_title(f"same budget, {len(self.seeds)} seeds: diff {s['mean_difference']:.3g} "
                     f"[{s['ci_low']:.3g}, {s['ci_high']:.3g}]\nWilcoxon p = {s['wilcoxon_pvalue']:.2g}", fontsize=9)
        fig.tight_layout()
        return fig


def _fresh_copy(model: nn.Module, seed: int) -> nn.Module:
    """A deep copy without pruning hooks, its weights re-drawn from ``seed`` (:func:`redraw_initial_weights`)."""
    fresh = copy_model(model)
    make_pruning_permanent(fresh)
    redraw_initial_weights(fresh, int(seed))
    for param in fresh.parameters():
        param.grad = None
    return fresh


def _seed_list(seeds: int | Sequence[int]) -> tuple[int, ...]:
    values = tuple(range(seeds)) if isinstance(seeds, int) else tuple(int(s) for s in seeds)
    if not values:
        raise ValueError(f"seeds must be a positive count or a non-empty list, got {seeds!r}")
    return values


def restart_spread(
    model: nn.Module,
    data: DataLike,
    *,
    seeds: int | Sequence[int] = 5,
    masks: Mapping[str, torch.Tensor] | None = None,
    loss: str = "auto",
    **train_options,
) -> RestartSpreadResult:
    """Train the same mask from several fresh initialisations; the model itself is not touched.

    Args:
        model: supplies architecture and (by default) masks; each restart trains a re-initialised copy.
        data: training data.
        seeds: a count K (seeds 0..K-1) or explicit seeds; each decides the init and the batch order.
        masks: default the model's own.
        loss: ``"cross_entropy"``, ``"mse"`` or ``"auto"``.
        **train_options: passed to :func:`prune_landscape.training.train` (epochs, lr, optimizer, ...).

    Example:
        >>> import torch
        >>> from prune_landscape import models
        >>> data = (torch.randn(32, 4), torch.randint(0, 2, (32,)))
        >>> spread = restart_spread(models.mlp([4, 8, 2]), data, seeds=3, epochs=2)
        >>> len(spread.final_losses)
        3
    """
    seed_values = _seed_list(seeds)
    loss = resolve_loss(loss, data)
    mask_set = MaskSet.for_model(model, masks)
    losses = []
    for seed in seed_values:
        fresh = _fresh_copy(model, seed)
        losses.append(train(fresh, data, masks=mask_set, seed=seed, loss=loss, **train_options).final_loss)
    return RestartSpreadResult(seed_values, tuple(losses), loss)


def budget_matched_masks(
    model: nn.Module,
    sparsity: float,
    *,
    final_layer_policy: str | None = None,
    seed: int = 0,
    method: str = "random",
    final_layer: str | None = None,
) -> MaskSet:
    """Global masks at one total budget, with the final layer pruned like the rest or kept dense.

    Kept count over all prunable weights is ``round((1 - sparsity) * N)`` either way;
    ``final_layer_policy="dense"`` keeps every final-layer weight and spends the rest of the budget on the
    other layers (:func:`prune_landscape.pruning.allocation.allocate` decides). ``method`` is ``"random"``
    (seeded uniform scores) or ``"magnitude"`` (|w| of the unmasked weights); masks the model carries are
    ignored. ``final_layer_policy=None`` means "prune"; ``final_layer`` is its deprecated name (warns; giving
    both is a ValueError).

    Raises:
        ValueError: if the dense final layer alone exceeds the budget (with the numbers and the ways out).
    """
    given = {} if final_layer is None else {"final_layer": final_layer}
    final_layer_policy, _ = renamed_keyword(given, "final_layer", "final_layer_policy", final_layer_policy,
                                            where="budget_matched_masks")
    final_layer_policy = "prune" if final_layer_policy is None else final_layer_policy
    sparsity = check_sparsity(sparsity)
    if final_layer_policy not in ("prune", "dense") or method not in ("random", "magnitude"):
        raise ValueError(f"expected final_layer_policy in ('prune', 'dense') and method in ('random', 'magnitude'), "
                         f"got {final_layer_policy!r}, {method!r}")
    names = prunable_parameters(model)
    weights = {n: find_parameter(model, n) for n in names}
    values = {n: stored_tensor(m, a).detach().cpu() for n, (m, a) in weights.items()}
    generator = torch.Generator().manual_seed(int(seed))
    scores = {n: (torch.rand(v.shape, generator=generator) if method == "random" else v.abs().double()) for n, v in values.items()}
    everything = {n: torch.ones(v.shape, dtype=torch.bool) for n, v in values.items()}
    budget = num_to_keep(1 - sparsity, sum(v.numel() for v in values.values()))
    return MaskSet(allocate(scores, everything, budget, final_layer=final_layer_name(model),
                            policy=FinalLayerPolicy.parse(final_layer_policy)))


def final_layer_ab(
    model: nn.Module,
    data: DataLike,
    *,
    sparsity: float,
    method: str = "random",
    seeds: int | Sequence[int] = 8,
    loss: str = "auto",
    confidence: float = 0.95,
    **train_options,
) -> FinalLayerABResult:
    """Sparse vs dense final layer at the same total budget, trained pairwise from the same inits.

    Args:
        model: the architecture; for each seed a copy is re-initialised, pruned twice (final layer
            ``"prune"`` and ``"dense"``) and both copies trained with the same seed.
        data: training data; the losses compared are final training losses.
        sparsity: global sparsity over all prunable weights, the same for both arms.
        method: pruning method (``prune_landscape.pruning.prune``).
        seeds: count or explicit list (at least 2 for the statistics; 8+ recommended).
        loss: ``"cross_entropy"``, ``"mse"`` or ``"auto"``.
        confidence: level of the t interval on the mean difference.
        **train_options: passed to :func:`prune_landscape.training.train`.

    Example:
        >>> import torch
        >>> from prune_landscape import models
        >>> data = (torch.randn(20, 6), torch.randn(20, 2))
        >>> ab = final_layer_ab(models.mlp([6, 8, 2]), data, sparsity=0.5, seeds=2, epochs=2, batch_size=None)
        >>> len(ab.differences)
        2
    """
    seed_values = _seed_list(seeds)
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    loss = resolve_loss(loss, data)
    example = first_batch(data)[0][:1]
    sparse_losses, dense_losses, fan_in = [], [], []
    for seed in seed_values:
        base = _fresh_copy(model, seed)
        for arm, results in (("prune", sparse_losses), ("dense", dense_losses)):
            masks = prune(base, method, sparsity, data, final_layer_policy=arm, seed=seed)
            trained = copy_model(base)
            results.append(train(trained, data, masks=masks, seed=seed, loss=loss, **train_options).final_loss)
            if arm == "prune":
                fan_in.append(analyze_structure(base, example, masks).fan_in_min)
    return FinalLayerABResult(seed_values, tuple(sparse_losses), tuple(dense_losses), tuple(fan_in),
                              int(num_samples(data) or 0), float(sparsity), loss, float(confidence))
