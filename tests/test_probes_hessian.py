"""Hessian probe against a dense float64 Hessian restricted to the kept coordinates."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

from _probe_helpers import assert_restored, classification_data, dense_kept_hessian, pruned_mlp, snapshot
from prune_landscape import MaskSet
from prune_landscape.probes import PROBES, hessian_spectrum


@pytest.mark.parametrize("backend,cache_samples", [("torch", 4096), ("torch", 0), ("curvlinops", 4096)])
@pytest.mark.parametrize("hooks", [True, False])
def test_eigenvalues_match_dense_hessian_on_kept_coordinates(backend, cache_samples, hooks):
    net, masks = pruned_mlp(hooks=hooks)
    x, y = classification_data()
    H = dense_kept_hessian(net, masks, x, y, F.cross_entropy)
    exact = torch.linalg.eigvalsh(H)
    before = snapshot(net)
    result = hessian_spectrum(
        net, (x, y), k=5, backend=backend, tol=1e-10, trace_probes=0, batch_size=16, cache_samples=cache_samples
    )
    assert_restored(net, before)
    assert result.num_kept == H.shape[0] > 64  # the ARPACK path, not the dense fallback
    assert result.converged and result.loss == "cross_entropy"
    torch.testing.assert_close(torch.tensor(result.eigenvalues, dtype=torch.float64), exact.flip(0)[:5], rtol=1e-6, atol=0)
    assert result.min_eigenvalue < 0  # a random init of a ReLU net is a saddle
    assert result.min_eigenvalue == pytest.approx(float(exact[0]), rel=1e-6)


def test_small_problem_uses_exact_dense_spectrum_and_mse():
    net, masks = pruned_mlp(widths=(3, 4, 2), density=0.6)
    x = torch.randn(30, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(5))
    y = torch.randn(30, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(6))
    H = dense_kept_hessian(net, masks, x, y, F.mse_loss)
    exact = torch.linalg.eigvalsh(H)
    result = hessian_spectrum(net, (x, y), k=3, trace_probes=0)
    assert result.loss == "mse" and result.num_kept == H.shape[0]
    torch.testing.assert_close(torch.tensor(result.eigenvalues, dtype=torch.float64), exact.flip(0)[:3], rtol=1e-9, atol=1e-12)
    assert result.min_eigenvalue == pytest.approx(float(exact[0]), rel=1e-9, abs=1e-12)


def test_hutchinson_trace_within_5_percent_at_1000_probes():
    net, masks = pruned_mlp(widths=(6, 10, 3), density=0.6, seed=3)
    x, y = classification_data(seed=3)
    H = dense_kept_hessian(net, masks, x, y, F.cross_entropy)
    result = hessian_spectrum(net, (x, y), k=1, trace_probes=1000, min_eigenvalue=False, seed=1)
    exact = float(H.trace())
    assert abs(result.trace - exact) <= 0.05 * abs(exact)
    # the reported standard error is the Rademacher estimator's: sqrt(2 * sum_{i != j} H_ij^2 / m)
    off = float((H**2).sum() - (H.diagonal() ** 2).sum())
    assert result.trace_std_error == pytest.approx((2 * off / 1000) ** 0.5, rel=0.2)


def test_explicit_masks_probe_the_masked_network():
    # Explicit masks on a model whose pruned weights are NOT zero: the probe must use the masked point.
    net, masks = pruned_mlp(hooks=False)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.3 * (p == 0))  # refill the pruned entries
    zeroed = copy.deepcopy(net)
    with torch.no_grad():
        for name, mask in masks.items():
            zeroed.get_parameter(name).mul_(mask)
    data = classification_data()
    a = hessian_spectrum(net, data, k=3, masks=masks, trace_probes=0, tol=1e-10)
    b = hessian_spectrum(zeroed, data, k=3, trace_probes=0, tol=1e-10)
    torch.testing.assert_close(torch.tensor(a.eigenvalues), torch.tensor(b.eigenvalues), rtol=1e-8, atol=0)
    with pytest.raises(ValueError, match="backend='torch'"):
        hessian_spectrum(net, data, k=3, masks=masks, backend="curvlinops")


def _bn_dropout_net():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(6, 12), torch.nn.BatchNorm1d(12), torch.nn.ReLU(), torch.nn.Dropout(0.5),
                              torch.nn.Linear(12, 3)).double()
    net[1].running_mean.fill_(0.1)
    MaskSet({"4.weight": torch.rand(3, 12) < 0.5}).apply_to(net)
    return net


def test_batchnorm_dropout_model_is_probed_in_eval_mode_and_restored():
    net = _bn_dropout_net().train()
    net[0].weight.grad = torch.ones_like(net[0].weight)
    before = snapshot(net)
    data = classification_data()
    result = hessian_spectrum(net, data, k=2, trace_probes=20, density_steps=20)
    assert_restored(net, before)
    again = hessian_spectrum(_bn_dropout_net().eval(), data, k=2, trace_probes=20, density_steps=20)
    assert result.eigenvalues == again.eigenvalues  # identical: train mode was switched off for the probe
    assert len(result.density) == len(result.density_grid) == 512


def test_spectral_density_is_a_density_over_explicit_bounds():
    net, _ = pruned_mlp()
    result = hessian_spectrum(net, classification_data(), k=2, trace_probes=0, density_steps=40, density_repeats=2)
    grid = torch.tensor(result.density_grid)
    density = torch.tensor(result.density)
    mass = float(torch.trapezoid(density, grid))
    assert mass == pytest.approx(1.0, abs=0.05)
    assert grid[0] < result.min_eigenvalue and grid[-1] > result.eigenvalues[0]
    assert result.figure() is not None
    scalars = result.scalars()
    assert scalars["top_eigenvalue"] == result.eigenvalues[0] and "trace" not in scalars


def test_registry_and_argument_errors():
    net, _ = pruned_mlp(widths=(6, 5, 3))
    result = PROBES["hessian"](net, classification_data())
    assert len(result.eigenvalues) == 5 and result.trace is not None
    assert set(result.to_dict()) >= {"eigenvalues", "trace", "min_eigenvalue"}
    with pytest.raises(ValueError, match="k must be"):
        hessian_spectrum(net, classification_data(), k=0)
    with pytest.raises(ValueError, match="backend"):
        hessian_spectrum(net, classification_data(), backend="pyhessian")


def test_batchnorm_conv_net_runs_folded_and_matches_the_dense_hessian():
    from torch import nn

    from prune_landscape.probes.batched import fast_forward
    from prune_landscape.probes.kept import KeptParameters, probing

    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(2, 4, 3, padding=1, bias=False), nn.BatchNorm2d(4), nn.ReLU(),
        nn.Conv2d(4, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3),
    ).double()
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for norm in (net[1], net[4]):
            norm.running_mean.normal_(0, 0.2, generator=g)
            norm.running_var.uniform_(0.5, 2.0, generator=g)
            norm.weight.uniform_(0.5, 1.5, generator=g)
            norm.bias.normal_(0, 0.2, generator=g)
    masks = MaskSet({n: torch.rand(p.shape, generator=g) < 0.6 for n, p in net.named_parameters() if p.dim() > 1})
    masks.apply_to(net)
    x = torch.randn(20, 2, 5, 5, generator=g, dtype=torch.float64)
    y = torch.randint(0, 3, (20,), generator=g)
    with probing(net):
        forward = fast_forward(net, KeptParameters.from_model(net), x)
        inner = [c.cell_contents.__name__ for c in forward.__closure__ if callable(c.cell_contents)]
    assert forward.__name__ == "channels_last" and inner == ["fused"]  # the folded path is what gets probed
    H = dense_kept_hessian(net, masks, x, y, F.cross_entropy)
    exact = torch.linalg.eigvalsh(H)
    result = hessian_spectrum(net, (x, y), k=5, tol=1e-10, trace_probes=0, batch_size=8)
    assert result.num_kept == H.shape[0] > 64
    torch.testing.assert_close(torch.tensor(result.eigenvalues, dtype=torch.float64), exact.flip(0)[:5], rtol=1e-6, atol=0)
    assert result.min_eigenvalue == pytest.approx(float(exact[0]), rel=1e-6)


def test_mse_with_integer_targets_is_one_loss_for_both_backends_and_the_dense_oracle():
    # Both backends differentiate the same ProbeLoss: squared loss on one-hot class targets. The oracle
    # spells that loss out independently and differentiates it twice in float64.
    net, masks = pruned_mlp()
    x, y = classification_data()

    def one_hot_mse(outputs, targets):
        return ((outputs - F.one_hot(targets, outputs.shape[1]).to(outputs.dtype)) ** 2).mean()

    exact = torch.linalg.eigvalsh(dense_kept_hessian(net, masks, x, y, one_hot_mse))
    results = {
        backend: hessian_spectrum(net, (x, y), k=4, loss="mse", backend=backend, tol=1e-10, trace_probes=0, batch_size=16)
        for backend in ("torch", "curvlinops")
    }
    for result in results.values():
        assert result.loss == "mse" and result.converged and result.num_kept == exact.numel() > 64
        torch.testing.assert_close(torch.tensor(result.eigenvalues, dtype=torch.float64), exact.flip(0)[:4], rtol=1e-6, atol=0)
        assert result.min_eigenvalue == pytest.approx(float(exact[0]), rel=1e-6)
    torch.testing.assert_close(torch.tensor(results["curvlinops"].eigenvalues), torch.tensor(results["torch"].eigenvalues),
                               rtol=1e-8, atol=0)


def test_the_operator_and_estimators_stand_alone_and_options_group_the_knobs():
    import numpy as np

    from prune_landscape.probes import HessianOptions, KeptHessianOperator, KeptParameters, ProbeLoss
    from prune_landscape.probes.estimators import hutchinson_trace, spectral_density, top_eigenvalues
    from prune_landscape.probes.kept import Batches

    net, masks = pruned_mlp(widths=(6, 10, 3), density=0.6, seed=3)
    x, y = classification_data(seed=3)
    H = dense_kept_hessian(net, masks, x, y, F.cross_entropy)
    kept = KeptParameters.from_model(net)
    operator = KeptHessianOperator(net, kept, Batches((x, y), 16, None, kept.device), ProbeLoss("cross_entropy"))
    np.testing.assert_allclose(operator @ np.eye(H.shape[0]), H.numpy(), rtol=1e-9, atol=1e-12)
    assert operator.matvecs == H.shape[0]
    top = top_eigenvalues(operator, 2, tol=1e-10)
    torch.testing.assert_close(torch.tensor(top.values, dtype=torch.float64), torch.linalg.eigvalsh(H).flip(0)[:2])
    trace = hutchinson_trace(operator, 1000, torch.Generator().manual_seed(1))
    assert abs(trace.mean - float(H.trace())) <= 0.05 * abs(float(H.trace()))
    density = spectral_density(operator, 30, (-1.0, top.values[0]), torch.Generator().manual_seed(2))
    assert float(np.trapezoid(density.density, density.grid)) == pytest.approx(1.0, abs=0.05)
    # The grouped value and the loose keywords are the same call; an unknown keyword names the valid ones.
    data = (x, y)
    grouped = hessian_spectrum(net, data, k=2, options=HessianOptions(trace_probes=0, min_eigenvalue=False))
    loose = hessian_spectrum(net, data, k=2, trace_probes=0, min_eigenvalue=False)
    assert grouped == loose
    with pytest.raises(TypeError, match="unexpected keyword argument 'probes'.*'trace_probes'"):
        hessian_spectrum(net, data, k=2, probes=3)
