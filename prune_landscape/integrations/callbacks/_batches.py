"""How the callbacks read a training batch: the one place that turns a batch into inputs and targets.

Lightning adapter. A Lightning batch can be anything a ``training_step`` accepts: a tensor, an
``(inputs, targets, ...)`` tuple, a dict, integer token ids. The callbacks need two things from it:

* the network's **inputs** (to find which network a ``forward`` runs on, for the structural pass and for
  the pruners' example input), from :func:`default_batch_to_inputs` or the ``batch_to_inputs=`` hook;
* the **targets** (for the data-dependent rules and the probes, which read ``(inputs, targets)`` pairs),
  from :func:`default_batch_to_targets` or the ``batch_to_targets=`` hook.

:func:`adapt_data` wraps a DataLoader so the core sees ``(inputs, targets)`` pairs whatever the batches
hold. The defaults read a batch exactly as the core does (:func:`prune_landscape.batching.split_batch`), so
the callbacks, the pruners and the structure analysis agree on what the inputs are.

Example:
    >>> import torch
    >>> batch = {"input_ids": torch.zeros(2, 5, dtype=torch.long), "labels": torch.tensor([0, 1])}
    >>> default_batch_to_inputs(batch).shape, default_batch_to_targets(batch).tolist()
    (torch.Size([2, 5]), [0, 1])
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset, IterableDataset

from prune_landscape.batching import input_tensors, split_batch

__all__ = [
    "BatchToInputs",
    "BatchToTargets",
    "adapt_data",
    "default_batch_to_inputs",
    "default_batch_to_targets",
]

#: ``batch -> inputs`` for the network (a tensor, or whatever the network's forward takes).
BatchToInputs = Callable[[Any], Any]
#: ``batch -> targets`` (a tensor with one entry per sample), or None when the batch holds none.
BatchToTargets = Callable[[Any], Any]

def default_batch_to_inputs(batch: Any) -> Any:
    """The network's inputs in ``batch``, read as every core function reads a batch
    (:func:`prune_landscape.batching.split_batch`): a tensor as is, a tuple's first item, a dict's
    ``"inputs"``, its one non-target entry, or its non-target entries as keyword inputs. A list of inputs
    (what a DataLoader's default collate makes of a tuple) is returned as a tuple: positional inputs.

    Raises:
        ValueError: for a batch of another type, naming the hook to pass.
    """
    try:
        inputs = split_batch(batch)[0]
    except ValueError as error:
        raise ValueError(f"{error}; pass model_io=ModelIO(batch_to_inputs=lambda batch: ...) to the callback") from None
    # A DataLoader's default collate turns a sample's tuple of positional inputs into a list; read it back
    # as the tuple it was (as prune(example_inputs=[...]) does), so forward(*inputs) gets its arguments.
    return tuple(inputs) if isinstance(inputs, list) else inputs


def default_batch_to_targets(batch: Any) -> Any:
    """The targets in ``batch`` (a tuple's second item, a dict's target key); None when there are none."""
    try:
        return split_batch(batch)[1]
    except ValueError:
        return None


def _pair(batch: Any, to_inputs: BatchToInputs, to_targets: BatchToTargets) -> tuple[Any, torch.Tensor]:
    inputs, targets = to_inputs(batch), to_targets(batch)
    # Inputs as the core reads them: a tensor, a tuple of positional or a dict of keyword inputs.
    if isinstance(inputs, list):
        inputs = tuple(inputs)  # a DataLoader's collate turns a tuple of inputs into a list
    if not input_tensors(inputs) or not isinstance(targets, torch.Tensor):
        raise ValueError(
            "the data-dependent audit needs inputs holding tensors (a tensor, tuple or dict) and tensor targets "
            f"per batch, got {type(inputs).__name__} and {type(targets).__name__}; pass "
            "model_io=ModelIO(batch_to_inputs=..., batch_to_targets=...)"
        )
    return inputs, targets


class _PairedBatches(IterableDataset):
    """A loader's batches as ``(inputs, targets)`` pairs; its length is the loader's number of samples."""

    def __init__(self, loader: DataLoader, to_inputs: BatchToInputs, to_targets: BatchToTargets, samples: int | None):
        self.loader, self.to_inputs, self.to_targets, self.samples = loader, to_inputs, to_targets, samples

    def __iter__(self) -> Iterator[tuple[Any, torch.Tensor]]:
        for batch in self.loader:
            yield _pair(batch, self.to_inputs, self.to_targets)

    def __len__(self) -> int:
        if self.samples is None:
            raise TypeError("the number of samples of this loader is unknown")
        return self.samples


def adapt_data(data: Any, to_inputs: BatchToInputs, to_targets: BatchToTargets) -> Any:
    """``data`` as the core reads it: a DataLoader of any batch structure becomes one of pairs.

    Tensor pairs and Datasets are returned unchanged. A DataLoader is wrapped (lazily: batches are read
    one at a time, never loaded whole) so each batch becomes ``(to_inputs(batch), to_targets(batch))``;
    ``len(adapted.dataset)`` stays the number of samples, so the audit's n is unchanged.
    """
    if not isinstance(data, DataLoader):
        return data
    try:
        samples: int | None = len(data.dataset)  # type: ignore[arg-type]
    except TypeError:
        samples = None
    # collate_fn as is: the default one turns a tuple of positional inputs into a list (one argument).
    return DataLoader(_PairedBatches(data, to_inputs, to_targets, samples), batch_size=None, collate_fn=_as_is)


def _as_is(batch: Any) -> Any:
    return batch


def first_raw_batch(data: Any) -> Any:
    """The first batch of ``data`` as the training step sees it (a loader's) or as a pair (tensors).

    The loader is read under a forked RNG: starting its iterator draws from the global torch generator
    (the shuffle's seed), and a callback looking at one batch must not change the run's data order.
    """
    if data is None:
        return None
    if isinstance(data, (tuple, list)) and len(data) == 2 and all(isinstance(t, torch.Tensor) for t in data):
        return data[0][:2], data[1][:2]
    with torch.random.fork_rng(devices=[]):
        if isinstance(data, Dataset) and not isinstance(data, DataLoader):
            data = DataLoader(data, batch_size=2)
        for batch in data:
            return batch
    return None
