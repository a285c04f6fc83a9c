"""GraSP (Wang, Zhang & Grosse, ICLR 2020): gradient signal preservation, ``theta * (H g)``.

``g`` is the gradient of ``L(f(x) / T)`` (temperature ``T = 200``) w.r.t. the prunable weights, summed
over the prune set; ``H g`` is the Hessian-gradient product of the same loss, by double backward:
``H g = d/dtheta (g_stopped . dL/dtheta)``.

Sign convention (read this): the paper scores ``S = -theta * (H g)`` and removes the *highest* S. This
scorer returns ``-S = theta * (H g)`` and, like every scorer here, the *highest* scores are kept; so the
lowest ``theta * (H g)`` are pruned, exactly as the reference code (Synaptic-Flow, NTK-SAP) does. The
scores are not normalised (dividing by ``|sum|`` does not change the ranking). Eval mode, like the
reference.

Example:
    >>> import torch
    >>> from prune_landscape import models
    >>> from prune_landscape.pruning.workspace import working_copy
    >>> net = working_copy(models.mlp([2, 3, 2]))
    >>> masks = {n: torch.ones_like(p, dtype=torch.bool) for n, p in net.named_parameters() if p.dim() > 1}
    >>> data = (torch.randn(4, 2), torch.tensor([0, 1, 0, 1]))
    >>> sorted(grasp_scores(net, masks, data, None))
    ['fc1.weight', 'fc2.weight']
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import torch
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.overrides import TorchFunctionMode

from prune_landscape.batching import iter_batches
from prune_landscape.checks import check_positive_number
from prune_landscape.pruning.workspace import classification_loss, masked_call, weight_of

__all__ = ["grasp_scores"]


class _TwiceDifferentiable(TorchFunctionMode):
    """Runs ``F.hardsigmoid`` (MobileNetV3's gates; its backward has no derivative) as ``relu6(x + 3) / 6``.

    The same function (PyTorch defines hardsigmoid this way), built from ops that differentiate twice.
    """

    def __torch_function__(self, func, types, args=(), kwargs=None):  # noqa: ANN001, ANN204 - torch protocol
        kwargs = kwargs or {}
        if func is nn.functional.hardsigmoid:
            return nn.functional.relu6(args[0] + 3.0) / 6.0
        return func(*args, **kwargs)


def grasp_scores(
    model: nn.Module,
    masks: Mapping[str, torch.Tensor],
    data: tuple[torch.Tensor, torch.Tensor],
    generator: torch.Generator | None,
    *,
    batch_size: int = 256,
    temperature: float = 200.0,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
) -> dict[str, torch.Tensor]:
    """``theta * (H g)`` per masked tensor; keep the highest (= prune the lowest, see module docstring)."""
    check_positive_number("temperature", temperature)
    loss_fn = loss_fn or classification_loss
    names = list(masks)
    theta = {n: weight_of(model, n) * masks[n].to(weight_of(model, n).dtype) for n in names}
    leaves = [theta[n].clone().requires_grad_(True) for n in names]

    def batch_loss(inputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        outputs = masked_call(model, dict(zip(names, leaves)), inputs)
        return loss_fn(outputs / temperature, targets)

    batches = list(iter_batches(data, batch_size))
    gradient = [torch.zeros_like(t) for t in leaves]
    hessian_gradient = [torch.zeros_like(t) for t in leaves]
    # The fused attention kernels and hardsigmoid have no double backward: run scaled_dot_product_attention
    # through its math backend and hardsigmoid as relu6(x + 3) / 6 (the same functions) while GraSP
    # differentiates twice. None below: a weight the output does not use (an auxiliary head): 0.
    with sdpa_kernel(SDPBackend.MATH), _TwiceDifferentiable():
        for inputs, targets in batches:
            for total, g in zip(gradient, torch.autograd.grad(batch_loss(inputs, targets), leaves, allow_unused=True)):
                if g is not None:
                    total += g
        for inputs, targets in batches:
            grads = torch.autograd.grad(batch_loss(inputs, targets), leaves, create_graph=True, allow_unused=True)
            inner = sum((g * stopped).sum() for g, stopped in zip(grads, gradient) if g is not None)
            if not isinstance(inner, torch.Tensor) or not inner.requires_grad:
                continue  # the loss is linear in every weight: H g = 0
            for total, hg in zip(hessian_gradient, torch.autograd.grad(inner, leaves, allow_unused=True)):
                if hg is not None:
                    total += hg
    return {n: theta[n] * hg for n, hg in zip(names, hessian_gradient)}
