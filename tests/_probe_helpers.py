"""Shared float64 fixtures for the probe tests: tiny pruned MLPs and a snapshot of a model's full state."""

from __future__ import annotations

import torch
from torch.func import functional_call

from prune_landscape import MaskSet, models


def pruned_mlp(widths=(6, 12, 10, 3), density=0.5, seed=0, hooks=True, dtype=torch.float64):
    """An MLP (float64 by default) with random masks, pruned via torch.nn.utils.prune (hooks) or exact zeros."""
    net = models.mlp(list(widths))
    net.init_weights(torch.Generator().manual_seed(seed))
    net.to(dtype)
    g = torch.Generator().manual_seed(seed + 1)
    masks = MaskSet({n: torch.rand(p.shape, generator=g) < density for n, p in net.named_parameters() if n.endswith("weight")})
    if hooks:
        masks.apply_to(net)
    else:
        with torch.no_grad():
            for name, mask in masks.items():
                net.get_parameter(name).mul_(mask)
    return net, masks


def classification_data(n=40, d=6, classes=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=g, dtype=torch.float64), torch.randint(0, classes, (n,), generator=g)


def snapshot(model):
    """Everything a probe must give back: state dict, modes, grads and the prune-hook attributes."""
    return (
        {k: v.detach().clone() for k, v in model.state_dict().items()},
        [m.training for m in model.modules()],
        [p.grad for p in model.parameters()],
        {(id(m), a[:-5]): getattr(m, a[:-5]) for m in model.modules() for a in m._parameters if a.endswith("_orig")},
    )


def assert_restored(model, before):
    state, modes, grads, hooked = before
    after = model.state_dict()
    assert state.keys() == after.keys()
    for key, value in state.items():
        assert torch.equal(value, after[key]), key  # bitwise
    assert [m.training for m in model.modules()] == modes
    assert all(p.grad is g for p, g in zip(model.parameters(), grads))
    for m in model.modules():
        for a in m._parameters:
            if a.endswith("_orig"):
                assert getattr(m, a[:-5]) is hooked[(id(m), a[:-5])]


def dense_kept_hessian(model, masks, x, y, loss_fn):
    """Oracle: torch.autograd.functional.hessian over all trainable tensors, restricted to kept coordinates."""
    named = [(n, p.detach().clone()) for n, p in model.named_parameters()]
    names = [n for n, _ in named]
    shapes = [v.shape for _, v in named]
    flat = torch.cat([v.reshape(-1) for _, v in named])

    def user(name):
        return name[: -len("_orig")] if name.endswith("_orig") else name

    keep = torch.cat([
        (masks[user(n)] if user(n) in masks else torch.ones(v.shape, dtype=torch.bool)).reshape(-1) for n, v in named
    ])
    flat = flat * keep  # the masked point

    def f(vec):
        params, offset = {}, 0
        for n, s in zip(names, shapes):
            params[n] = vec[offset : offset + s.numel()].reshape(s)
            offset += s.numel()
        return loss_fn(functional_call(model, params, (x,)), y)

    was = model.training
    model.eval()
    H = torch.autograd.functional.hessian(f, flat)
    model.train(was)
    return H[keep][:, keep]
