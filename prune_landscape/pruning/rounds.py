"""The scoring rounds: one shot, or the exponential schedule of SynFlow / NTK-SAP, on the working copy.

Round ``t`` of ``T`` keeps ``d ** (t / T)`` of the weights (``d`` the target density, counted from the
masks in force) and the last keeps exactly the target; each round re-scores under the mask the previous
one left, and pruned entries never come back. Every random draw comes from one seeded generator, and
layers that draw from the global RNG (dropout in train-mode passes) draw from a stream derived from the
same seed inside ``torch.random.fork_rng``: same seed, same mask, the caller's RNG state untouched.

Example:
    >>> from prune_landscape import models
    >>> from prune_landscape.pruning.allocation import AllocationRule
    >>> from prune_landscape.pruning.options import parse_options
    >>> from prune_landscape.pruning.state import MasksInForce
    >>> from prune_landscape.pruning.workspace import working_copy
    >>> net = models.mlp([4, 3, 2])
    >>> options = parse_options(net, "magnitude", 0.5, None, {"iterations": 2})
    >>> start = MasksInForce.read(net)
    >>> masks = run_schedule(working_copy(net), options, None, start, AllocationRule(), start.target(0.5))
    >>> sum(int(m.sum()) for m in masks.values())
    9
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from prune_landscape.progress import Progress
from prune_landscape.pruning.allocation import AllocationRule, apply_rule, check_scores
from prune_landscape.pruning.options import PruneOptions
from prune_landscape.pruning.schedules import exponential_densities, kept_at
from prune_landscape.pruning.state import MasksInForce
from prune_landscape.pruning.workspace import model_device

__all__ = ["kept_counts", "run_schedule"]


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
