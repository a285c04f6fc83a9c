"""What the pruning callbacks share: which network they prune, attaching masks, one magnitude step, checks.

Lightning adapter helpers. Masks always go through :meth:`MaskSet.apply_to` (torch.nn.utils.prune), after
rank 0's masks are broadcast, so every rank prunes the same weights.
"""

from __future__ import annotations

from typing import Any

import pytorch_lightning as pl
import torch

from prune_landscape.batching import input_tensors
from prune_landscape.integrations.callbacks._batches import default_batch_to_inputs
from prune_landscape.integrations.callbacks._network import choose_network
from prune_landscape.integrations.callbacks._support import broadcast_masks, example_batch, resolve_train_data
from prune_landscape.masks import MaskSet, current_masks
from prune_landscape.pruning import magnitude_step
from prune_landscape.pruning.allocation import FinalLayerMode, FinalLayerPolicy, Scope, check_final_layer_budget, num_to_keep
from prune_landscape.pruning.pruneset import first_samples
from prune_landscape.layers import final_layer_name

__all__ = ["attach", "batch_inputs", "check_budget", "ensure_masks_attached", "pruned_network", "shrink"]


def pruned_network(callback: Any, trainer: pl.Trainer, pl_module: pl.LightningModule) -> torch.nn.Module:
    """The network the callback prunes: ``network=`` if given, else LandscapeAudit's automatic choice.

    A module without ``forward`` (``self.net(x)`` in ``training_step``) is pruned through its network, so
    methods that run a forward (SNIP, a dense final layer) work; when no single network can be chosen
    (a teacher and a student), the whole LightningModule is pruned, as ``network=""`` would. The choice
    is cached in ``callback._choice`` (reset by the callback at each fit).
    """
    if callback._choice is None:
        inputs = example_batch(resolve_train_data(trainer, getattr(callback, "data", None)))
        callback._choice = choose_network(pl_module, callback.network, inputs)
    return callback._choice.module if callback._choice.decided else pl_module


def attach(trainer: pl.Trainer, network: torch.nn.Module, masks: MaskSet) -> MaskSet:
    """Rank 0's ``masks``, attached to ``network``; returns the masks attached."""
    masks = broadcast_masks(trainer, masks)
    masks.apply_to(network)
    return masks


def ensure_masks_attached(network: torch.nn.Module) -> None:
    """Attach all-ones masks to prunable weights that carry none, so later updates only write buffers."""
    hooked = MaskSet.from_module(network, source="hooks")
    dense = MaskSet.dense(network)
    missing = {name: mask for name, mask in dense.items() if name not in hooked}
    if missing:
        MaskSet(missing).apply_to(network)


def shrink(
    trainer: pl.Trainer,
    network: torch.nn.Module,
    sparsity: float,
    policy: FinalLayerPolicy,
    scope: Scope,
    example_input: Any,
) -> MaskSet:
    """Magnitude masks at ``sparsity``, shrunk from the current ones (never reviving a weight); attached.

    A target below the current sparsity (e.g. after a sparser PruneAtInit) leaves the masks as they are.
    """
    current = current_masks(network)
    if num_to_keep(1.0 - sparsity, current.num_total) >= current.num_kept:
        return current
    masks = magnitude_step(network, sparsity, current, final_layer_policy=policy, scope=scope, example_input=example_input)
    return attach(trainer, network, masks)


def batch_inputs(batch: Any) -> Any:
    """One sample of the batch's inputs, structure kept (only used to find the final layer), or None."""
    try:
        inputs = default_batch_to_inputs(batch)
    except ValueError:
        return None  # an unusual batch: the final layer is then taken by parameter order
    return first_samples(inputs, 1) if input_tensors(inputs) else None


def check_budget(trainer: pl.Trainer, network: torch.nn.Module, sparsity: float, policy: FinalLayerPolicy, who: str) -> None:
    """Raise in ``setup`` when the final-layer policy cannot fit the run's final sparsity (before any step)."""
    if policy.mode is FinalLayerMode.PRUNE:
        return
    current = current_masks(network)
    try:
        name = final_layer_name(network, example_batch(resolve_train_data(trainer, None)))
    except Exception:  # no forward to trace: the budget is checked when the masks are computed
        return
    target = num_to_keep(1.0 - sparsity, current.num_total)
    try:
        check_final_layer_budget(dict(current.items()), target, name, policy)
    except ValueError as error:
        raise ValueError(f"{who} at final sparsity {sparsity:.4g}: {error}") from None
