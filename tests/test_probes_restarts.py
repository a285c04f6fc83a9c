"""Restart spread and the dense-vs-sparse final-layer A/B on teacher-student data (THEORY.md NL-1 vs NL-3)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from _probe_helpers import assert_restored, snapshot
from prune_landscape import models, prunable_parameters
from prune_landscape.probes import (
    PROBES,
    FinalLayerABResult,
    budget_matched_masks,
    final_layer_ab,
    restart_spread,
)
from prune_landscape.training import train


def _teacher_student(n=40, d=30, outputs=4, seed=123):
    x = torch.randn(n, d, generator=torch.Generator().manual_seed(seed))
    teacher = models.mlp([d, 64, outputs])
    teacher.init_weights(torch.Generator().manual_seed(7))
    with torch.no_grad():
        y = teacher(x)
    return x, y / y.std()


def test_restart_spread_equals_independent_restarts_and_leaves_model_alone():
    x, y = _teacher_student(n=24, d=6, outputs=2)
    net = models.mlp([6, 10, 2])
    masks = budget_matched_masks(net, 0.5, seed=1)
    masks.apply_to(net)
    before = snapshot(net)
    spread = restart_spread(net, (x, y), seeds=[3, 5], epochs=20, lr=0.05, batch_size=None)
    assert_restored(net, before)
    for seed, value in zip(spread.seeds, spread.final_losses):
        fresh = models.mlp([6, 10, 2])
        fresh.init_weights(torch.Generator().manual_seed(seed))
        expected = train(fresh, (x, y), masks=masks, seed=seed, loss="mse", epochs=20, lr=0.05, batch_size=None)
        assert value == expected.final_loss
        for name, mask in masks.items():
            assert torch.all(fresh.get_parameter(name)[~mask] == 0)
    s = spread.scalars()
    assert s["mean"] == pytest.approx(np.mean(spread.final_losses)) and s["std"] == pytest.approx(np.std(spread.final_losses, ddof=1))
    assert spread.loss == "mse" and spread.figure() is not None


def test_budget_matched_masks_spend_the_same_budget():
    net = models.mlp([30, 64, 4])
    total = sum(net.get_parameter(n).numel() for n in prunable_parameters(net))
    for method in ("random", "magnitude"):
        sparse = budget_matched_masks(net, 0.8, final_layer_policy="prune", seed=0, method=method)
        dense = budget_matched_masks(net, 0.8, final_layer_policy="dense", seed=0, method=method)
        assert sparse.num_kept == dense.num_kept == round(0.2 * total)
        assert bool(dense["fc2.weight"].all()) and not bool(sparse["fc2.weight"].all())
    with pytest.raises(ValueError, match="final_layer='dense' does not fit"):  # allocate's check, with the numbers
        budget_matched_masks(models.mlp([2, 64, 4]), 0.9, final_layer_policy="dense")
    with pytest.warns(DeprecationWarning, match="budget_matched_masks: final_layer= is deprecated; use final_layer_policy="):
        old = budget_matched_masks(net, 0.8, final_layer="dense", seed=0)
    assert old == budget_matched_masks(net, 0.8, final_layer_policy="dense", seed=0)


def test_paired_statistics_match_hand_computation():
    result = FinalLayerABResult(seeds=(0, 1, 2, 3), sparse_losses=(2.0, 4.0, 6.0, 8.0), dense_losses=(1.0, 2.0, 3.0, 4.0),
                                sparse_fan_in_min=(1, 1, 1, 1), num_samples=10, sparsity=0.5, loss="mse")
    s = result.scalars()
    half = 3.182446305284263 * math.sqrt(5 / 3) / 2  # t_{0.975, 3} * sd([1, 2, 3, 4]) / sqrt(4)
    assert s["mean_difference"] == 2.5
    assert s["ci_low"] == pytest.approx(2.5 - half) and s["ci_high"] == pytest.approx(2.5 + half)
    assert s["wilcoxon_pvalue"] == pytest.approx(0.125)  # exact two-sided p for 4 positive ranks
    assert s["dense_wins"] == 4
    assert result.to_dict()["sparse_losses"] == [2.0, 4.0, 6.0, 8.0]


def test_dense_final_layer_trains_lower_than_sparse_at_the_same_budget():
    # n = 40 points, 64 hidden units: the dense head gives every output fan-in 64 >= n (NL-1); pruning
    # the head at 80 % leaves outputs with fan-in ~13 < n (NL-3). Same budget, same inits, 8 seeds.
    x, y = _teacher_student()
    ab = final_layer_ab(models.mlp([30, 64, 4]), (x, y), sparsity=0.8, seeds=8, epochs=300, lr=0.1,
                        optimizer="sgd", batch_size=None, loss="mse")
    s = ab.scalars()
    assert max(ab.sparse_fan_in_min) < ab.num_samples == 40
    assert s["ci_low"] > 0  # sparse - dense, 95 % t interval, strictly above 0
    assert s["wilcoxon_pvalue"] < 0.05 and s["t_pvalue"] < 0.05
    assert s["dense_wins"] >= 7
    assert ab.figure() is not None


def test_registry_restart_spread_runs_with_defaults():
    x = torch.randn(30, 4, generator=torch.Generator().manual_seed(0))
    y = x[:, :3].argmax(1)
    result = PROBES["restart_spread"](models.mlp([4, 8, 3]), (x, y))
    assert len(result.final_losses) == 5 and result.loss == "cross_entropy"
    assert len(set(result.final_losses)) == 5  # different seeds, different restarts


def test_a_model_without_init_weights_restarts_from_the_one_reinit_function():
    # nn.Sequential has no init_weights(generator): every module's reset_parameters() draws, seeded from the
    # restart's seed (pruning.reinit.redraw_initial_weights), and the caller's global RNG is left alone.
    from prune_landscape.modelcopy import copy_model
    from prune_landscape.pruning.reinit import redraw_initial_weights

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(6, 10), torch.nn.ReLU(), torch.nn.Linear(10, 2))
    x, y = _teacher_student(n=24, d=6, outputs=2)
    masks = budget_matched_masks(net, 0.5, seed=1)
    masks.apply_to(net)
    state = torch.random.get_rng_state()
    spread = restart_spread(net, (x, y), seeds=[3, 4], epochs=5, lr=0.05, batch_size=None)
    assert torch.equal(torch.random.get_rng_state(), state)
    for seed, value in zip(spread.seeds, spread.final_losses):
        fresh = copy_model(net)
        torch.nn.utils.prune.remove(fresh[0], "weight")
        torch.nn.utils.prune.remove(fresh[2], "weight")
        redraw_initial_weights(fresh, seed)
        expected = train(fresh, (x, y), masks=masks, seed=seed, loss="mse", epochs=5, lr=0.05, batch_size=None)
        assert value == expected.final_loss
    assert spread.final_losses[0] != spread.final_losses[1]
