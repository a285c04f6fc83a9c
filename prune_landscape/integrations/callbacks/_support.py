"""Plumbing shared by the callbacks: DDP agreement, the training data (mask details live in :mod:`prune_landscape.masks`).

Lightning adapter (may import pytorch_lightning).
"""

from __future__ import annotations

from typing import Any

import pytorch_lightning as pl

from prune_landscape.batching import DataLike, input_tensors
from prune_landscape.integrations.callbacks._batches import default_batch_to_inputs, first_raw_batch
from prune_landscape.masks import MaskSet
from prune_landscape.pruning.pruneset import first_samples

__all__ = ["broadcast_masks", "example_batch", "resolve_train_data"]


def broadcast_masks(trainer: pl.Trainer, masks: MaskSet) -> MaskSet:
    """Rank 0's masks on every rank (identity with one process), so all ranks prune the same weights."""
    if trainer.world_size <= 1:
        return masks
    received = trainer.strategy.broadcast({name: mask for name, mask in masks.items()}, src=0)
    return MaskSet(received, inferred=masks.inferred)


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
