"""Final-layer convex gap against direct solves: numpy lstsq per row (squared loss), scipy L-BFGS (cross-entropy)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy.optimize import minimize

from _probe_helpers import assert_restored, pruned_mlp, snapshot
from prune_landscape import MaskSet
from prune_landscape.probes import PROBES, final_layer_gap
from prune_landscape.training import evaluate


def _features(net, masks, x):
    w1 = (net.fc1.weight_orig.detach() * masks["fc1.weight"]).numpy()
    return np.maximum(x.numpy() @ w1.T + net.fc1.bias.detach().numpy(), 0.0)


def test_squared_loss_masked_and_dense_optima_match_lstsq_per_row():
    net, masks = pruned_mlp(widths=(5, 12, 3), density=0.5, seed=2)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(60, 5, dtype=torch.float64, generator=g)
    y = torch.randn(60, 3, dtype=torch.float64, generator=g)
    net.train()
    before = snapshot(net)
    gap = final_layer_gap(net, (x, y), batch_size=25)
    assert_restored(net, before)
    features = np.hstack([_features(net, masks, x), np.ones((60, 1))])
    mask = np.hstack([masks["fc2.weight"].numpy(), np.ones((3, 1), dtype=bool)])  # the bias is always kept

    def optimum(support):
        residual = 0.0
        for k in range(3):
            cols = support[k]
            solution = np.linalg.lstsq(features[:, cols], y[:, k].numpy(), rcond=None)[0]
            residual += float(((features[:, cols] @ solution - y[:, k].numpy()) ** 2).sum())
        return residual / y.numel()

    assert gap.loss == "mse" and gap.final_layer == "fc2.weight"
    assert gap.masked_optimum == pytest.approx(optimum(mask), rel=1e-9)
    assert gap.dense_optimum == pytest.approx(optimum(np.ones_like(mask)), rel=1e-9)
    assert gap.current == pytest.approx(evaluate(net, (x, y), loss="mse")[0], rel=1e-12)
    assert gap.current > gap.masked_optimum > gap.dense_optimum
    assert gap.head_gap == gap.current - gap.masked_optimum
    assert gap.final_layer_density == pytest.approx(float(masks["fc2.weight"].double().mean()))
    assert gap.figure() is not None and set(gap.scalars()) >= {"current", "masked_optimum", "dense_optimum"}


def test_cross_entropy_masked_optimum_matches_scipy_on_the_masked_support():
    net, masks = pruned_mlp(widths=(5, 8, 4), density=0.5, seed=4)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(300, 5, dtype=torch.float64, generator=g)
    y = torch.randint(0, 4, (300,), generator=g)  # random labels: not separable, the optimum is attained
    gap = final_layer_gap(net, (x, y))
    features = np.hstack([_features(net, masks, x), np.ones((300, 1))])
    support = np.hstack([masks["fc2.weight"].numpy(), np.ones((4, 1), dtype=bool)])

    def objective(free):
        w = torch.zeros(support.shape, dtype=torch.float64)
        w[torch.from_numpy(support)] = torch.from_numpy(free)
        w.requires_grad_(True)
        value = F.cross_entropy(torch.from_numpy(features) @ w.T, y)
        value.backward()
        return float(value.detach()), w.grad[torch.from_numpy(support)].numpy()

    reference = minimize(objective, np.zeros(int(support.sum())), jac=True, method="L-BFGS-B",
                         options={"gtol": 1e-12, "ftol": 1e-15, "maxiter": 5000})
    assert gap.loss == "cross_entropy" and gap.converged
    assert gap.masked_optimum == pytest.approx(reference.fun, rel=1e-7)
    assert gap.current == pytest.approx(evaluate(net, (x, y))[0], rel=1e-10)
    assert gap.current >= gap.masked_optimum >= gap.dense_optimum


def test_explicit_masks_and_registry():
    net, masks = pruned_mlp(widths=(5, 8, 4), density=0.5, seed=4, hooks=False)
    g = torch.Generator().manual_seed(1)
    data = (torch.randn(50, 5, dtype=torch.float64, generator=g), torch.randn(50, 4, dtype=torch.float64, generator=g))
    sparser = MaskSet({**masks.to_dict(), "fc2.weight": masks["fc2.weight"] & (torch.arange(8) < 3)})
    a = final_layer_gap(net, data, masks=sparser)
    b = PROBES["final_layer_gap"](net, data)
    assert a.final_layer_density < b.final_layer_density
    assert a.masked_optimum >= b.masked_optimum - 1e-12  # fewer kept weights cannot fit better
    assert a.dense_optimum == pytest.approx(b.dense_optimum, rel=1e-10)  # same features, same dense problem


def test_non_linear_final_layer_is_rejected():
    net = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3), torch.nn.Conv2d(2, 3, 1))
    data = (torch.randn(4, 1, 5, 5), torch.randn(4, 3, 3, 3))
    with pytest.raises(ValueError, match="nn.Linear"):
        final_layer_gap(net, data)
