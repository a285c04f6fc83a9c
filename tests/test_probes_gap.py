"""Final-layer convex gap against direct solves: numpy lstsq per row (squared loss), scipy L-BFGS (cross-entropy),
and, with the default ridge, scikit-learn's Ridge and LogisticRegression on the RMS-scaled features."""

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
    gap = final_layer_gap(net, (x, y), batch_size=25, ridge=0.0)
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
    gap = final_layer_gap(net, (x, y), ridge=0.0)
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


def _scaled(net, masks, x):
    """The oracle's design: features over their RMS (zero columns kept at scale 1), in numpy."""
    features = _features(net, masks, x)
    rms = np.sqrt((features**2).mean(0))
    return features / np.where(rms > 0, rms, 1.0)


def test_squared_loss_ridge_matches_sklearn_ridge_per_row():
    from sklearn.linear_model import Ridge

    net, masks = pruned_mlp(widths=(5, 12, 3), density=0.5, seed=2)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(60, 5, dtype=torch.float64, generator=g)
    y = torch.randn(60, 3, dtype=torch.float64, generator=g)
    ridge = 0.05
    gap = final_layer_gap(net, (x, y), ridge=ridge)
    design = _scaled(net, masks, x)
    mask = masks["fc2.weight"].numpy()

    def optimum(support):
        # Row k: (1/(n K)) ||X w + b - y||^2 + ridge/2 ||w||^2, i.e. sklearn's alpha = n K ridge / 2.
        value = 0.0
        for k in range(3):
            cols = support[k]
            model = Ridge(alpha=60 * 3 * ridge / 2, fit_intercept=True, solver="svd").fit(design[:, cols], y[:, k].numpy())
            residual = design[:, cols] @ model.coef_ + model.intercept_ - y[:, k].numpy()
            value += float((residual**2).sum()) / (60 * 3) + ridge / 2 * float((model.coef_**2).sum())
        return value

    assert gap.ridge == ridge and gap.loss == "mse"
    assert gap.masked_optimum == pytest.approx(optimum(mask), rel=1e-9)
    assert gap.dense_optimum == pytest.approx(optimum(np.ones_like(mask)), rel=1e-9)
    assert gap.null_loss == pytest.approx(float(((y - y.mean(0)) ** 2).mean()), rel=1e-12)
    assert gap.relative_price == pytest.approx(gap.sparsity_price / gap.null_loss)
    assert gap.current >= gap.masked_optimum >= gap.dense_optimum


def test_ridge_price_is_invariant_to_rescaling_the_features():
    net, _ = pruned_mlp(widths=(5, 12, 3), density=0.5, seed=2)
    g = torch.Generator().manual_seed(3)
    data = (torch.randn(80, 5, dtype=torch.float64, generator=g), torch.randint(0, 3, (80,), generator=g))
    before = final_layer_gap(net, data)
    with torch.no_grad():  # scale hidden unit j by c_j (ReLU is positively homogeneous): same head problem
        c = torch.linspace(0.1, 10, 12, dtype=torch.float64)
        net.fc1.weight_orig.mul_(c[:, None])
        net.fc1.bias.mul_(c)
        net.fc2.weight_orig.div_(c[None, :])
    after = final_layer_gap(net, data)
    assert after.masked_optimum == pytest.approx(before.masked_optimum, rel=1e-7)
    assert after.dense_optimum == pytest.approx(before.dense_optimum, rel=1e-7)
    assert after.current == pytest.approx(before.current, rel=1e-9)


def _separable(net, masks, n=120, seed=13):
    """Labels read off the network's own features: linearly separable by construction."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 5, dtype=torch.float64, generator=g)
    features = torch.from_numpy(_features(net, masks, x))
    labels = (features @ torch.randn(features.shape[1], 4, dtype=torch.float64, generator=g)).argmax(1)
    return x, labels


def test_cross_entropy_ridge_dense_optimum_matches_sklearn_logistic_regression_on_separable_data():
    from sklearn.linear_model import LogisticRegression

    net, masks = pruned_mlp(widths=(5, 16, 4), density=0.6, seed=7)
    x, labels = _separable(net, masks)
    ridge = 1e-3
    unregularised = final_layer_gap(net, (x, labels), ridge=0.0, max_iter=50)
    assert unregularised.dense_optimum < 1e-3  # separable: the infimum 0 is only approached as the weights grow
    gap = final_layer_gap(net, (x, labels), ridge=ridge)
    assert gap.converged
    design = _scaled(net, masks, x)
    # sklearn minimises C * sum_i CE_i + 1/2 ||W||^2 (intercept free); ours is that times n ridge with C = 1/(n ridge).
    reference = LogisticRegression(C=1 / (len(labels) * ridge), tol=1e-12, max_iter=100_000).fit(design, labels.numpy())
    logits = design @ reference.coef_.T + reference.intercept_
    value = float(F.cross_entropy(torch.from_numpy(logits), labels)) + ridge / 2 * float((reference.coef_**2).sum())
    assert gap.dense_optimum == pytest.approx(value, rel=1e-6)
    counts = np.bincount(labels.numpy(), minlength=4) / len(labels)
    assert gap.null_loss == pytest.approx(float(-(counts[counts > 0] * np.log(counts[counts > 0])).sum()), rel=1e-12)


def test_cross_entropy_ridge_masked_optimum_matches_a_numpy_scipy_solve():
    net, masks = pruned_mlp(widths=(5, 16, 4), density=0.6, seed=7)
    x, labels = _separable(net, masks)
    ridge = 1e-3
    gap = final_layer_gap(net, (x, labels), ridge=ridge)
    design = np.hstack([_scaled(net, masks, x), np.ones((len(labels), 1))])
    support = np.hstack([masks["fc2.weight"].numpy(), np.ones((4, 1), dtype=bool)])
    onehot = np.eye(4)[labels.numpy()]
    penalised = np.zeros_like(support)
    penalised[:, :-1] = True

    def objective(free):  # numpy softmax cross-entropy + ridge, with its gradient
        w = np.zeros(support.shape)
        w[support] = free
        logits = design @ w.T
        logits -= logits.max(1, keepdims=True)
        log_p = logits - np.log(np.exp(logits).sum(1, keepdims=True))
        value = -(onehot * log_p).sum() / len(labels) + ridge / 2 * (w[penalised] ** 2).sum()
        grad = (np.exp(log_p) - onehot).T @ design / len(labels) + ridge * w * penalised
        return value, grad[support]

    reference = minimize(objective, np.zeros(int(support.sum())), jac=True, method="L-BFGS-B",
                         options={"gtol": 1e-12, "ftol": 1e-15, "maxiter": 20_000})
    assert gap.masked_optimum == pytest.approx(reference.fun, rel=1e-6)
    assert gap.sparsity_price > 0


def test_ridge_must_be_finite_and_non_negative():
    net, _ = pruned_mlp(widths=(5, 8, 3), density=0.5, seed=1)
    data = (torch.randn(10, 5, dtype=torch.float64), torch.randint(0, 3, (10,)))
    for bad in (-1e-3, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="ridge must be a finite number >= 0"):
            final_layer_gap(net, data, ridge=bad)


def test_newton_and_lbfgs_reach_the_same_ridge_optimum(monkeypatch):
    from prune_landscape.probes import head_solvers

    net, masks = pruned_mlp(widths=(5, 16, 4), density=0.6, seed=7)
    data = _separable(net, masks)
    newton = final_layer_gap(net, data)
    monkeypatch.setattr(head_solvers, "_NEWTON_MAX_WEIGHTS", 0)  # every head "large": L-BFGS
    lbfgs = final_layer_gap(net, data, max_iter=2000)
    assert newton.converged and lbfgs.converged
    assert newton.masked_optimum == pytest.approx(lbfgs.masked_optimum, rel=1e-7)
    assert newton.dense_optimum == pytest.approx(lbfgs.dense_optimum, rel=1e-7)


def test_gap_options_group_the_knobs_and_equal_the_loose_keywords():
    from prune_landscape.probes import GapOptions

    net, _ = pruned_mlp(widths=(5, 8, 3), density=0.5, seed=1)
    data = (torch.randn(30, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(2)),
            torch.randn(30, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(3)))
    grouped = final_layer_gap(net, data, options=GapOptions(ridge=0.01, max_samples=20, batch_size=7))
    assert grouped == final_layer_gap(net, data, ridge=0.01, max_samples=20, batch_size=7)
    assert grouped.num_samples == 20 and grouped.ridge == 0.01
    # a keyword overrides the value's field; an unknown one names the valid ones
    assert final_layer_gap(net, data, options=GapOptions(ridge=0.5), ridge=0.01, max_samples=20, batch_size=7) == grouped
    with pytest.raises(TypeError, match="unexpected keyword argument 'iterations'.*'max_iter'"):
        final_layer_gap(net, data, iterations=3)
    with pytest.raises(ValueError, match="max_iter must be a positive int, got 0"):
        GapOptions(max_iter=0)
