"""Check that a model can take the data before any work: one clear error instead of a raw one later.

``mat1 and mat2 shapes cannot be multiplied`` after minutes of pruning, or ``Target 17 is out of bounds``
after seconds of training, become one ValueError up front that names the input shape the first layer
expects, the shape and dtype given, and the label range against the number of classes.

Example:
    >>> import torch
    >>> from prune_landscape import models
    >>> check_data(models.mlp([4, 3]), (torch.randn(5, 4), torch.tensor([0, 1, 2, 0, 1])))
"""

from __future__ import annotations

import torch
from torch import nn

from prune_landscape.batching import DataLike, first_batch

__all__ = ["check_data"]


def _device(model: nn.Module) -> torch.device:
    parameter = next(model.parameters(), None)
    return parameter.device if parameter is not None else torch.device("cpu")


def _dtype(model: nn.Module) -> torch.dtype:
    parameter = next(model.parameters(), None)
    return parameter.dtype if parameter is not None else torch.get_default_dtype()


def _expected_input(model: nn.Module) -> str:
    """What the first layer takes, e.g. ``"(N, ..., 64) float inputs (the first layer is Linear(64, ...))"``."""
    for module in model.modules():
        if isinstance(module, nn.Linear):
            return f"(N, ..., {module.in_features}) float inputs (the first layer is Linear({module.in_features}, ...))"
        if isinstance(module, (nn.Conv1d, nn.Conv2d, nn.Conv3d)):
            dims = ", ".join(["L", "H, W", "D, H, W"][module.weight.dim() - 3].split(", "))
            return (f"(N, {module.in_channels}, {dims}) float inputs (the first layer is "
                    f"{type(module).__name__}({module.in_channels}, ...))")
        if isinstance(module, (nn.Embedding, nn.EmbeddingBag)):
            return f"integer token ids in [0, {module.num_embeddings}) (the first layer is {type(module).__name__})"
    return "inputs the model's forward accepts"


def _all_targets(data: DataLike) -> torch.Tensor | None:
    """Every target without reading the inputs, when the data holds them as a tensor (else None)."""
    from torch.utils.data import DataLoader, Subset, TensorDataset

    if isinstance(data, DataLoader):
        return _all_targets(data.dataset)
    if isinstance(data, (tuple, list)) and len(data) == 2 and isinstance(data[1], torch.Tensor):
        return data[1]
    if isinstance(data, TensorDataset) and len(data.tensors) >= 2:
        return data.tensors[1]
    if isinstance(data, Subset):
        parent = _all_targets(data.dataset)
        return None if parent is None else parent[torch.as_tensor(list(data.indices), dtype=torch.long)]
    targets = getattr(data, "targets", None)  # torchvision's image sets
    if isinstance(targets, torch.Tensor):
        return targets
    if isinstance(targets, list) and targets and isinstance(targets[0], int):
        return torch.as_tensor(targets)
    return None


def check_data(model: nn.Module, data: DataLike, *, loss: str | None = "cross_entropy", name: str = "data") -> None:
    """Raise a clear ValueError before any work when ``model`` cannot take ``data``.

    Checks one forward on two samples (naming the input shape the first layer expects and the one given) and,
    for ``loss="cross_entropy"``, that every label is in ``[0, classes)`` with ``classes`` the model's outputs
    (``loss=None`` checks the inputs only). The forward runs in eval mode, so BatchNorm statistics are untouched.

    Example:
        >>> from prune_landscape import models
        >>> check_data(models.mlp([4, 3]), (torch.randn(5, 4), torch.tensor([0, 1, 2, 0, 7])))
        Traceback (most recent call last):
        ...
        ValueError: data: labels must be in [0, 2] for a model with 3 outputs (classes), got labels in [0, 7]
    """
    inputs, targets = first_batch(data, batch_size=2)
    if not isinstance(inputs, torch.Tensor):
        return  # tuple/dict inputs (token models, HF batches): the structure pass names what it cannot feed
    given = f"(N, {', '.join(str(d) for d in inputs.shape[1:])}) {str(inputs.dtype).removeprefix('torch.')}"
    training = model.training
    model.eval()  # eval mode: BatchNorm statistics stay untouched
    try:
        with torch.no_grad():
            sample = inputs[:2].to(_device(model))
            if sample.is_floating_point() and _dtype(model).is_floating_point:
                sample = sample.to(_dtype(model))  # float precision is the callers' business (some cast), shapes are not
            outputs = model(sample)
    except (RuntimeError, TypeError, ValueError, IndexError) as error:
        raise ValueError(f"{name}: the model does not accept these inputs: expected {_expected_input(model)}, got "
                         f"inputs of shape {given} ({' '.join(str(error).split())[:300]})") from None
    finally:
        model.train(training)
    if loss != "cross_entropy" or not isinstance(outputs, torch.Tensor) or outputs.dim() < 2:
        return
    if targets.dtype.is_floating_point or targets.dtype == torch.bool:
        raise ValueError(f"{name}: cross-entropy needs integer class labels, got {targets.dtype} targets "
                         f"(use loss='mse' for regression)")
    labels = _all_targets(data)
    labels = targets if labels is None else labels
    classes = int(outputs.shape[1])
    low, high = int(labels.min()), int(labels.max())
    if low < 0 or high >= classes:
        raise ValueError(f"{name}: labels must be in [0, {classes - 1}] for a model with {classes} outputs (classes), "
                         f"got labels in [{low}, {high}]")
