"""Pruning callbacks: at initialisation, gradual magnitude (Zhu & Gupta), and IMP with rewinding (OpenLTH).

Lightning adapter (may import pytorch_lightning). Each callback only decides *when*; the masks come from
:mod:`prune_landscape.pruning` and are attached with :meth:`MaskSet.apply_to` (torch.nn.utils.prune), so
the optimizer keeps its Parameter objects and pruned weights get zero gradient. Each callback parses its
``final_layer_policy`` and ``scope`` once, at construction, into the typed values the core takes.

Masks are attached in ``setup`` (before the optimizer is built and before a checkpoint is loaded): the
module's parameter order and state-dict keys are then the same in a fresh and in a resumed run, so
``Trainer.fit(ckpt_path=...)`` restores the masks bit for bit. Gradual and IMP pruning attach all-ones
masks there and overwrite them in place later. With several processes, rank 0's masks are broadcast
whenever they change; as the mask buffers exist before DDP wraps the model, DDP's own buffer sync keeps
them equal too. :class:`IterativeMagnitudePruning` lives in :mod:`.imp` (re-exported here).
"""

from __future__ import annotations

from typing import Any

import pytorch_lightning as pl

from prune_landscape.batching import DataLike
from prune_landscape.checks import check_int, check_sparsity
from prune_landscape.integrations.callbacks._batches import adapt_data, default_batch_to_inputs, default_batch_to_targets
from prune_landscape.integrations.callbacks._network import NetworkSpec
from prune_landscape.integrations.callbacks._steps import (
    attach,
    batch_inputs,
    check_budget,
    ensure_masks_attached,
    pruned_network,
    shrink,
)
from prune_landscape.integrations.callbacks._support import resolve_train_data
from prune_landscape.integrations.callbacks.imp import IterativeMagnitudePruning
from prune_landscape.integrations.callbacks.options import pruning_target
from prune_landscape.masks import MaskSet, current_masks, install_mask_restore_hook
from prune_landscape.pruning import get_pruner, prune
from prune_landscape.pruning.allocation import FinalLayerPolicy, Scope

__all__ = ["GradualMagnitudePruning", "IterativeMagnitudePruning", "PruneAtInit"]

FinalLayer = str | float | FinalLayerPolicy
#: prune()'s own keywords a PruneAtInit passes through besides the method's options.
_PRUNE_KEYWORDS = ("example_inputs", "output_transform", "final_layer_name", "prunable")


class PruneAtInit(pl.Callback):
    """Prune once before the first step, with any registered method; the run trains ``init x mask``.

    Args:
        method: a name from ``prune_landscape.pruning.available_methods()`` (``"snip"``, ``"synflow"``, ...).
        sparsity: fraction of prunable weights removed, in [0, 1).
        data: data for data-dependent methods (SNIP, GraSP, NTK-SAP); default: the fit's train data.
        final_layer_policy: ``"prune"`` (default), ``"dense"``, or a minimum density for the classifier
            (or a :class:`~prune_landscape.pruning.allocation.FinalLayerPolicy`); parsed here, once.
        scope: ``"global"``, ``"layerwise"`` or ``"erk"``.
        seed: the pruner's seed (same seed, same mask).
        network: the network to prune inside the LightningModule (a submodule name or a callable
            ``pl_module -> nn.Module``); default: LandscapeAudit's automatic choice.
        final_layer: the deprecated spelling of ``final_layer_policy`` (warns).
        **options: passed to :func:`~prune_landscape.pruning.prune`: the method's options, and prune's
            ``example_inputs``, ``output_transform``, ``final_layer_name`` and ``prunable``.

    Example:
        >>> import pytorch_lightning as pl
        >>> trainer = pl.Trainer(callbacks=[PruneAtInit("synflow", 0.9, final_layer_policy="dense")], logger=False)
    """

    def __init__(
        self,
        method: str = "magnitude",
        sparsity: float = 0.9,
        *,
        data: DataLike | None = None,
        final_layer_policy: FinalLayer | None = None,
        scope: str | Scope = "global",
        seed: int = 0,
        network: NetworkSpec = None,
        final_layer: FinalLayer | None = None,
        **options: Any,
    ) -> None:
        check_sparsity(sparsity)
        check_int("seed", seed)
        spec = get_pruner(method)  # raises, listing the known methods
        valid = [*spec.valid_options(), *_PRUNE_KEYWORDS]
        unknown = sorted(set(options) - set(valid))
        if unknown:
            raise ValueError(f"unknown option(s) {unknown} for method {method!r}; valid options: {valid}")
        self.final_layer_policy, self.scope, self.network = pruning_target(
            final_layer_policy, final_layer, scope, network, "PruneAtInit"
        )
        self._choice = None
        self.method = method
        self.sparsity = float(sparsity)
        self.data = data
        self.seed = int(seed)
        self.options = options
        self.masks: MaskSet | None = None
        self._restored_fingerprint: str | None = None

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        install_mask_restore_hook(pl_module)
        if stage != "fit":
            return
        self._choice = None  # chosen afresh for each fit: the module may be another one
        net = pruned_network(self, trainer, pl_module)
        if self.masks is not None:  # a second fit() on the same module keeps the first mask
            self.masks = attach(trainer, net, self.masks)
            return
        # Any batch structure (dicts, tuples) reaches the pruner as (inputs, targets) pairs.
        data = adapt_data(resolve_train_data(trainer, self.data), default_batch_to_inputs, default_batch_to_targets)
        masks = prune(
            net, self.method, self.sparsity, data,
            final_layer_policy=self.final_layer_policy, scope=self.scope, seed=self.seed, **self.options,
        )
        self.masks = attach(trainer, net, masks)

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # After a resume the checkpoint's buffers replaced the masks computed in setup: keep those.
        self.masks = current_masks(pruned_network(self, trainer, pl_module))
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
        final_layer_policy: ``"prune"`` (default), ``"dense"``, or a minimum density for the classifier.
        scope: ``"global"``, ``"layerwise"`` or ``"erk"``.
        network: the network to prune (as in :class:`PruneAtInit`).
        final_layer: the deprecated spelling of ``final_layer_policy`` (warns).

    Example:
        >>> from prune_landscape.pruning import GradualSchedule
        >>> callback = GradualMagnitudePruning(GradualSchedule(final_sparsity=0.8, start_step=0, end_step=100, frequency=10))
    """

    def __init__(
        self,
        schedule: Any,
        *,
        final_layer_policy: FinalLayer | None = None,
        scope: str | Scope = "global",
        network: NetworkSpec = None,
        final_layer: FinalLayer | None = None,
    ) -> None:
        for method in ("sparsity_at", "should_update"):
            if not callable(getattr(schedule, method, None)):
                raise ValueError(f"schedule must have a {method}(step) method (a GradualSchedule), got {type(schedule).__name__}")
        self.final_layer_policy, self.scope, self.network = pruning_target(
            final_layer_policy, final_layer, scope, network, "GradualMagnitudePruning"
        )
        self._choice = None
        self.schedule = schedule
        self.last_update_step: int | None = None
        self.sparsity = 0.0

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        install_mask_restore_hook(pl_module)
        if stage == "fit":
            self._choice = None  # chosen afresh for each fit: the module may be another one
            net = pruned_network(self, trainer, pl_module)
            final = getattr(self.schedule, "final_sparsity", None)
            if final is not None:
                check_budget(trainer, net, float(final), self.final_layer_policy, "GradualMagnitudePruning")
            ensure_masks_attached(net)

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int) -> None:
        step = trainer.global_step
        if step != self.last_update_step and self.schedule.should_update(step):
            self.update(trainer, pl_module, step, batch_inputs(batch))

    def update(self, trainer: pl.Trainer, pl_module: pl.LightningModule, step: int, example_input: Any = None) -> MaskSet:
        """Move the masks to the schedule's sparsity at ``step``; returns the new masks."""
        self.sparsity = float(self.schedule.sparsity_at(step))
        self.last_update_step = step
        network = pruned_network(self, trainer, pl_module)
        return shrink(trainer, network, self.sparsity, self.final_layer_policy, self.scope, example_input)

    def state_dict(self) -> dict[str, Any]:
        return {"last_update_step": self.last_update_step, "sparsity": self.sparsity}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.last_update_step = state_dict.get("last_update_step")
        self.sparsity = float(state_dict.get("sparsity", 0.0))


