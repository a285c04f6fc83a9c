"""The kept-coordinate parametrisation every probe shares: the probe set, the masked point, the one loss.

A probe never writes into the model. It reads the trainable tensors once (``weight_orig`` under
torch.nn.utils.prune, the plain ``weight`` for a model pruned with exact zeros), multiplies masked ones by
their masks, and evaluates the loss at other points through ``torch.func.functional_call``. Only kept
coordinates ever move: directions are masked and the Hessian is restricted to the kept index set
(w.r.t. ``weight_orig`` it is exactly zero on pruned coordinates; for a zeros-pruned model we take the
principal sub-matrix, i.e. the Hessian of the masked network).

Example:
    >>> import torch
    >>> from prune_landscape import models
    >>> net = models.mlp([3, 4, 2])
    >>> kept = KeptParameters.from_model(net)
    >>> kept.num_kept == sum(p.numel() for p in net.parameters())
    True
    >>> float(ProbeLoss("mse")(torch.zeros(2, 2), torch.tensor([0, 1])))
    0.5
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cached_property

import torch
from torch import nn

from prune_landscape.batching import DataLike, first_batch, iter_batches, require_data
from prune_landscape.masks import MaskSet
from prune_landscape.training import loss_function, masked_parameters

__all__ = ["Batches", "KeptParameters", "Loss", "ProbeLoss", "probing", "resolve_loss"]

Loss = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def resolve_loss(loss: str, data: DataLike) -> str:
    """``"auto"`` -> cross-entropy for integer targets, squared loss for real-valued ones."""
    if loss != "auto":
        loss_function(loss)  # raises on an unknown name before any work
        return loss
    _, targets = first_batch(data)
    return "mse" if targets.is_floating_point() else "cross_entropy"


class ProbeLoss(nn.Module):
    """The batch-mean loss every probe evaluates and differentiates: :func:`~prune_landscape.training.loss_function`.

    One module for every backend: the torch.func Hessian products, the loss slices and curvlinops (which
    needs an ``nn.Module`` with a ``reduction``; ``"mean"`` makes it weight each batch by its share of
    the data). ``"mse"`` one-hot encodes integer class targets, here as in training.

    Args:
        name: ``"cross_entropy"`` or ``"mse"`` (resolve ``"auto"`` first with :func:`resolve_loss`).
    """

    #: Read by curvlinops: a batch's Hessian is weighted by ``batch size / data size``.
    reduction = "mean"

    def __init__(self, name: str):
        super().__init__()
        self.loss_name = name
        self._function = loss_function(name)  # raises on an unknown name

    def forward(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return self._function(outputs, targets)


class Batches:
    """A re-iterable view of ``data`` (streamed, never loaded whole), moved to ``device``."""

    def __init__(self, data: DataLike, batch_size: int, max_samples: int | None, device: torch.device):
        require_data(data, "probe")
        if batch_size < 1:
            raise ValueError(f"batch_size must be a positive int, got {batch_size}")
        if max_samples is not None and max_samples < 1:
            raise ValueError(f"max_samples must be a positive int or None, got {max_samples}")
        self.data, self.batch_size, self.max_samples, self.device = data, batch_size, max_samples, device

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for x, y in iter_batches(self.data, self.batch_size, max_samples=self.max_samples):
            yield x.to(self.device), y.to(self.device)

    @cached_property
    def size(self) -> int:
        """Number of samples the probe uses (one counting pass at most)."""
        total = sum(x.shape[0] for x, _ in iter_batches(self.data, self.batch_size, max_samples=self.max_samples))
        if total == 0:
            raise ValueError("probe: expected non-empty data, got 0 samples")
        return total


@dataclass(frozen=True)
class KeptParameters:
    """The model's trainable tensors at the masked point, and the flat index set of kept coordinates.

    Attributes:
        names: functional names (``named_parameters`` order), e.g. ``"fc.weight_orig"``.
        values: detached values, masked tensors multiplied by their masks.
        masks: functional name -> bool mask on the tensor's device (unmasked tensors are absent).
        user_names: functional name -> user-visible name (``"fc.weight"``).
    """

    names: tuple[str, ...]
    values: dict[str, torch.Tensor]
    masks: dict[str, torch.Tensor]
    user_names: dict[str, str]

    @classmethod
    def from_model(cls, model: nn.Module, masks: Mapping[str, torch.Tensor] | None = None) -> KeptParameters:
        mask_set = MaskSet.for_model(model, masks)
        by_identity = {id(p): mask for p, mask in masked_parameters(model, mask_set)}
        user_of = {id(p): user for user, (p, _) in zip(mask_set, masked_parameters(model, mask_set))}
        names, values, kept_masks, user_names = [], {}, {}, {}
        for name, param in model.named_parameters():
            if not param.requires_grad:
                continue
            names.append(name)
            value = param.detach()
            if id(param) in by_identity:
                mask = by_identity[id(param)]
                kept_masks[name] = mask
                user_names[name] = user_of[id(param)]
                value = value * mask
            else:
                user_names[name] = name
            values[name] = value
        return cls(tuple(names), values, kept_masks, user_names)

    @cached_property
    def kept_index(self) -> torch.Tensor:
        """Positions of kept coordinates in the concatenation of all tensors (flattened, in ``names`` order)."""
        parts, offset = [], 0
        for name in self.names:
            numel = self.values[name].numel()
            mask = self.masks.get(name)
            local = torch.arange(numel, device=self.device) if mask is None else mask.reshape(-1).nonzero().reshape(-1)
            parts.append(local + offset)
            offset += numel
        return torch.cat(parts)

    @property
    def device(self) -> torch.device:
        return self.values[self.names[0]].device

    @property
    def dtype(self) -> torch.dtype:
        return self.values[self.names[0]].dtype

    @property
    def num_total(self) -> int:
        return sum(v.numel() for v in self.values.values())

    @property
    def num_kept(self) -> int:
        return int(self.kept_index.numel())

    def gather(self, tensors: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """Kept coordinates of a stack of tensor dicts: each ``(K, *shape)`` -> one ``(K, num_kept)`` matrix."""
        flat = torch.cat([tensors[n].reshape(tensors[n].shape[0], -1) for n in self.names], dim=1)
        return flat[:, self.kept_index]

    def scatter(self, kept: torch.Tensor) -> dict[str, torch.Tensor]:
        """Inverse of :meth:`gather`: ``(K, num_kept)`` -> dict of ``(K, *shape)`` with zeros on pruned entries."""
        full = torch.zeros(kept.shape[0], self.num_total, dtype=kept.dtype, device=kept.device)
        full[:, self.kept_index] = kept
        out, offset = {}, 0
        for name in self.names:
            shape = self.values[name].shape
            out[name] = full[:, offset : offset + self.values[name].numel()].reshape(kept.shape[0], *shape)
            offset += self.values[name].numel()
        return out


@contextmanager
def probing(model: nn.Module):
    """Eval mode (BN running stats, no dropout) for the probe; mode, grads and requires_grad restored after."""
    modes = [(m, m.training) for m in model.modules()]
    grads = [(p, p.grad, p.requires_grad) for p in model.parameters()]
    # torch.nn.utils.prune's pre-hook re-sets `module.weight` on every forward, including functional ones
    # (where it would keep a tensor of the last probed point): put the original attributes back.
    hooked = [
        (m, attr[: -len("_orig")], getattr(m, attr[: -len("_orig")], None))
        for m in model.modules()
        for attr in m._parameters
        if attr.endswith("_orig")
    ]
    model.eval()
    try:
        yield
    finally:
        for module, mode in modes:
            module.training = mode
        for module, attr, tensor in hooked:
            setattr(module, attr, tensor)
        for param, grad, requires in grads:
            param.grad = grad
            param.requires_grad_(requires)
