"""SNIP (Lee, Ajanthan & Torr, ICLR 2019): connection sensitivity ``|w * dL/dw|`` over the prune set.

The gradient is taken w.r.t. a float copy ``m`` of the mask with the forward using ``w * m``, so
``dL/dm = w * dL/dw`` exactly; gradients of the per-batch mean losses are summed over the prune set
before the absolute value (as the Synaptic-Flow code does). The scores are not normalised: dividing by
their sum does not change which weights are kept. Like the reference code the network scores in eval
mode. One shot by default; ``iterations > 1`` in :func:`prune` gives iterative SNIP.

Example:
    >>> import torch
    >>> from prune_landscape import models
    >>> from prune_landscape.pruning.workspace import working_copy
    >>> net = working_copy(models.mlp([2, 2]))
    >>> masks = {"fc1.weight": torch.ones(2, 2, dtype=torch.bool)}
    >>> data = (torch.ones(4, 2), torch.tensor([0, 1, 0, 1]))
    >>> snip_scores(net, masks, data, None)["fc1.weight"].shape
    torch.Size([2, 2])
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import torch
from torch import nn

from prune_landscape.batching import iter_batches
from prune_landscape.pruning.workspace import classification_loss, masked_call, weight_of

__all__ = ["snip_scores"]


def snip_scores(
    model: nn.Module,
    masks: Mapping[str, torch.Tensor],
    data: tuple[torch.Tensor, torch.Tensor],
    generator: torch.Generator | None,
    *,
    batch_size: int = 256,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
) -> dict[str, torch.Tensor]:
    """``|sum over batches of w * dL_b/dw|`` per masked tensor (``L_b``: mean cross-entropy by default)."""
    loss_fn = loss_fn or classification_loss
    names = list(masks)
    theta = {n: weight_of(model, n) for n in names}
    soft = {n: masks[n].to(theta[n].dtype).requires_grad_(True) for n in names}
    total = {n: torch.zeros_like(theta[n]) for n in names}
    for inputs, targets in iter_batches(data, batch_size):
        outputs = masked_call(model, {n: theta[n] * soft[n] for n in names}, inputs)
        # allow_unused: a weight the output does not use (an auxiliary head) has sensitivity 0.
        grads = torch.autograd.grad(loss_fn(outputs, targets), [soft[n] for n in names], allow_unused=True)
        for n, g in zip(names, grads):
            if g is not None:
                total[n] += g
    return {n: total[n].abs() for n in names}
