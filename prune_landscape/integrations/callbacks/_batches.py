"""How the callbacks read a training batch: the one place that turns a batch into inputs and targets.

Lightning adapter. A Lightning batch can be anything a ``training_step`` accepts: a tensor, an
``(inputs, targets, ...)`` tuple, a dict, integer token ids. The callbacks need two things from it:

* the network's **inputs** (to find which network a ``forward`` runs on, for the structural pass and for
  the pruners' example input), from :func:`default_batch_to_inputs` or the ``batch_to_inputs=`` hook;
* the **targets** (for the data-dependent rules and the probes, which read ``(inputs, targets)`` pairs),
  from :func:`default_batch_to_targets` or the ``batch_to_targets=`` hook.

:func:`adapt_data` wraps a DataLoader so the core sees ``(inputs, targets)`` pairs whatever the batches
hold. When the structure analysis grows its own input knobs (``example_inputs``), this module is the one
hook to wire to it.

Example:
    >>> import torch
    >>> batch = {"input_ids": torch.zeros(2, 5, dtype=torch.long), "labels": torch.tensor([0, 1])}
    >>> default_batch_to_inputs(batch).shape, default_batch_to_targets(batch).tolist()
    (torch.Size([2, 5]), [0, 1])
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset, IterableDataset

__all__ = [
    "BatchToInputs",
    "BatchToTargets",
    "INPUT_KEYS",
    "TARGET_KEYS",
    "adapt_data",
    "default_batch_to_inputs",
    "default_batch_to_targets",
]

#: ``batch -> inputs`` for the network (a tensor, or whatever the network's forward takes).
BatchToInputs = Callable[[Any], Any]
#: ``batch -> targets`` (a tensor with one entry per sample), or None when the batch holds none.
BatchToTargets = Callable[[Any], Any]

#: Keys tried, in order, for the inputs of a dict batch (common names in vision, NLP and tabular code).
INPUT_KEYS = ("inputs", "input", "x", "input_ids", "features", "image", "images", "pixel_values", "data")
#: Keys tried, in order, for the targets of a dict batch.
TARGET_KEYS = ("targets", "target", "y", "labels", "label")


def _first_key(batch: Mapping[str, Any], keys: tuple[str, ...]) -> Any:
    for key in keys:
        if key in batch:
            return batch[key]
    return None


def default_batch_to_inputs(batch: Any) -> Any:
    """The network's inputs in ``batch``: a tensor as is, a tuple's first item, a dict's input key.

    Dict keys tried in order: ``INPUT_KEYS``. Token ids and other integer tensors are returned unchanged.

    Raises:
        ValueError: for a dict without any of those keys or an empty sequence, naming the hook to pass.
    """
    if isinstance(batch, torch.Tensor):
        return batch
    if isinstance(batch, Mapping):
        inputs = _first_key(batch, INPUT_KEYS)
        if inputs is None:
            raise ValueError(
                f"cannot find the inputs in a dict batch with keys {sorted(map(str, batch))}; expected one of "
                f"{list(INPUT_KEYS)}, or pass batch_to_inputs=lambda batch: batch[...] to the callback"
            )
        return inputs
    if isinstance(batch, (tuple, list)) and batch:
        return batch[0]
    raise ValueError(
        f"cannot find the inputs in a batch of type {type(batch).__name__}; pass batch_to_inputs=... to the callback"
    )


def default_batch_to_targets(batch: Any) -> Any:
    """The targets in ``batch``: a tuple's second item, a dict's target key; None when there are none."""
    if isinstance(batch, Mapping):
        return _first_key(batch, TARGET_KEYS)
    if isinstance(batch, (tuple, list)) and len(batch) >= 2:
        return batch[1]
    return None


def _pair(batch: Any, to_inputs: BatchToInputs, to_targets: BatchToTargets) -> tuple[torch.Tensor, torch.Tensor]:
    inputs, targets = to_inputs(batch), to_targets(batch)
    if not isinstance(inputs, torch.Tensor) or not isinstance(targets, torch.Tensor):
        raise ValueError(
            "the data-dependent audit needs tensor inputs and targets per batch, got "
            f"{type(inputs).__name__} and {type(targets).__name__}; pass batch_to_inputs=/batch_to_targets="
        )
    return inputs, targets


class _PairedBatches(IterableDataset):
    """A loader's batches as ``(inputs, targets)`` pairs; its length is the loader's number of samples."""

    def __init__(self, loader: DataLoader, to_inputs: BatchToInputs, to_targets: BatchToTargets, samples: int | None):
        self.loader, self.to_inputs, self.to_targets, self.samples = loader, to_inputs, to_targets, samples

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
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
    return DataLoader(_PairedBatches(data, to_inputs, to_targets, samples), batch_size=None)


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
