"""Plumbing shared by the callbacks: reading masks cheaply, DDP agreement, checkpoint re-attachment.

Lightning adapter (may import pytorch_lightning).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytorch_lightning as pl
from torch import nn

from prune_landscape.batching import DataLike, input_tensors
from prune_landscape.integrations.callbacks._batches import default_batch_to_inputs, first_raw_batch
from prune_landscape.layers import current_tensor, find_parameter, prunable_parameters
from prune_landscape.masks import MaskSet
from prune_landscape.pruning.pruneset import first_samples

__all__ = [
    "broadcast_masks",
    "current_masks",
    "install_mask_restore_hook",
    "mask_version_key",
    "resolve_train_data",
]

_RESTORE_HOOK = "_prune_landscape_restore_hook"


def current_masks(model: nn.Module) -> MaskSet:
    """The masks of every prunable weight: from pruning hooks where attached, from exact zeros elsewhere.

    Mixing the two sources makes the result independent of *how* a tensor is pruned: a model whose
    ModelPruning masks were just made permanent reads the same bits as just before. The set is marked
    ``inferred`` when no tensor carries a pruning hook.
    """
    hooked = MaskSet.from_module(model, source="hooks")
    masks = {}
    for name in prunable_parameters(model):
        if name in hooked:
            masks[name] = hooked[name]
        else:
            module, attr = find_parameter(model, name)
            masks[name] = current_tensor(module, attr) != 0
    return MaskSet(masks, inferred=not any(name in hooked for name in masks))


def mask_version_key(model: nn.Module) -> tuple:
    """A key that changes whenever a pruning-mask buffer is added, replaced or written in place.

    Costs one pass over the modules and no device synchronisation (tensor identity and version
    counters only), so it can run before every training step. Masks held as exact zeros (no hooks) are
    invisible to it; those are compared at epoch boundaries instead.
    """
    key = []
    for module in model.modules():
        for name, buffer in module._buffers.items():
            if buffer is not None and name.endswith("_mask"):
                key.append((id(module), name, id(buffer), buffer._version))
    return tuple(key)


def broadcast_masks(trainer: pl.Trainer, masks: MaskSet) -> MaskSet:
    """Rank 0's masks on every rank (identity with one process), so all ranks prune the same weights."""
    if trainer.world_size <= 1:
        return masks
    received = trainer.strategy.broadcast({name: mask for name, mask in masks.items()}, src=0)
    return MaskSet(received, inferred=masks.inferred)


def _restore_pre_hook(module: nn.Module, state_dict: Mapping[str, Any], prefix: str, *args: Any) -> None:
    """Attach torch.nn.utils.prune masks named in ``state_dict`` before the module's tensors load.

    A checkpoint of a pruned model holds ``*_orig``/``*_mask`` keys; a fresh model has plain ``weight``
    parameters, so loading would fail (or, non-strict, silently drop the masks). Root pre-hooks run
    before any child is loaded, so re-attaching here makes the keys fit; the loaded buffers then carry
    the checkpoint's bits.
    """
    local = {key[len(prefix):]: value for key, value in state_dict.items() if key.startswith(prefix)}
    masks = MaskSet.from_state_dict(local)
    missing = {}
    for name, mask in masks.items():
        try:
            target, attr = find_parameter(module, name)
        except ValueError:
            continue
        if f"{attr}_mask" not in target._buffers:
            missing[name] = mask
    if missing:
        MaskSet(missing).apply_to(module)


def install_mask_restore_hook(pl_module: nn.Module) -> None:
    """Make ``pl_module.load_state_dict`` re-attach pruning masks found in the checkpoint (idempotent)."""
    if getattr(pl_module, _RESTORE_HOOK, None) is not None:
        return
    register = getattr(pl_module, "register_load_state_dict_pre_hook", None)
    if register is not None:
        handle = register(_restore_pre_hook)
    else:  # torch < 2.5 exposes only the private spelling
        handle = pl_module._register_load_state_dict_pre_hook(_restore_pre_hook, with_module=True)
    object.__setattr__(pl_module, _RESTORE_HOOK, handle)


def resolve_train_data(trainer: pl.Trainer, data: DataLike | None) -> DataLike | None:
    """The data a callback should use: ``data`` if given, else the fit's train dataloader when reachable.

    Works in ``setup`` (before the Trainer builds its dataloaders) through the datamodule or the
    LightningModule's ``train_dataloader``; returns None when there is none.
    """
    if data is not None:
        return data
    if trainer.train_dataloader is not None:
        return trainer.train_dataloader
    source = getattr(getattr(trainer, "fit_loop", None), "_data_source", None)
    if source is not None and source.is_defined():
        try:
            return source.dataloader()
        except Exception:  # an unusual data source: the caller reports that data is needed
            return None
    return None


def example_batch(data: DataLike | None) -> Any:
    """Two samples of ``data``'s inputs (or None), for shape-only uses such as finding the final layer.

    Any batch structure is read through :func:`default_batch_to_inputs` (tuples, dicts, tensors); the
    inputs keep their structure (a tuple of positional, a dict of keyword inputs); a batch without tensor
    inputs gives None, and the callers fall back to parameter order.
    """
    batch = first_raw_batch(data)
    if batch is None:
        return None
    try:
        inputs = default_batch_to_inputs(batch)
    except ValueError:
        return None
    return first_samples(inputs, 2) if input_tensors(inputs) else None
