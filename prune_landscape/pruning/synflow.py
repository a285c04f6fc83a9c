"""SynFlow (Tanaka, Kunin, Yamins & Ganguli, NeurIPS 2020): iterative synaptic flow, data-free.

Every parameter and floating buffer (BatchNorm running mean/var included) is replaced by its absolute
value, the network runs in eval mode on ONE all-ones input with the data's sample shape,
``R = sum(outputs)`` and the score is ``|theta * dR/dtheta|`` for the masked weights ``theta``.
Deep nets overflow float32 (R grows like the product of layer norms), so scoring runs in float64 by
default (``double=True``). The absolute values live only in the private working copy; the user's
weights and signs are never touched. :func:`prune` iterates the exponential schedule (100 iterations by
default), scoring again under each new mask.

Example (two-layer linear net, hand-worked: ``score1[i, j] = |W1[i, j]| * sum_k |W2[k, i]|``):
    >>> import torch
    >>> from prune_landscape import models
    >>> from prune_landscape.pruning.workspace import working_copy
    >>> net = working_copy(models.mlp([2, 2, 1], activation="linear", bias=False))
    >>> with torch.no_grad():
    ...     _ = net.fc1.weight.copy_(torch.tensor([[1.0, -2.0], [3.0, 4.0]]))
    ...     _ = net.fc2.weight.copy_(torch.tensor([[-5.0, 6.0]]))
    >>> masks = {n: torch.ones_like(p, dtype=torch.bool) for n, p in net.named_parameters()}
    >>> synflow_scores(net, masks, (torch.zeros(1, 2), torch.zeros(1)), None)["fc1.weight"].tolist()
    [[5.0, 10.0], [18.0, 24.0]]
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from prune_landscape.batching import map_tensors
from prune_landscape.pruning.workspace import masked_call, weight_of

__all__ = ["synflow_scores"]


def synflow_scores(
    model: nn.Module,
    masks: Mapping[str, torch.Tensor],
    data: tuple[torch.Tensor, torch.Tensor],
    generator: torch.Generator | None,
    *,
    double: bool = True,
) -> dict[str, torch.Tensor]:
    """``|theta * dR/dtheta|`` with |parameters|, |buffers| and one all-ones input (see module docstring)."""
    if double:
        model.double()
    with torch.no_grad():
        for tensor in list(model.parameters()) + list(model.buffers()):
            if tensor.is_floating_point():
                tensor.abs_()
    model.eval()
    dtype = torch.float64 if double else weight_of(model, next(iter(masks))).dtype
    names = list(masks)
    theta = {n: weight_of(model, n) for n in names}
    soft = {n: masks[n].to(theta[n].dtype).requires_grad_(True) for n in names}
    ones = map_tensors(lambda t: torch.ones((1, *t.shape[1:]), dtype=dtype, device=t.device), data[0])
    flow = masked_call(model, {n: theta[n] * soft[n] for n in names}, ones).sum()
    # dR/dm = theta * dR/dw: the reference's |theta * grad| on kept entries; pruned entries score 0.
    grads = torch.autograd.grad(flow, [soft[n] for n in names], allow_unused=True)
    return {
        n: (g.abs() * masks[n] if g is not None else torch.zeros_like(theta[n])) for n, g in zip(names, grads)
    }
