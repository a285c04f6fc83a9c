"""A small, mask-aware trainer in plain PyTorch: the engine behind restart spreads, A/B tests and audits.

Pruned weights stay exactly zero: their gradients are zeroed before every step (so momentum and Adam
moments never see them) and the weights are multiplied by the mask after every step (so weight decay
cannot move them). Training is deterministic given ``seed``: the shuffling order comes from a
``torch.Generator`` and the global RNG (dropout) is forked and seeded for the duration of the call.

Example:
    >>> import torch
    >>> from prune_landscape import models
    >>> from prune_landscape.training import evaluate, train
    >>> x, y = torch.randn(64, 4), torch.randint(0, 3, (64,))
    >>> net = models.mlp([4, 16, 3])
    >>> result = train(net, (x, y), epochs=3, lr=0.1, seed=0, batch_size=16)
    >>> len(result.epoch_losses), result.final_loss == evaluate(net, (x, y))[0]
    (3, True)
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset

from prune_landscape.batching import DataLike, iter_batches, require_data
from prune_landscape.datacheck import check_data
from prune_landscape.masks import MaskSet, find_parameter
from prune_landscape.masks.mechanisms import trainable_tensor
from prune_landscape.options import with_keywords

__all__ = ["LOSSES", "TrainConfig", "TrainResult", "evaluate", "loss_function", "masked_parameters", "train"]

#: Loss names accepted by :func:`train`, :func:`evaluate` and the probes.
LOSSES = ("cross_entropy", "mse")
_OPTIMIZERS = ("sgd", "adam")


def _mse(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    # Class-index targets are one-hot encoded, so squared loss can train a classifier too.
    if targets.dtype in (torch.int64, torch.int32, torch.int16, torch.uint8) and outputs.dim() == targets.dim() + 1:
        targets = F.one_hot(targets.long(), outputs.shape[-1]).to(outputs.dtype)
    return F.mse_loss(outputs, targets.to(outputs.dtype).reshape(outputs.shape))


def _cross_entropy(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(outputs, targets)


def loss_function(name: str) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """The batch-mean loss ``(outputs, targets) -> scalar`` for ``"cross_entropy"`` or ``"mse"``.

    ``"mse"`` is ``F.mse_loss`` (mean over samples and outputs); integer class targets are one-hot encoded.

    Example:
        >>> import torch
        >>> float(loss_function("mse")(torch.zeros(2, 2), torch.tensor([0, 1])))
        0.5
    """
    if name == "cross_entropy":
        return _cross_entropy
    if name == "mse":
        return _mse
    raise ValueError(f"loss must be one of {LOSSES}, got {name!r}")


@dataclass(frozen=True)
class TrainResult:
    """What :func:`train` did.

    Attributes:
        epoch_losses: mean training loss over the batches of each epoch (taken during the epoch).
        final_loss: training loss after the last step, over all of ``data`` in eval mode.
        final_accuracy: training accuracy after the last step (None for regression targets).
        steps: optimizer steps taken.
        seed: the seed that decided the batch order (and dropout).
    """

    epoch_losses: tuple[float, ...]
    final_loss: float
    final_accuracy: float | None
    steps: int
    seed: int

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        out = asdict(self)
        out["epoch_losses"] = list(self.epoch_losses)
        return out


def masked_parameters(model: nn.Module, masks: Mapping[str, torch.Tensor]) -> list[tuple[nn.Parameter, torch.Tensor]]:
    """Pair each masked weight's trainable tensor (:func:`~prune_landscape.masks.mechanisms.trainable_tensor`)
    with its mask."""
    pairs = []
    for name, mask in masks.items():
        param = trainable_tensor(*find_parameter(model, name))
        if param is None:  # weight_norm-style chain: its mask parametrization already zeroes the weight
            continue
        if tuple(param.shape) != tuple(mask.shape):
            raise ValueError(f"mask {name!r}: expected shape {tuple(param.shape)} (from the model), got {tuple(mask.shape)}")
        pairs.append((param, mask.to(param.device)))
    return pairs


def _batches(data: DataLike, batch_size: int | None, generator: torch.Generator, shuffle: bool):
    """One epoch of batches; tensor pairs are permuted with ``generator`` (a loader keeps its own order)."""
    if isinstance(data, DataLoader):
        yield from iter_batches(data)
        return
    if isinstance(data, Dataset):
        size = len(data)  # type: ignore[arg-type]
        loader = DataLoader(data, batch_size=batch_size or size, shuffle=shuffle, generator=generator)
        yield from iter_batches(loader)
        return
    inputs, targets = data
    size = inputs.shape[0]
    order = torch.randperm(size, generator=generator) if shuffle else torch.arange(size)
    step = batch_size or size
    for start in range(0, size, step):
        index = order[start : start + step]
        yield inputs[index], targets[index]


@dataclass(frozen=True)
class TrainConfig:
    """The knobs of :func:`train` (each also accepted by ``train`` as a keyword of the same name).

    Attributes:
        epochs: passes over the data.
        lr: learning rate.
        optimizer: ``"sgd"`` (with ``momentum``) or ``"adam"``.
        momentum: SGD momentum.
        weight_decay: L2 penalty coefficient (coupled, as in torch.optim).
        loss: ``"cross_entropy"`` or ``"mse"``.
        batch_size: batch size for Datasets and tensor pairs; None trains full-batch.
        shuffle: reshuffle each epoch.

    Raises:
        ValueError: on construction, for a value out of range (naming it).
    """

    epochs: int = 10
    lr: float = 0.1
    optimizer: str = "sgd"
    momentum: float = 0.9
    weight_decay: float = 0.0
    loss: str = "cross_entropy"
    batch_size: int | None = 128
    shuffle: bool = True

    def __post_init__(self) -> None:
        if not isinstance(self.epochs, int) or self.epochs < 1:
            raise ValueError(f"epochs must be a positive int, got {self.epochs!r}")
        if not self.lr > 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")
        if self.optimizer not in _OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {_OPTIMIZERS}, got {self.optimizer!r}")
        if self.weight_decay < 0:
            raise ValueError(f"weight_decay must be >= 0, got {self.weight_decay}")
        if self.batch_size is not None and self.batch_size < 1:
            raise ValueError(f"batch_size must be a positive int or None, got {self.batch_size}")
        loss_function(self.loss)  # an unknown loss name fails here, with the accepted ones

    def make_optimizer(self, params: list[nn.Parameter]) -> torch.optim.Optimizer:
        """The torch optimizer these knobs describe, over ``params``."""
        if self.optimizer == "sgd":
            return torch.optim.SGD(params, lr=self.lr, momentum=self.momentum, weight_decay=self.weight_decay)
        return torch.optim.Adam(params, lr=self.lr, weight_decay=self.weight_decay)


def train(
    model: nn.Module,
    data: DataLike,
    config: TrainConfig | None = None,
    *,
    seed: int = 0,
    masks: Mapping[str, torch.Tensor] | None = None,
    **knobs: Any,
) -> TrainResult:
    """Train ``model`` in place under its masks; pruned weights are exactly zero before, during and after.

    Args:
        model: the network (pruned with torch.nn.utils.prune, parametrized, or with exact zeros).
        data: a DataLoader (used as is: its own batch size and order), a Dataset or an (inputs, targets) pair.
        config: the knobs (:class:`TrainConfig`); default ``TrainConfig()``.
        seed: decides the batch order and dropout; same seed, same result.
        masks: the masks to keep; default ``MaskSet.from_module(model)``. Masks for hooked tensors are
            written into their buffers.
        **knobs: fields of :class:`TrainConfig` one by one (``epochs=3, lr=0.05``); they override ``config``.

    Returns:
        A frozen :class:`TrainResult`. The model is left in the mode it came in.

    Example:
        >>> import torch
        >>> from prune_landscape import models
        >>> net = models.mlp([2, 8, 1])
        >>> x = torch.randn(32, 2)
        >>> r = train(net, (x, x.sum(1, keepdim=True)), epochs=50, lr=0.05, loss="mse", batch_size=None)
        >>> r.epoch_losses[-1] < r.epoch_losses[0]
        True
    """
    require_data(data, "train")
    config = with_keywords(TrainConfig, config, knobs, where="train")
    check_data(model, data, loss=config.loss, name="train data")  # wrong shapes or labels: one clear error, before any step
    given = masks is not None
    masks = MaskSet.for_model(model, masks)
    if given:  # keep torch.nn.utils.prune's buffers in step with the masks we enforce
        _write_hooked_masks(model, masks)
    pairs = masked_parameters(model, masks)
    opt = config.make_optimizer([p for p in model.parameters() if p.requires_grad])
    was_training = model.training
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        _apply_masks(pairs)
        model.train()
        epoch_losses, steps = _run_epochs(model, data, pairs, opt, config, torch.Generator().manual_seed(int(seed)))
    opt.zero_grad(set_to_none=True)
    model.train(was_training)
    final_loss, final_accuracy = evaluate(model, data, loss=config.loss)
    return TrainResult(tuple(epoch_losses), final_loss, final_accuracy, steps, int(seed))


def _write_hooked_masks(model: nn.Module, masks: MaskSet) -> None:
    """Write the masks of tensors held by torch.nn.utils.prune hooks into their buffers."""
    hooked = {}
    for name, mask in masks.items():
        module, attr = find_parameter(model, name)
        if f"{attr}_mask" in module._buffers:
            hooked[name] = mask
    if hooked:
        MaskSet(hooked).apply_to(model)


@torch.no_grad()
def _apply_masks(pairs: list[tuple[nn.Parameter, torch.Tensor]]) -> None:
    for param, mask in pairs:
        param.mul_(mask)


def _run_epochs(model: nn.Module, data: DataLike, pairs: list[tuple[nn.Parameter, torch.Tensor]],
                opt: torch.optim.Optimizer, config: TrainConfig, generator: torch.Generator) -> tuple[list[float], int]:
    """The epochs: per step, pruned entries' gradients are zeroed before it and their weights after it."""
    criterion = loss_function(config.loss)
    device = next(model.parameters()).device
    epoch_losses: list[float] = []
    steps = 0
    for _ in range(config.epochs):
        total, count = 0.0, 0
        for x, y in _batches(data, config.batch_size, generator, config.shuffle):
            x, y = x.to(device), y.to(device)
            opt.zero_grad(set_to_none=True)
            value = criterion(model(x), y)
            value.backward()
            with torch.no_grad():
                for param, mask in pairs:
                    if param.grad is not None:
                        param.grad.mul_(mask)
            opt.step()
            _apply_masks(pairs)
            total += float(value.detach()) * x.shape[0]
            count += x.shape[0]
            steps += 1
        epoch_losses.append(total / max(count, 1))
    return epoch_losses, steps


@torch.no_grad()
def evaluate(model: nn.Module, data: DataLike, loss: str = "cross_entropy", batch_size: int = 1024) -> tuple[float, float | None]:
    """Mean loss and accuracy of ``model`` over ``data`` in eval mode (the mode is restored).

    Accuracy is the argmax match rate for class-index targets and None for real-valued targets.

    Example:
        >>> import torch
        >>> net = torch.nn.Linear(3, 2)
        >>> loss_value, accuracy = evaluate(net, (torch.randn(8, 3), torch.tensor([0, 1] * 4)))
        >>> 0.0 <= accuracy <= 1.0
        True
    """
    require_data(data, "evaluate")
    criterion = loss_function(loss)
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    try:
        total, correct, count = 0.0, 0, 0
        classification = True
        for x, y in iter_batches(data, batch_size):
            x, y = x.to(device), y.to(device)
            outputs = model(x)
            total += float(criterion(outputs, y)) * x.shape[0]
            count += x.shape[0]
            if y.is_floating_point() or outputs.dim() != y.dim() + 1:
                classification = False
            else:
                correct += int((outputs.argmax(-1) == y).sum())
    finally:
        model.train(was_training)
    if count == 0:
        raise ValueError("evaluate: expected non-empty data, got 0 samples")
    return total / count, (correct / count if classification else None)
