"""IterativeMagnitudePruning: IMP with rewinding, as OpenLTH runs it (a Lightning callback).

Lightning adapter (may import pytorch_lightning). Re-exported by :mod:`.pruning`; see that module for how
masks are attached, checkpointed and kept equal across processes.
"""

from __future__ import annotations

import copy
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.utilities import rank_zero_warn

from prune_landscape.checks import check_bool
from prune_landscape.integrations.callbacks._network import NetworkSpec
from prune_landscape.integrations.callbacks._steps import check_budget, ensure_masks_attached, pruned_network, shrink
from prune_landscape.integrations.callbacks._support import example_batch, resolve_train_data
from prune_landscape.integrations.callbacks.options import pruning_target
from prune_landscape.masks import MaskSet, install_mask_restore_hook
from prune_landscape.pruning.allocation import FinalLayerPolicy, Scope

__all__ = ["IterativeMagnitudePruning"]


class IterativeMagnitudePruning(pl.Callback):
    """IMP with rewinding (OpenLTH): train a round, prune a fraction of the remaining weights, rewind, repeat.

    The weights (and buffers) seen before optimizer step ``rewind_step`` are saved, together with the
    state of every LR scheduler and the optimizers' param-group hyper-parameters (``lr``, ``momentum``,
    ...) at that moment; at the end of every ``epochs_per_round`` epochs, while rounds remain, the masks
    shrink to ``schedule.sparsity_at_round(r)`` by global magnitude, the unpruned weights go back to the
    saved ones, the learning-rate schedule goes back to step ``rewind_step`` and the optimizer state is
    cleared, so each round retrains ``weights_k x mask`` from step ``k`` of the schedule as OpenLTH does.
    Set ``max_epochs`` to ``(rounds + 1) * epochs_per_round`` to train the last mask too. (A scheduler
    with Lightning ``frequency > 1`` keeps Lightning's step counter phase, which is not rewound.)

    Args:
        schedule: a ``prune_landscape.pruning.IMPSchedule`` (rounds, fraction per round, rewind step).
        epochs_per_round: epochs of training per round.
        final_layer_policy: ``"prune"`` (default), ``"dense"``, or a minimum density for the classifier.
        scope: ``"global"``, ``"layerwise"`` or ``"erk"``.
        reset_optimizer: clear momentum/Adam moments at each rewind (OpenLTH starts a fresh optimizer).
        rewind_lr_schedule: restore the LR schedulers and param-group hyper-parameters saved at
            ``rewind_step`` at each rewind; ``False`` keeps the schedule running across rounds (the
            behaviour before this option existed).
        network: the network to prune (as in :class:`PruneAtInit`); the rewind restores the whole module.
        final_layer: the deprecated spelling of ``final_layer_policy`` (warns).

    Example:
        >>> from prune_landscape.pruning import IMPSchedule
        >>> callback = IterativeMagnitudePruning(IMPSchedule(rounds=3, rewind_step=0), epochs_per_round=2)
        >>> callback.rewind_lr_schedule
        True
    """

    def __init__(
        self,
        schedule: Any,
        *,
        epochs_per_round: int = 1,
        final_layer_policy: str | float | FinalLayerPolicy | None = None,
        scope: str | Scope = "global",
        reset_optimizer: bool = True,
        rewind_lr_schedule: bool = True,
        network: NetworkSpec = None,
        final_layer: str | float | FinalLayerPolicy | None = None,
    ) -> None:
        if not callable(getattr(schedule, "sparsity_at_round", None)):
            raise ValueError(f"schedule must have sparsity_at_round(r) (an IMPSchedule), got {type(schedule).__name__}")
        if isinstance(epochs_per_round, bool) or int(epochs_per_round) != epochs_per_round or epochs_per_round < 1:
            raise ValueError(f"epochs_per_round must be a positive integer, got {epochs_per_round!r}")
        self.final_layer_policy, self.scope, self.network = pruning_target(
            final_layer_policy, final_layer, scope, network, "IterativeMagnitudePruning"
        )
        check_bool("reset_optimizer", reset_optimizer)
        check_bool("rewind_lr_schedule", rewind_lr_schedule)
        self._choice = None
        self.schedule = schedule
        self.epochs_per_round = int(epochs_per_round)
        self.reset_optimizer = bool(reset_optimizer)
        self.rewind_lr_schedule = bool(rewind_lr_schedule)
        self.round = 0
        self.rewind_state: dict[str, torch.Tensor] | None = None
        # {"schedulers": [scheduler state_dict], "param_groups": [[group minus "params"] per optimizer]}
        self.rewind_schedule: dict[str, list] | None = None
        self._schedule_restore_pending = False

    @property
    def rounds(self) -> int:
        return int(self.schedule.rounds)

    @property
    def rewind_step(self) -> int:
        return int(self.schedule.rewind_step)

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        install_mask_restore_hook(pl_module)
        if stage == "fit":
            self._choice = None  # chosen afresh for each fit: the module may be another one
            net = pruned_network(self, trainer, pl_module)
            final = float(self.schedule.sparsity_at_round(self.rounds))
            check_budget(trainer, net, final, self.final_layer_policy, "IterativeMagnitudePruning")
            ensure_masks_attached(net)

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int) -> None:
        if self.rewind_state is None and trainer.global_step >= self.rewind_step:
            self.rewind_state = {
                key: value.detach().to("cpu", copy=True)
                for key, value in pl_module.state_dict().items()
                if not key.endswith("_mask")
            }
            if self.rewind_lr_schedule:
                # Taken at the same moment as the weights, so every round restarts the schedule at step k.
                self.rewind_schedule = {
                    "schedulers": [copy.deepcopy(config.scheduler.state_dict()) for config in trainer.lr_scheduler_configs],
                    "param_groups": [
                        [copy.deepcopy({k: v for k, v in group.items() if k != "params"}) for group in optimizer.param_groups]
                        for optimizer in trainer.optimizers
                    ],
                }

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # Lightning steps ReduceLROnPlateau schedulers after on_train_epoch_end, i.e. after the rewind:
        # restore once more before the new round's first step so that step is undone.
        if self._schedule_restore_pending:
            self._restore_schedule(trainer)
            self._schedule_restore_pending = False

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if (trainer.current_epoch + 1) % self.epochs_per_round == 0 and self.round < self.rounds:
            self.next_round(trainer, pl_module)

    def next_round(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> MaskSet:
        """Prune to the next round's sparsity and rewind; returns the new masks."""
        if self.rewind_state is None:
            raise RuntimeError(f"IMP cannot rewind: no weights were saved at step {self.rewind_step} (global step {trainer.global_step})")
        sparsity = float(self.schedule.sparsity_at_round(self.round + 1))
        example = example_batch(resolve_train_data(trainer, None))
        network = pruned_network(self, trainer, pl_module)
        masks = shrink(trainer, network, sparsity, self.final_layer_policy, self.scope, example)
        current = pl_module.state_dict()
        with torch.no_grad():
            for key, value in self.rewind_state.items():
                current[key].copy_(value.to(current[key].device))
        if self.reset_optimizer:
            for optimizer in trainer.optimizers:
                optimizer.state.clear()
        if self.rewind_lr_schedule:
            self._restore_schedule(trainer)
            self._schedule_restore_pending = self.rewind_schedule is not None  # warn once, not twice
        self.round += 1
        return masks

    def _restore_schedule(self, trainer: pl.Trainer) -> None:
        """Put the LR schedulers and param-group hyper-parameters back to their state at ``rewind_step``."""
        if self.rewind_schedule is None:
            # Only a checkpoint written before this option existed has weights but no schedule snapshot.
            rank_zero_warn(
                f"IMP cannot rewind the learning-rate schedule: no snapshot from step {self.rewind_step} "
                "(checkpoint from an older version?); the schedule continues unrewound"
            )
            return
        schedulers = [config.scheduler for config in trainer.lr_scheduler_configs]
        saved_schedulers, saved_groups = self.rewind_schedule["schedulers"], self.rewind_schedule["param_groups"]
        if len(saved_schedulers) != len(schedulers) or len(saved_groups) != len(trainer.optimizers):
            raise RuntimeError(
                f"IMP cannot rewind the learning-rate schedule: expected {len(saved_schedulers)} scheduler(s) and "
                f"{len(saved_groups)} optimizer(s) as at step {self.rewind_step}, "
                f"got {len(schedulers)} and {len(trainer.optimizers)}"
            )
        for scheduler, state in zip(schedulers, saved_schedulers):
            scheduler.load_state_dict(copy.deepcopy(state))  # copies: the snapshot serves every round
        for optimizer, groups in zip(trainer.optimizers, saved_groups):
            if len(groups) != len(optimizer.param_groups):
                raise RuntimeError(
                    f"IMP cannot rewind the learning-rate schedule: expected {len(groups)} param group(s) as at "
                    f"step {self.rewind_step}, got {len(optimizer.param_groups)}"
                )
            for group, saved in zip(optimizer.param_groups, groups):
                group.update(copy.deepcopy(saved))

    def state_dict(self) -> dict[str, Any]:
        return {
            "round": self.round,
            "rewind_state": self.rewind_state,
            "rewind_schedule": self.rewind_schedule,
            "schedule_restore_pending": self._schedule_restore_pending,
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        # .get: checkpoints written before the schedule rewind existed lack its keys.
        self.round = int(state_dict.get("round", 0))
        self.rewind_state = state_dict.get("rewind_state")
        self.rewind_schedule = state_dict.get("rewind_schedule")
        self._schedule_restore_pending = bool(state_dict.get("schedule_restore_pending", False))
