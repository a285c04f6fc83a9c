"""``prune()`` and ``magnitude_step()``: options -> prune set -> schedule, on a private copy; returns a MaskSet.

``prune`` reads as its three steps: :func:`~prune_landscape.pruning.options.parse_options` checks every
argument once (typed :class:`~prune_landscape.pruning.options.PruneOptions`);
:func:`~prune_landscape.pruning.prepare.build_prune_set` prepares what the scorer is fed, after the final
layer's budget is checked once (:func:`~prune_landscape.pruning.allocation.allocation_rule`);
:func:`run_schedule` scores and allocates, one shot or round by round (below).

The schedule: round ``t`` of ``T`` keeps ``d ** (t / T)`` of the weights (``d`` the target density, counted
from the masks in force) and the last keeps exactly the target; each round re-scores under the mask the
previous one left, and pruned entries never come back. Every random draw comes from one seeded generator,
and layers that draw from the global RNG (dropout in train-mode passes) draw from a stream derived from
the same seed inside ``torch.random.fork_rng``: same seed, same mask, the caller's RNG state untouched.

Example:
    >>> from prune_landscape import models
    >>> net = models.mlp([20, 10, 5])
    >>> masks = prune(net, "magnitude", 0.9)
    >>> masks.num_kept, masks.num_total
    (25, 250)
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from prune_landscape.batching import DataLike
from prune_landscape.checks import check_sparsity
from prune_landscape.masks import MaskSet
from prune_landscape.progress import Progress
from prune_landscape.pruning.allocation import (
    AllocationRule,
    FinalLayerMode,
    FinalLayerPolicy,
    Scope,
    allocation_rule,
    apply_rule,
    check_scores,
)
from prune_landscape.pruning.magnitude import magnitude_scores
from prune_landscape.pruning.options import PruneOptions, parse_model_feed, parse_options, parse_policy
from prune_landscape.pruning.prepare import build_prune_set, probe_outputs
from prune_landscape.pruning.pruneset import NTK_SAP_MAX_DEFAULT_SAMPLES
from prune_landscape.pruning.schedules import exponential_densities, kept_at
from prune_landscape.pruning.state import MasksInForce, resolve_final_layer
from prune_landscape.pruning.workspace import model_device, working_copy

__all__ = ["NTK_SAP_MAX_DEFAULT_SAMPLES", "kept_counts", "magnitude_step", "prune", "run_schedule"]

Policy = str | float | FinalLayerPolicy | None


def prune(
    model: nn.Module,
    method: str,
    sparsity: float,
    data: DataLike | None = None,
    *,
    final_layer_policy: Policy = None,
    scope: str | Scope = "global",
    seed: int = 0,
    **options: Any,
) -> MaskSet:
    """Compute a pruning mask; the model is left exactly as found (apply it with ``masks.apply_to(model)``).

    Args:
        model: any module; its prunable weights are :func:`~prune_landscape.masks.prunable_parameters` (tied
            ones count once). Masks it already carries stay in force; ``sparsity`` is then the total target.
        method: one of :func:`available_methods` (``magnitude``, ``random``, ``snip``, ``grasp``, ``synflow``,
            ``ntk_sap`` or a registered one); one that cannot score this model is refused first (:mod:`.fit`).
        sparsity: fraction of the prunable weights removed, in [0, 1): exactly ``round((1 - sparsity) * N)``
            weights are kept (ties: :mod:`.topk`).
        data: a DataLoader, Dataset or (inputs, targets) pair of any structure (:mod:`prune_landscape.batching`);
            SNIP and GraSP need it with targets, NTK-SAP and SynFlow it, an example or ``input_shape=``.
        final_layer_policy: ``"prune"`` (default, as in the papers; also ``None``), ``"dense"``, a min density
            (``0.3`` or ``"min_density=0.3"``) or a :class:`FinalLayerPolicy`; an impossible one raises, naming
            the largest floor that fits. ``final_layer=`` is its deprecated name (a DeprecationWarning).
        scope: ``"global"`` (default), ``"layerwise"`` or ``"erk"``.
        seed: seeds every random draw: same seed, same mask.
        **options: ``example_inputs``, ``output_transform``, ``final_layer_name``, ``prunable``, ``progress``,
            ``callback``, ``iterations``, ``batch_size``, ``prune_samples`` / ``num_batches``, ``input_shape``,
            the method's own (:class:`.NtkSapOptions`, ...): :mod:`.options`. Unknown ones raise.

    Returns:
        A :class:`MaskSet` over every prunable weight.

    Raises:
        ValueError: before any scoring, on a bad argument, missing data, a method that does not fit, an
            impossible final-layer policy or a target denser than the masks in force.

    Example:
        >>> from prune_landscape import models
        >>> masks = prune(models.mlp([8, 4, 2]), "random", 0.5, final_layer_policy="dense", seed=1)
        >>> masks.num_kept, bool(masks["fc2.weight"].all())
        (20, True)
    """
    parsed = parse_options(
        model, method, sparsity, data, options, final_layer_policy=final_layer_policy, scope=scope, seed=seed
    )
    start = MasksInForce.read(model, parsed.feed.prunable)
    target = start.target(parsed.sparsity)
    if target == start.kept:
        return MaskSet(dict(start.masks))
    work = working_copy(model, parsed.feed.output_transform)
    outputs = probe_outputs(work, parsed, data)
    rule = allocation_rule(
        start.masks, target, scope=parsed.scope, final_layer=_final_layer(work, parsed, start), policy=parsed.policy
    )
    scoring_data = build_prune_set(work, parsed, data, outputs)
    return MaskSet(run_schedule(work, parsed, scoring_data, start, rule, target))


def _final_layer(work: nn.Module, options: PruneOptions, start: MasksInForce) -> str | None:
    """The final layer's name when the policy needs it (one structure pass), else None."""
    if options.policy.mode is FinalLayerMode.PRUNE:
        return None
    return resolve_final_layer(work, options.example, options.feed, list(start.masks))


def magnitude_step(
    model: nn.Module,
    target_sparsity: float,
    current: MaskSet | Mapping[str, torch.Tensor] | None = None,
    *,
    final_layer_policy: Policy = None,
    scope: str | Scope = "global",
    **model_options: Any,
) -> MaskSet:
    """Prune further by magnitude from ``current`` (gradual pruning and IMP rounds call this).

    Args:
        model: the model whose weights rank the kept entries (plain or carrying pruning hooks).
        target_sparsity: total target in [0, 1), at least the sparsity of ``current``.
        current: the mask in force (default: read from the model's hooks; missing tensors are dense).
        final_layer_policy, scope: as in :func:`prune` (``final_layer=`` is deprecated, as there).
        **model_options: how to read the model, by keyword: ``example_input`` (used only to find the final
            layer when the policy needs it: tensor, tuple or dict), ``output_transform`` and
            ``final_layer_name`` (as in :func:`prune`, used only to find the final layer), ``prunable``
            (``"layers"`` or ``"all"``, as in :func:`prune`). Unknown ones raise.

    Example:
        >>> from prune_landscape import models
        >>> net = models.mlp([10, 10, 2])
        >>> first = magnitude_step(net, 0.2)
        >>> second = magnitude_step(net, 0.36, first)
        >>> first.num_kept, second.num_kept, bool((second["fc1.weight"] <= first["fc1.weight"]).all())
        (96, 77, True)
    """
    target_sparsity = check_sparsity(target_sparsity, "target_sparsity")
    given = dict(model_options)
    policy = parse_policy(given, final_layer_policy)
    scope = Scope.parse(scope)
    feed = parse_model_feed(given, example_key="example_input")
    if given:
        valid = ["example_input", "final_layer_name", "output_transform", "prunable"]
        raise ValueError(f"unknown option(s) {sorted(given)} for magnitude_step; valid options: {valid}")
    start = MasksInForce.read(model, feed.prunable, given=current)
    target = start.target(target_sparsity, "target_sparsity")
    names = list(start.masks)
    final = resolve_final_layer(model, feed.example_inputs, feed, names) if policy.mode is not FinalLayerMode.PRUNE else None
    rule = allocation_rule(start.masks, target, scope=scope, final_layer=final, policy=policy)
    scores = {n: s.detach().cpu() for n, s in magnitude_scores(model, start.masks, None, None).items()}
    return MaskSet(apply_rule(rule, scores, start.masks, target))


# -- the schedule ----------------------------------------------------------------------------------------
def kept_counts(start: MasksInForce, sparsity: float, target: int, iterations: int) -> list[int]:
    """The kept count after each round: ``d ** (t / T)`` of the total, never above the start, the last exact.

    Example:
        >>> kept_counts(MasksInForce.of({"w": torch.ones(100, dtype=torch.bool)}), 0.9, 10, 2)
        [32, 10]
    """
    # The nominal density drives the intermediate steps (d ** (t / T)); the last step keeps exactly `target`.
    end_density = min(1.0 - sparsity, start.kept / start.total)
    densities = exponential_densities(start.kept / start.total, end_density, iterations) if target else [0.0]
    counts = [min(start.kept, max(target, kept_at(d, start.total))) for d in densities[:-1]]
    return counts + [target]


def _score(
    work: nn.Module, options: PruneOptions, masks: dict[str, torch.Tensor], data: Any, generator: torch.Generator
) -> dict[str, torch.Tensor]:
    device = model_device(work)
    spec = options.spec
    scores = spec.score(work, {n: m.to(device) for n, m in masks.items()}, data, generator, options.scorer_options)
    if set(scores) != set(masks):
        raise ValueError(f"scorer {spec.name!r} must return a score for each of {list(masks)}, got {sorted(scores)}")
    scores = {n: s.detach().cpu() for n, s in scores.items()}
    check_scores(scores, masks)
    return scores


def run_schedule(
    work: nn.Module, options: PruneOptions, data: Any, start: MasksInForce, rule: AllocationRule, target: int
) -> dict[str, torch.Tensor]:
    """Score and allocate round by round from ``start`` down to exactly ``target`` kept weights.

    Args:
        work: the private working copy (restored to its first state before every round unless the scorer
            declares ``preserves_model``).
        options: the checked options (method, schedule, scorer options).
        data: what the scorer is fed (:func:`~prune_landscape.pruning.prepare.build_prune_set`).
        start: the masks in force.
        rule: the allocation rule, its final-layer budget already checked against ``target``.
        target: the exact final kept count.

    Returns:
        name -> bool mask (CPU) keeping exactly ``target`` weights, a subset of ``start``.
    """
    schedule = options.schedule
    snapshot = {k: v.clone() for k, v in work.state_dict().items()}
    restore = not getattr(options.spec.scorer, "preserves_model", False)  # a scorer that never writes needs none
    generator = torch.Generator().manual_seed(schedule.seed)
    cuda = sorted({p.device.index or 0 for p in work.parameters() if p.device.type == "cuda"})
    counts = kept_counts(start, options.sparsity, target, schedule.iterations)
    current = dict(start.masks)
    with torch.random.fork_rng(devices=cuda):
        torch.manual_seed((schedule.seed * 2654435761 + 97) % 2**63)
        with Progress(len(counts), options.spec.name, enabled=schedule.progress, callback=schedule.callback) as bar:
            for keep in counts:
                if restore:
                    work.load_state_dict(snapshot)
                    work.eval()
                current = apply_rule(rule, _score(work, options, current, data, generator), current, keep)
                bar.step(density=keep / start.total, kept=keep)
    return current
