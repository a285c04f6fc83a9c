"""Pruning callbacks: at initialisation, gradual magnitude (Zhu & Gupta), and IMP with rewinding (OpenLTH).

Lightning adapter (may import pytorch_lightning). Each callback only decides *when*; the masks come from
:mod:`prune_landscape.pruning` and are attached with :meth:`MaskSet.apply_to` (torch.nn.utils.prune), so
the optimizer keeps its Parameter objects and pruned weights get zero gradient.

Masks are attached in ``setup`` (before the optimizer is built and before a checkpoint is loaded): the
module's parameter order and state-dict keys are then the same in a fresh and in a resumed run, so
``Trainer.fit(ckpt_path=...)`` restores the masks bit for bit. Gradual and IMP pruning attach all-ones
masks there and overwrite them in place later. With several processes, rank 0's masks are broadcast
whenever they change; as the mask buffers exist before DDP wraps the model, DDP's own buffer sync keeps
them equal too.
"""

from __future__ import annotations

import copy
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.utilities import rank_zero_warn

from prune_landscape.batching import DataLike
from prune_landscape.integrations.callbacks._batches import adapt_data, default_batch_to_inputs, default_batch_to_targets
from prune_landscape.integrations.callbacks._checks import check_bool
from prune_landscape.integrations.callbacks._network import NetworkSpec, check_network_spec, choose_network
from prune_landscape.integrations.callbacks._support import (
    broadcast_masks,
    current_masks,
    example_batch,
    install_mask_restore_hook,
    resolve_train_data,
)
from prune_landscape.masks import MaskSet
from prune_landscape.pruning.allocation import FinalLayerMode, FinalLayerPolicy, Scope, check_final_layer_budget, num_to_keep

__all__ = ["GradualMagnitudePruning", "IterativeMagnitudePruning", "PruneAtInit"]

FinalLayer = str | float


def _network(callback: Any, trainer: pl.Trainer, pl_module: pl.LightningModule) -> torch.nn.Module:
    """The network the callback prunes: ``network=`` if given, else LandscapeAudit's automatic choice.

    A module without ``forward`` (``self.net(x)`` in ``training_step``) is pruned through its network, so
    methods that run a forward (SNIP, a dense final layer) work; when no single network can be chosen
    (a teacher and a student), the whole LightningModule is pruned, as ``network=""`` would.
    """
    if callback._choice is None:
        inputs = example_batch(resolve_train_data(trainer, getattr(callback, "data", None)))
        callback._choice = choose_network(pl_module, callback.network, inputs)
    return callback._choice.module if callback._choice.decided else pl_module


def _attach(trainer: pl.Trainer, pl_module: torch.nn.Module, masks: MaskSet) -> MaskSet:
    masks = broadcast_masks(trainer, masks)
    masks.apply_to(pl_module)
    return masks


def _ensure_masks_attached(pl_module: torch.nn.Module) -> None:
    """Attach all-ones masks to prunable weights that carry none, so later updates only write buffers."""
    hooked = MaskSet.from_module(pl_module, source="hooks")
    dense = MaskSet.dense(pl_module)
    missing = {name: mask for name, mask in dense.items() if name not in hooked}
    if missing:
        MaskSet(missing).apply_to(pl_module)


def _shrink(
    trainer: pl.Trainer,
    pl_module: torch.nn.Module,
    sparsity: float,
    final_layer: FinalLayer,
    scope: str,
    example_input: torch.Tensor | None,
) -> MaskSet:
    """Magnitude masks at ``sparsity``, shrunk from the current ones (never reviving a weight); attached.

    A target below the current sparsity (e.g. after a sparser PruneAtInit) leaves the masks as they are.
    """
    from prune_landscape.pruning import magnitude_step, num_to_keep

    current = current_masks(pl_module)
    if num_to_keep(1.0 - sparsity, current.num_total) >= current.num_kept:
        return current
    masks = magnitude_step(pl_module, sparsity, current, final_layer=final_layer, scope=scope, example_input=example_input)
    return _attach(trainer, pl_module, masks)


def _batch_inputs(batch: Any) -> torch.Tensor | None:
    """One sample of the batch's inputs (only used to find the final layer), or None when it has no tensor."""
    try:
        inputs = default_batch_to_inputs(batch)
    except ValueError:
        return None  # an unusual batch: the final layer is then taken by parameter order
    return inputs[:1] if isinstance(inputs, torch.Tensor) else None


def _check_policy(final_layer: FinalLayer, scope: str) -> None:
    """Parse both at construction so a typo fails before any training (the same parsers prune() uses)."""
    FinalLayerPolicy.parse(final_layer)
    Scope.parse(scope)


def _check_budget(trainer: pl.Trainer, pl_module: torch.nn.Module, sparsity: float, final_layer: FinalLayer, who: str) -> None:
    """Raise in ``setup`` when the final-layer policy cannot fit the run's final sparsity (before any step)."""
    policy = FinalLayerPolicy.parse(final_layer)
    if policy.mode is FinalLayerMode.PRUNE:
        return
    from prune_landscape.structure import final_layer_name

    current = current_masks(pl_module)
    try:
        name = final_layer_name(pl_module, example_batch(resolve_train_data(trainer, None)))
    except Exception:  # no forward to trace: the budget is checked when the masks are computed
        return
    target = num_to_keep(1.0 - sparsity, current.num_total)
    try:
        check_final_layer_budget(dict(current.items()), target, name, policy)
    except ValueError as error:
        raise ValueError(f"{who} at final sparsity {sparsity:.4g}: {error}") from None


class PruneAtInit(pl.Callback):
    """Prune once before the first step, with any registered method; the run trains ``init x mask``.

    Args:
        method: a name from ``prune_landscape.pruning.available_methods()`` (``"snip"``, ``"synflow"``, ...).
        sparsity: fraction of prunable weights removed, in [0, 1).
        data: data for data-dependent methods (SNIP, GraSP, NTK-SAP); default: the fit's train data.
        final_layer: ``"prune"``, ``"dense"``, or a minimum density for the classifier.
        scope: ``"global"``, ``"layerwise"`` or ``"erk"``.
        seed: the pruner's seed (same seed, same mask).
        network: the network to prune inside the LightningModule (a submodule name or a callable
            ``pl_module -> nn.Module``); default: LandscapeAudit's automatic choice.
        **options: passed to the pruner.

    Example:
        >>> import pytorch_lightning as pl
        >>> trainer = pl.Trainer(callbacks=[PruneAtInit("synflow", 0.9, final_layer="dense")], logger=False)
    """

    def __init__(
        self,
        method: str = "magnitude",
        sparsity: float = 0.9,
        *,
        data: DataLike | None = None,
        final_layer: FinalLayer = "prune",
        scope: str = "global",
        seed: int = 0,
        network: NetworkSpec = None,
        **options: Any,
    ) -> None:
        if isinstance(sparsity, bool) or not isinstance(sparsity, (int, float)) or not 0.0 <= sparsity < 1.0:
            raise ValueError(f"sparsity must be in [0, 1), got {sparsity!r}")
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise ValueError(f"seed must be an integer, got {seed!r}")
        from prune_landscape.pruning import get_pruner

        spec = get_pruner(method)  # raises, listing the known methods
        unknown = sorted(set(options) - set(spec.valid_options()))
        if unknown:
            raise ValueError(f"unknown option(s) {unknown} for method {method!r}; valid options: {spec.valid_options()}")
        _check_policy(final_layer, scope)
        check_network_spec(network)
        self.network = network
        self._choice = None
        self.method = method
        self.sparsity = float(sparsity)
        self.data = data
        self.final_layer = final_layer
        self.scope = scope
        self.seed = int(seed)
        self.options = options
        self.masks: MaskSet | None = None
        self._restored_fingerprint: str | None = None

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        install_mask_restore_hook(pl_module)
        if stage != "fit":
            return
        self._choice = None  # chosen afresh for each fit: the module may be another one
        net = _network(self, trainer, pl_module)
        if self.masks is not None:  # a second fit() on the same module keeps the first mask
            self.masks = _attach(trainer, net, self.masks)
            return
        from prune_landscape.pruning import prune

        # Any batch structure (dicts, tuples) reaches the pruner as (inputs, targets) pairs.
        data = adapt_data(resolve_train_data(trainer, self.data), default_batch_to_inputs, default_batch_to_targets)
        masks = prune(
            net, self.method, self.sparsity, data,
            final_layer=self.final_layer, scope=self.scope, seed=self.seed, **self.options,
        )
        self.masks = _attach(trainer, net, masks)

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # After a resume the checkpoint's buffers replaced the masks computed in setup: keep those.
        self.masks = current_masks(_network(self, trainer, pl_module))
        if self._restored_fingerprint is not None and self._restored_fingerprint != self.masks.fingerprint():
            raise RuntimeError(
                f"the restored masks (fingerprint {self.masks.fingerprint()}) differ from the checkpointed "
                f"callback state ({self._restored_fingerprint}); was the checkpoint written by another run?"
            )

    def state_dict(self) -> dict[str, Any]:
        fingerprint = None if self.masks is None else self.masks.fingerprint()
        return {"method": self.method, "sparsity": self.sparsity, "fingerprint": fingerprint}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._restored_fingerprint = state_dict.get("fingerprint")


class GradualMagnitudePruning(pl.Callback):
    """Zhu & Gupta gradual magnitude pruning on a step schedule (a ``GradualSchedule``).

    Before each optimizer step ``t`` with ``schedule.should_update(t)``, the masks become the global
    magnitude masks at ``schedule.sparsity_at(t)`` (never reviving a pruned weight).

    Args:
        schedule: an object with ``sparsity_at(step)`` and ``should_update(step)``
            (``prune_landscape.pruning.GradualSchedule``).
        final_layer: ``"prune"``, ``"dense"``, or a minimum density for the classifier.
        scope: ``"global"``, ``"layerwise"`` or ``"erk"``.
        network: the network to prune (as in :class:`PruneAtInit`).

    Example:
        >>> from prune_landscape.pruning import GradualSchedule
        >>> callback = GradualMagnitudePruning(GradualSchedule(final_sparsity=0.8, start_step=0, end_step=100, frequency=10))
    """

    def __init__(self, schedule: Any, *, final_layer: FinalLayer = "prune", scope: str = "global", network: NetworkSpec = None) -> None:
        for method in ("sparsity_at", "should_update"):
            if not callable(getattr(schedule, method, None)):
                raise ValueError(f"schedule must have a {method}(step) method (a GradualSchedule), got {type(schedule).__name__}")
        _check_policy(final_layer, scope)
        check_network_spec(network)
        self.network = network
        self._choice = None
        self.schedule = schedule
        self.final_layer = final_layer
        self.scope = scope
        self.last_update_step: int | None = None
        self.sparsity = 0.0

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        install_mask_restore_hook(pl_module)
        if stage == "fit":
            self._choice = None  # chosen afresh for each fit: the module may be another one
            net = _network(self, trainer, pl_module)
            final = getattr(self.schedule, "final_sparsity", None)
            if final is not None:
                _check_budget(trainer, net, float(final), self.final_layer, "GradualMagnitudePruning")
            _ensure_masks_attached(net)

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int) -> None:
        step = trainer.global_step
        if step != self.last_update_step and self.schedule.should_update(step):
            self.update(trainer, pl_module, step, _batch_inputs(batch))

    def update(self, trainer: pl.Trainer, pl_module: pl.LightningModule, step: int, example_input: torch.Tensor | None = None) -> MaskSet:
        """Move the masks to the schedule's sparsity at ``step``; returns the new masks."""
        self.sparsity = float(self.schedule.sparsity_at(step))
        self.last_update_step = step
        return _shrink(trainer, _network(self, trainer, pl_module), self.sparsity, self.final_layer, self.scope, example_input)

    def state_dict(self) -> dict[str, Any]:
        return {"last_update_step": self.last_update_step, "sparsity": self.sparsity}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.last_update_step = state_dict.get("last_update_step")
        self.sparsity = float(state_dict.get("sparsity", 0.0))


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
        final_layer: ``"prune"``, ``"dense"``, or a minimum density for the classifier.
        scope: ``"global"``, ``"layerwise"`` or ``"erk"``.
        reset_optimizer: clear momentum/Adam moments at each rewind (OpenLTH starts a fresh optimizer).
        rewind_lr_schedule: restore the LR schedulers and param-group hyper-parameters saved at
            ``rewind_step`` at each rewind; ``False`` keeps the schedule running across rounds (the
            behaviour before this option existed).
        network: the network to prune (as in :class:`PruneAtInit`); the rewind restores the whole module.

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
        final_layer: FinalLayer = "prune",
        scope: str = "global",
        reset_optimizer: bool = True,
        rewind_lr_schedule: bool = True,
        network: NetworkSpec = None,
    ) -> None:
        if not callable(getattr(schedule, "sparsity_at_round", None)):
            raise ValueError(f"schedule must have sparsity_at_round(r) (an IMPSchedule), got {type(schedule).__name__}")
        if isinstance(epochs_per_round, bool) or int(epochs_per_round) != epochs_per_round or epochs_per_round < 1:
            raise ValueError(f"epochs_per_round must be a positive integer, got {epochs_per_round!r}")
        _check_policy(final_layer, scope)
        check_bool("reset_optimizer", reset_optimizer)
        check_bool("rewind_lr_schedule", rewind_lr_schedule)
        check_network_spec(network)
        self.network = network
        self._choice = None
        self.schedule = schedule
        self.epochs_per_round = int(epochs_per_round)
        self.final_layer = final_layer
        self.scope = scope
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
            net = _network(self, trainer, pl_module)
            _check_budget(trainer, net, float(self.schedule.sparsity_at_round(self.rounds)), self.final_layer, "IterativeMagnitudePruning")
            _ensure_masks_attached(net)

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
        masks = _shrink(trainer, _network(self, trainer, pl_module), sparsity, self.final_layer, self.scope, example)
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
