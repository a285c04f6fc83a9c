"""One way to read the data every core function accepts: a DataLoader, a Dataset or an (inputs, targets) pair.

Core functions stream batches from here and never load a loader's data whole.

Example:
    >>> import torch
    >>> from prune_landscape.batching import iter_batches, num_samples
    >>> pair = (torch.zeros(10, 3), torch.zeros(10, dtype=torch.long))
    >>> [x.shape[0] for x, _ in iter_batches(pair, batch_size=4)], num_samples(pair)
    ([4, 4, 2], 10)
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Union

import torch
from torch.utils.data import DataLoader, Dataset

__all__ = ["DataLike", "first_batch", "iter_batches", "num_samples", "require_data"]

#: What core functions accept as data.
DataLike = Union[DataLoader, Dataset, tuple, list]


def _split(batch: Any) -> tuple[torch.Tensor, torch.Tensor]:
    if isinstance(batch, dict):
        return batch["inputs"], batch["targets"]
    if isinstance(batch, (tuple, list)) and len(batch) >= 2:
        return batch[0], batch[1]
    raise ValueError(f"expected each batch to be an (inputs, targets) pair, got {type(batch).__name__}")


def _is_pair(data: Any) -> bool:
    return (
        isinstance(data, (tuple, list))
        and len(data) == 2
        and all(isinstance(t, torch.Tensor) for t in data)
        and data[0].shape[0] == data[1].shape[0]
    )


def require_data(data: Any, purpose: str) -> None:
    """Raise a clear error unless ``data`` is something :func:`iter_batches` can read."""
    if data is None:
        raise ValueError(f"{purpose} needs data: a DataLoader, a Dataset or an (inputs, targets) tensor pair; got None")
    if isinstance(data, (DataLoader, Dataset)) or _is_pair(data):
        return
    if isinstance(data, (tuple, list)) and len(data) == 2:
        shapes = [tuple(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__ for t in data]
        raise ValueError(f"{purpose}: expected an (inputs, targets) pair of tensors with equal first dimensions, got {shapes}")
    raise ValueError(
        f"{purpose} needs a DataLoader, a Dataset or an (inputs, targets) tensor pair, got {type(data).__name__}"
    )


def iter_batches(data: DataLike, batch_size: int = 256, *, max_samples: int | None = None) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Yield ``(inputs, targets)`` batches; a loader keeps its own batch size, tensors are sliced.

    Args:
        data: a DataLoader, a Dataset (wrapped in a DataLoader without shuffling) or a tensor pair.
        batch_size: slice size for tensor pairs and Datasets.
        max_samples: stop after this many samples (the last batch is cut to fit).
    """
    require_data(data, "iter_batches")
    if isinstance(data, Dataset) and not isinstance(data, DataLoader):
        data = DataLoader(data, batch_size=batch_size, shuffle=False)
    seen = 0
    if isinstance(data, DataLoader):
        source: Iterator = (_split(b) for b in data)
    else:
        inputs, targets = data
        source = ((inputs[i : i + batch_size], targets[i : i + batch_size]) for i in range(0, inputs.shape[0], batch_size))
    for x, y in source:
        if max_samples is not None:
            if seen >= max_samples:
                return
            x, y = x[: max_samples - seen], y[: max_samples - seen]
        seen += x.shape[0]
        yield x, y


def first_batch(data: DataLike, batch_size: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
    """The first ``(inputs, targets)`` batch."""
    for batch in iter_batches(data, batch_size):
        return batch
    raise ValueError("expected non-empty data, got an empty DataLoader or tensors with 0 samples")


def num_samples(data: DataLike | None) -> int | None:
    """Number of samples, or None when it cannot be known without iterating (an iterable dataset)."""
    if data is None:
        return None
    if _is_pair(data):
        return int(data[0].shape[0])
    dataset = data.dataset if isinstance(data, DataLoader) else data
    try:
        return len(dataset)  # type: ignore[arg-type]
    except TypeError:
        return None
