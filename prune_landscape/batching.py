"""One way to read the data every core function accepts: a DataLoader, a Dataset or an (inputs, targets) pair.

Core functions stream batches from here and never load a loader's data whole.

Inputs of any structure (the conventions of Torch-Pruning's ``example_inputs``):

- a tensor ``x`` is fed as ``model(x)``; a tuple ``(a, b)`` as ``model(a, b)``; a dict as ``model(**d)``
  (:func:`call_model`). Token ids are integer tensors and are fed as they are.
- a batch from a loader may be ``(inputs, targets)``, a dict with ``"inputs"``/``"targets"``, or a
  HuggingFace-style dict such as ``{"input_ids", "attention_mask", "labels"}``: the first of the keys
  :data:`TARGET_KEYS` found is the targets; one other key is the (positional) input, several are keyword
  inputs (targets may be absent; :func:`split_batch`).
- an ``(inputs, targets)`` pair of tensors is sliced along dim 0; a pair whose inputs are a tuple or dict
  is sliced leaf by leaf when every leaf has the batch as its first dimension, else used as one batch.
- "the" output of a model is chosen by :func:`select_output`: an ``output_transform`` when given, else
  the tensor itself, ``.logits`` of a HuggingFace ``ModelOutput`` or a dict, the only tensor of a dict,
  or the first element of a tuple (an LSTM's ``(output, (h, c))``); anything else raises, asking for an
  ``output_transform``.

Example:
    >>> import torch
    >>> from prune_landscape.batching import iter_batches, num_samples
    >>> pair = (torch.zeros(10, 3), torch.zeros(10, dtype=torch.long))
    >>> [x.shape[0] for x, _ in iter_batches(pair, batch_size=4)], num_samples(pair)
    ([4, 4, 2], 10)
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Any, Union

import torch
from torch.utils.data import DataLoader, Dataset

from prune_landscape.tracing.model_io import default_output

__all__ = [
    "TARGET_KEYS",
    "Batches",
    "DataLike",
    "OutputTransform",
    "batch_size_of",
    "call_model",
    "cat_inputs",
    "first_batch",
    "input_tensors",
    "iter_batches",
    "map_tensors",
    "num_samples",
    "require_data",
    "select_output",
    "split_batch",
]

#: What core functions accept as data.
DataLike = Union[DataLoader, Dataset, tuple, list]

#: Keys of a dict batch that hold the targets, in order of preference (the rest are keyword inputs).
TARGET_KEYS = ("targets", "target", "labels", "label", "y")

OutputTransform = Callable[[Any], torch.Tensor]


class Batches(tuple):
    """Prepared ``(inputs, targets)`` batches, yielded as they are by :func:`iter_batches` (no re-slicing)."""


def map_tensors(fn: Callable[[torch.Tensor], Any], inputs: Any) -> Any:
    """Apply ``fn`` to every tensor in a tensor / tuple / list / dict structure (other leaves kept)."""
    if isinstance(inputs, torch.Tensor):
        return fn(inputs)
    if isinstance(inputs, Mapping):
        return {k: map_tensors(fn, v) for k, v in inputs.items()}
    if isinstance(inputs, (tuple, list)):
        return type(inputs)(map_tensors(fn, v) for v in inputs) if type(inputs) in (tuple, list) else inputs
    return inputs


def input_tensors(inputs: Any) -> list[torch.Tensor]:
    """Every tensor in an input structure, in order."""
    found: list[torch.Tensor] = []
    map_tensors(found.append, inputs)
    return found


def batch_size_of(inputs: Any) -> int | None:
    """The common first dimension of every tensor in ``inputs``, or None when they disagree."""
    sizes = {t.shape[0] if t.dim() else None for t in input_tensors(inputs)}
    return sizes.pop() if len(sizes) == 1 else None


def cat_inputs(parts: list[Any]) -> Any:
    """Concatenate input structures of the same layout along dim 0."""
    first = parts[0]
    if isinstance(first, torch.Tensor):
        return torch.cat(parts)
    if isinstance(first, Mapping):
        return {k: cat_inputs([p[k] for p in parts]) for k in first}
    if isinstance(first, (tuple, list)):
        return type(first)(cat_inputs([p[i] for p in parts]) for i in range(len(first)))
    return first


def call_model(model: Callable[..., Any], inputs: Any) -> Any:
    """``model(x)``, ``model(*inputs)`` for a tuple or ``model(**inputs)`` for a dict (the raw output)."""
    if isinstance(inputs, Mapping):
        return model(**inputs)
    if isinstance(inputs, tuple):
        return model(*inputs)
    return model(inputs)


def select_output(output: Any, output_transform: OutputTransform | None = None) -> torch.Tensor:
    """"The" output tensor of a raw model output (see the module docstring for the automatic rule).

    The automatic rule is :func:`prune_landscape.tracing.model_io.default_output` at its strict level (its owner;
    its docstring says why the structure passes read the same rule leniently: on a dict holding several
    tensors this function raises while the structure passes take the first floating one).

    Raises:
        ValueError: if ``output_transform`` does not return a tensor, or no rule picks one (the message
            lists what the output holds and how to write the transform).
    """
    if output_transform is not None:
        chosen = output_transform(output)
        if not isinstance(chosen, torch.Tensor):
            raise ValueError(f"output_transform must return a tensor, got {type(chosen).__name__}")
        return chosen
    return default_output(output, strict=True)


def split_batch(batch: Any) -> tuple[Any, Any]:
    """``(inputs, targets)`` of one batch, whatever its structure (targets None when it holds none).

    A tensor is the inputs; a tuple/list is ``(inputs, targets, ...)``; a dict gives ``"inputs"`` if present,
    else its one non-target entry (``{"image": x, "label": y}`` -> ``x``), else every non-target entry as
    keyword inputs (``{"input_ids", "attention_mask", "labels"}``); the targets are the first key of
    :data:`TARGET_KEYS` found.

    Example:
        >>> split_batch({"x": 1, "y": 2}), split_batch({"input_ids": 1, "attention_mask": 2, "labels": 3})
        ((1, 2), ({'input_ids': 1, 'attention_mask': 2}, 3))
    """
    if isinstance(batch, torch.Tensor):
        return batch, None
    if isinstance(batch, Mapping):
        key = next((k for k in TARGET_KEYS if k in batch), None)
        targets = batch[key] if key else None
        if "inputs" in batch:
            return batch["inputs"], targets
        rest = {k: v for k, v in batch.items() if k != key}
        return (next(iter(rest.values())) if len(rest) == 1 else rest), targets
    if isinstance(batch, (tuple, list)) and batch:
        return batch[0], (batch[1] if len(batch) >= 2 else None)
    raise ValueError(
        f"expected each batch to be a tensor, an (inputs, targets) pair or a dict (targets under one of "
        f"{list(TARGET_KEYS)}), got {type(batch).__name__}"
    )


def _is_pair(data: Any) -> bool:
    if not (isinstance(data, (tuple, list)) and len(data) == 2 and isinstance(data[1], torch.Tensor)):
        return False
    if isinstance(data[0], torch.Tensor):
        return data[0].dim() > 0 and data[1].dim() > 0 and data[0].shape[0] == data[1].shape[0]
    return isinstance(data[0], (tuple, list, Mapping)) and bool(input_tensors(data[0]))


def _sliceable(data: tuple[Any, torch.Tensor]) -> bool:
    return data[1].dim() > 0 and batch_size_of(data[0]) == data[1].shape[0]


def require_data(data: Any, purpose: str) -> None:
    """Raise a clear error unless ``data`` is something :func:`iter_batches` can read."""
    if data is None:
        raise ValueError(f"{purpose} needs data: a DataLoader, a Dataset or an (inputs, targets) tensor pair; got None")
    if isinstance(data, (DataLoader, Dataset, Batches)) or _is_pair(data):
        return
    if isinstance(data, (tuple, list)) and len(data) == 2:
        shapes = [tuple(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__ for t in data]
        raise ValueError(f"{purpose}: expected an (inputs, targets) pair of tensors with equal first dimensions, got {shapes}")
    raise ValueError(
        f"{purpose} needs a DataLoader, a Dataset or an (inputs, targets) tensor pair, got {type(data).__name__}"
    )


def iter_batches(data: DataLike, batch_size: int = 256, *, max_samples: int | None = None) -> Iterator[tuple[Any, Any]]:
    """Yield ``(inputs, targets)`` batches; a loader keeps its own batch size, tensor pairs are sliced.

    Inputs may be structured (tuple / dict, see the module docstring); targets may be None for a dict
    batch without a target key.

    Args:
        data: a DataLoader, a Dataset (wrapped in a DataLoader without shuffling), an (inputs, targets)
            pair or prepared :class:`Batches`.
        batch_size: slice size for pairs and Datasets.
        max_samples: stop after this many samples (the last batch is cut to fit when its inputs have a
            common batch dimension).
    """
    require_data(data, "iter_batches")
    if isinstance(data, Dataset) and not isinstance(data, DataLoader):
        data = DataLoader(data, batch_size=batch_size, shuffle=False)
    seen = 0
    if isinstance(data, DataLoader):
        source: Iterator = (split_batch(b) for b in data)
    elif isinstance(data, Batches):
        source = iter(data)
    elif _sliceable(data):
        inputs, targets = data
        source = (
            (map_tensors(lambda t: t[i : i + batch_size], inputs), targets[i : i + batch_size])
            for i in range(0, targets.shape[0], batch_size)
        )
    else:  # inputs without a common batch dimension (e.g. EmbeddingBag ids + offsets): one batch
        source = iter([tuple(data)])
    for x, y in source:
        size = batch_size_of(x) if y is None or y.dim() == 0 else y.shape[0]
        if max_samples is not None:
            if seen >= max_samples:
                return
            if size is not None and size > max_samples - seen and (y is None or _sliceable((x, y))):
                x = map_tensors(lambda t: t[: max_samples - seen], x)
                y = None if y is None else y[: max_samples - seen]
                size = max_samples - seen
        seen += size or 1
        yield x, y


def first_batch(data: DataLike, batch_size: int = 256) -> tuple[Any, Any]:
    """The first ``(inputs, targets)`` batch."""
    for batch in iter_batches(data, batch_size):
        return batch
    raise ValueError("expected non-empty data, got an empty DataLoader or tensors with 0 samples")


def num_samples(data: DataLike | None) -> int | None:
    """Number of samples, or None when it cannot be known without iterating (an iterable dataset)."""
    if data is None:
        return None
    if isinstance(data, Batches):
        return sum(batch_size_of(x) or 1 for x, _ in data)
    if _is_pair(data):
        return int(data[1].shape[0]) if _sliceable(data) else batch_size_of(data[0])
    dataset = data.dataset if isinstance(data, DataLoader) else data
    try:
        return len(dataset)  # type: ignore[arg-type]
    except TypeError:
        return None
