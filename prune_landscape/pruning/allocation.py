"""From scores to masks: scope (global / layer-wise / ERK) and the final-layer policy. Pure code.

Every function here works on plain dicts of CPU tensors and never touches a model, so the same rules
drive one-shot pruning, the exponential schedule at init, gradual magnitude pruning and IMP.

- ``Scope.GLOBAL``: one top-k over all prunable weights (the papers' default).
- ``Scope.LAYERWISE``: every layer keeps the same fraction of its weights.
- ``Scope.ERK``: Erdos-Renyi-Kernel densities (Evci et al. 2020, RigL): a layer's density is proportional
  to ``sum(shape) / prod(shape)``; layers that would exceed density 1 stay dense and the rest share the
  remainder. Within each layer the highest scores are kept.
- Final layer: ``prune`` (no special treatment), ``dense`` (kept whole, budget taken from the other layers
  so the global density is still exact), or a density floor (the final layer keeps at least
  ``ceil(x * size)`` weights, chosen by its own scores, the budget again taken from the others).

Example:
    >>> import torch
    >>> scores = {"a": torch.tensor([4.0, 3.0, 2.0, 1.0]), "b": torch.tensor([5.0, 0.5])}
    >>> current = {n: torch.ones_like(s, dtype=torch.bool) for n, s in scores.items()}
    >>> masks = allocate(scores, current, 3, final_layer="b", policy=FinalLayerPolicy.parse("dense"))
    >>> masks["a"].tolist(), masks["b"].tolist()
    ([True, False, False, False], [True, True])
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum

import torch

from prune_landscape.checks import check_sparsity
from prune_landscape.pruning.topk import apportion, topk_mask

__all__ = [
    "AllocationRule",
    "FinalLayerFit",
    "FinalLayerMode",
    "FinalLayerPolicy",
    "Scope",
    "allocate",
    "allocation_rule",
    "apply_rule",
    "check_final_layer_budget",
    "check_scores",
    "final_layer_fit",
    "masks_at_sparsity",
    "num_to_keep",
]


class Scope(str, Enum):
    """How the kept budget is spread over layers."""

    GLOBAL = "global"
    LAYERWISE = "layerwise"
    ERK = "erk"

    @classmethod
    def parse(cls, value: str | Scope) -> Scope:
        """``"global"``, ``"layerwise"`` (also ``"local"``) or ``"erk"``."""
        if isinstance(value, Scope):
            return value
        aliases = {"local": "layerwise", "layer": "layerwise", "layer_wise": "layerwise"}
        text = aliases.get(str(value).lower(), str(value).lower())
        if text in cls._value2member_map_:
            return cls(text)
        raise ValueError(f"scope must be one of {[s.value for s in cls]}, got {value!r}")


class FinalLayerMode(str, Enum):
    """What happens to the final (classifier) layer."""

    PRUNE = "prune"
    DENSE = "dense"
    MIN_DENSITY = "min_density"


@dataclass(frozen=True)
class FinalLayerPolicy:
    """The final-layer policy: ``mode`` and, for ``MIN_DENSITY``, the floor ``min_density`` in (0, 1]."""

    mode: FinalLayerMode = FinalLayerMode.PRUNE
    min_density: float | None = None

    @classmethod
    def parse(cls, value: str | float | FinalLayerPolicy, name: str = "final_layer") -> FinalLayerPolicy:
        """Accept ``"prune"``, ``"dense"``, a float floor like ``0.3`` or the string ``"min_density=0.3"``.

        Args:
            value: the policy in any accepted form (a :class:`FinalLayerPolicy` is returned as is).
            name: the argument's name in error messages (``prune()`` passes the keyword the user wrote).

        Raises:
            ValueError: naming the accepted forms and the value given.
        """
        if isinstance(value, FinalLayerPolicy):
            return value
        if isinstance(value, str) and value.lower() in ("prune", "dense"):
            return cls(FinalLayerMode(value.lower()))
        if isinstance(value, str) and value.replace(" ", "").lower().startswith("min_density="):
            text = value.replace(" ", "").split("=", 1)[1]
            try:
                floor = float(text)
            except ValueError:
                raise ValueError(f"{name} 'min_density=x' needs a number x, got {value!r}") from None
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            floor = float(value)
        else:
            raise ValueError(f"{name} must be 'prune', 'dense', a density in (0, 1] or 'min_density=x', got {value!r}")
        if not 0.0 < floor <= 1.0 or math.isnan(floor):
            raise ValueError(f"{name} min density must be in (0, 1], got {floor}")
        return cls(FinalLayerMode.MIN_DENSITY, floor)


def num_to_keep(density: float, total: int) -> int:
    """The exact kept count, ``round(density * total)`` (Python's round: halves go to the even integer)."""
    return int(round(density * total))


def _erk_weight(shape: torch.Size) -> int:
    # n_l * (sum of dims / product of dims) = sum of dims: the ERK share of a layer before capping.
    return int(sum(shape)) if len(shape) else 1


def _select(
    scores: Mapping[str, torch.Tensor], current: Mapping[str, torch.Tensor], names: list[str], budget: int, scope: Scope
) -> dict[str, torch.Tensor]:
    if not names:
        return {}
    if scope is Scope.GLOBAL:
        # One common dtype (float32 when every score is float32; widening is exact, the ranking the same).
        dtype = functools.reduce(torch.promote_types, [scores[n].dtype for n in names])
        dtype = dtype if dtype.is_floating_point else torch.float64
        flat_scores = torch.cat([scores[n].reshape(-1).to("cpu", dtype) for n in names])
        flat_available = torch.cat([current[n].reshape(-1).cpu() for n in names])
        flat_keep = topk_mask(flat_scores, budget, flat_available)
        out, start = {}, 0
        for n in names:
            size = current[n].numel()
            out[n] = flat_keep[start : start + size].reshape(current[n].shape)
            start += size
        return out
    caps = [int(current[n].sum()) for n in names]
    if scope is Scope.LAYERWISE:
        weights: list[int] = [current[n].numel() for n in names]
    else:
        weights = [_erk_weight(current[n].shape) for n in names]
    counts = apportion(budget, weights, caps)
    return {n: topk_mask(scores[n], k, current[n]) for n, k in zip(names, counts)}


def check_final_layer_budget(
    current: Mapping[str, torch.Tensor], num_keep: int, final_layer: str | None, policy: FinalLayerPolicy
) -> int:
    """The final layer's guaranteed kept count under ``policy``; raises (with numbers) if it cannot fit.

    Called once per pruning call, by :func:`allocation_rule` (before any scoring in :func:`prune`).
    """
    if policy.mode is FinalLayerMode.PRUNE:
        return 0
    if final_layer not in current:
        raise ValueError(f"final layer {final_layer!r} is not among the masked tensors {list(current)}")
    final_available = int(current[final_layer].sum())
    total = sum(m.numel() for m in current.values())
    size = current[final_layer].numel()
    if policy.mode is FinalLayerMode.DENSE:
        if final_available > num_keep:
            raise ValueError(
                f"final_layer='dense' does not fit: {final_layer} alone keeps {final_available:,} weights but the whole "
                f"budget is {num_keep:,} of {total:,} ({100 * final_available / max(1, num_keep):.0f} % of it). "
                f"{final_layer_fit(num_keep, size, final_available, total).advice()}"
            )
        return final_available
    floor = min(final_available, math.ceil(policy.min_density * size - 1e-9))  # type: ignore[operator]
    if floor > num_keep:
        raise ValueError(
            f"final_layer min density {policy.min_density} needs {floor:,} weights of {final_layer} but the whole "
            f"budget is {num_keep:,} of {total:,}. {final_layer_fit(num_keep, size, floor, total).advice()}"
        )
    return floor


@dataclass(frozen=True)
class FinalLayerFit:
    """Whether a final layer kept whole fits a kept budget, and the largest settings that do.

    Attributes:
        fits: ``needed <= num_keep``.
        needed: weights the final layer must keep (all of its kept weights for ``dense``).
        num_keep: the kept budget over all prunable weights.
        fraction_of_budget: ``needed / num_keep`` (what a "keep it dense" remedy costs).
        largest_min_density: the largest floor ``d`` (4 decimals, rounded down) with
            ``ceil(d * size) <= num_keep``: ``final_layer=d`` always fits; 0 when none does.
        largest_sparsity: the largest sparsity (4 decimals, rounded down) whose kept count
            ``round((1 - s) * total)`` still holds ``needed`` weights.
    """

    fits: bool
    needed: int
    num_keep: int
    fraction_of_budget: float
    largest_min_density: float
    largest_sparsity: float

    def advice(self) -> str:
        """One sentence with the two ways out (used in the errors of :func:`check_final_layer_budget`)."""
        floor_text = (
            f"The largest final-layer floor that fits is min_density={self.largest_min_density:g} "
            f"(final_layer_policy={self.largest_min_density:g})"
            if self.largest_min_density > 0
            else "No final-layer floor fits"
        )
        return f"{floor_text}; or lower the sparsity to at most {self.largest_sparsity:g}"


def final_layer_fit(num_keep: int, size: int, needed: int, total: int) -> FinalLayerFit:
    """Does keeping ``needed`` of the final layer's ``size`` weights fit ``num_keep`` kept of ``total``?

    Example:
        >>> fit = final_layer_fit(num_keep=333, size=640, needed=640, total=1664)
        >>> fit.fits, fit.largest_min_density, fit.largest_sparsity, round(fit.fraction_of_budget, 2)
        (False, 0.5203, 0.6156, 1.92)
    """
    largest_floor = math.floor(num_keep / size * 1e4) / 1e4 if size else 0.0
    # round((1 - s) * total) >= needed  <=>  s <= 1 - (needed - 0.5) / total; a hair below, so rounding
    # at the boundary (Python's round-half-even) cannot cross it.
    largest_sparsity = max(0.0, math.floor((1 - (needed - 0.5 + 1e-6) / total) * 1e4) / 1e4) if total else 0.0
    return FinalLayerFit(
        fits=needed <= num_keep,
        needed=needed,
        num_keep=num_keep,
        fraction_of_budget=needed / num_keep if num_keep else math.inf,
        largest_min_density=largest_floor,
        largest_sparsity=largest_sparsity,
    )


@dataclass(frozen=True)
class AllocationRule:
    """How a kept count becomes masks, decided once per pruning call and passed to every step.

    Attributes:
        scope: how the budget is spread over layers.
        policy: the final-layer policy.
        final_layer: the final layer's weight name (None when the policy is ``prune``).
        floor: the final layer's guaranteed kept count (0 for ``prune``); checked against the smallest
            budget by :func:`allocation_rule`, so no step checks it again.
    """

    scope: Scope = Scope.GLOBAL
    policy: FinalLayerPolicy = FinalLayerPolicy()
    final_layer: str | None = None
    floor: int = 0


def allocation_rule(
    current: Mapping[str, torch.Tensor],
    num_keep: int,
    *,
    scope: Scope,
    final_layer: str | None,
    policy: FinalLayerPolicy,
) -> AllocationRule:
    """The rule for pruning ``current`` down to at least ``num_keep`` kept, the final-layer budget checked once.

    The floor does not change across the steps of a schedule: a dense final layer keeps what it has and a
    floored one never drops below its floor, so checking it against the last (smallest) budget suffices.

    Raises:
        ValueError: if the final-layer policy cannot fit ``num_keep`` (as :func:`check_final_layer_budget`).
    """
    floor = check_final_layer_budget(current, num_keep, final_layer, policy)
    return AllocationRule(scope, policy, final_layer if policy.mode is not FinalLayerMode.PRUNE else None, floor)


def check_scores(scores: Mapping[str, torch.Tensor], current: Mapping[str, torch.Tensor]) -> None:
    """Raise unless ``scores`` has exactly the names of ``current``, each with its mask's shape."""
    if set(scores) != set(current):
        missing = sorted(set(current) - set(scores))
        extra = sorted(set(scores) - set(current))
        raise ValueError(f"scores must cover exactly the masked tensors; missing {missing}, unexpected {extra}")
    for n in current:
        if tuple(scores[n].shape) != tuple(current[n].shape):
            raise ValueError(f"score {n!r}: expected shape {tuple(current[n].shape)}, got {tuple(scores[n].shape)}")


def apply_rule(
    rule: AllocationRule, scores: Mapping[str, torch.Tensor], current: Mapping[str, torch.Tensor], num_keep: int
) -> dict[str, torch.Tensor]:
    """Keep exactly ``num_keep`` entries under an already checked ``rule`` (no parsing, no budget check).

    ``scores`` must match ``current`` (:func:`check_scores`) and ``rule.floor <= num_keep`` must hold, which
    :func:`allocation_rule` guaranteed for every budget down to the one it was built for.
    """
    names = list(current)
    current = {n: current[n].cpu() for n in names}
    final = rule.final_layer
    if rule.policy.mode is FinalLayerMode.PRUNE:
        return _select(scores, current, names, num_keep, rule.scope)
    others = [n for n in names if n != final]
    if rule.policy.mode is FinalLayerMode.DENSE:
        masks = _select(scores, current, others, num_keep - rule.floor, rule.scope)
        masks[final] = current[final].clone()  # type: ignore[index]
        return masks
    masks = _select(scores, current, names, num_keep, rule.scope)
    if int(masks[final].sum()) >= rule.floor:  # type: ignore[index]
        return masks
    masks = _select(scores, current, others, num_keep - rule.floor, rule.scope)
    masks[final] = topk_mask(scores[final], rule.floor, current[final])  # type: ignore[index]
    return masks


def allocate(
    scores: Mapping[str, torch.Tensor],
    current: Mapping[str, torch.Tensor],
    num_keep: int,
    *,
    scope: Scope | str = Scope.GLOBAL,
    final_layer: str | None = None,
    policy: FinalLayerPolicy | str | float = FinalLayerPolicy(),
) -> dict[str, torch.Tensor]:
    """Keep exactly ``num_keep`` entries (higher score kept first) under ``scope`` and the final-layer policy.

    The one-call form of :func:`allocation_rule` + :func:`apply_rule`, for callers that allocate once.

    Args:
        scores: name -> score tensor (higher = more important).
        current: name -> bool mask in force; entries already pruned are never revived.
        num_keep: the exact total kept count over all tensors.
        scope: ``"global"``, ``"layerwise"`` or ``"erk"``.
        final_layer: the final layer's weight name (needed unless the policy is ``prune``).
        policy: a :class:`FinalLayerPolicy` or what :meth:`FinalLayerPolicy.parse` accepts.

    Returns:
        name -> bool mask (CPU), every mask a subset of ``current``.

    Raises:
        ValueError: if ``num_keep`` exceeds what ``current`` keeps, or the final-layer policy cannot be met
            (the message gives the numbers).
    """
    check_scores(scores, current)
    available = sum(int(m.sum()) for m in current.values())
    if not 0 <= num_keep <= available:
        raise ValueError(
            f"num_keep must be in [0, {available}] (masks only shrink: {available} weights are kept now), got {num_keep}"
        )
    current = {n: m.cpu() for n, m in current.items()}
    rule = allocation_rule(
        current, num_keep, scope=Scope.parse(scope), final_layer=final_layer, policy=FinalLayerPolicy.parse(policy)
    )
    return apply_rule(rule, scores, current, num_keep)


def masks_at_sparsity(
    scores: Mapping[str, torch.Tensor],
    sparsity: float,
    *,
    scope: Scope | str = Scope.GLOBAL,
    final_layer: str | None = None,
    policy: FinalLayerPolicy | str | float = FinalLayerPolicy(),
) -> dict[str, torch.Tensor]:
    """Masks over unpruned tensors keeping ``round((1 - sparsity) * N)`` entries: :func:`allocate` from dense.

    For callers that score a model themselves and need the package's budget rule (exact count, scope,
    final-layer policy) without a mask in force.

    Example:
        >>> scores = {"a": torch.tensor([4.0, 3.0, 2.0, 1.0]), "b": torch.tensor([5.0, 0.5])}
        >>> masks = masks_at_sparsity(scores, 0.5, final_layer="b", policy="dense")
        >>> masks["a"].tolist(), masks["b"].tolist()
        ([True, False, False, False], [True, True])
    """
    sparsity = check_sparsity(sparsity)
    current = {n: torch.ones(s.shape, dtype=torch.bool) for n, s in scores.items()}
    total = sum(m.numel() for m in current.values())
    return allocate(scores, current, num_to_keep(1.0 - sparsity, total), scope=scope, final_layer=final_layer, policy=policy)
