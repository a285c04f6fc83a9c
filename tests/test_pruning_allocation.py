"""Shared pure code: exact top-k with its tie rule, apportioning, scopes, final-layer policy, schedules."""

import math

import pytest
import torch

from prune_landscape.pruning import (
    FinalLayerPolicy,
    GradualSchedule,
    IMPSchedule,
    allocate,
    apportion,
    exponential_densities,
    topk_mask,
)


def _ones(scores):
    return {n: torch.ones_like(s, dtype=torch.bool) for n, s in scores.items()}


def test_topk_tie_rule_keeps_lower_flat_index_first():
    scores = torch.tensor([2.0, 5.0, 2.0, 2.0, 1.0])
    assert topk_mask(scores, 2).tolist() == [True, True, False, False, False]
    assert topk_mask(scores, 3).tolist() == [True, True, True, False, False]
    # Unavailable entries are never kept, whatever their score.
    available = torch.tensor([True, False, True, True, True])
    assert topk_mask(scores, 2, available).tolist() == [True, False, True, False, False]
    with pytest.raises(ValueError, match=r"k must be in \[0, 4\]"):
        topk_mask(scores, 5, available)
    with pytest.raises(ValueError, match="NaN"):
        topk_mask(torch.tensor([1.0, float("nan")]), 1)


def test_global_ties_across_tensors_go_to_the_earlier_tensor():
    scores = {"a": torch.tensor([1.0, 3.0]), "b": torch.tensor([3.0, 3.0])}
    masks = allocate(scores, _ones(scores), 2)
    assert masks["a"].tolist() == [False, True] and masks["b"].tolist() == [True, False]


def test_apportion_is_exact_and_respects_caps():
    assert apportion(10, [1, 1, 2], [10, 10, 10]) == [3, 2, 5]
    # ERK-style: the first part would exceed its cap of 2, so it is fixed at 2 and the rest re-split.
    assert apportion(10, [100, 1, 1], [2, 10, 10]) == [2, 4, 4]
    assert sum(apportion(997, [3, 7, 11, 13], [400, 400, 400, 400])) == 997
    with pytest.raises(ValueError, match=r"total must be in \[0, 4\]"):
        apportion(5, [1, 1], [2, 2])


def test_layerwise_keeps_the_same_fraction_per_layer():
    scores = {"a": torch.arange(10.0), "b": torch.arange(30.0)}
    masks = allocate(scores, _ones(scores), 8, scope="layerwise")
    assert int(masks["a"].sum()) == 2 and int(masks["b"].sum()) == 6
    assert masks["a"].tolist() == [False] * 8 + [True] * 2


def test_erk_densities_by_hand():
    # ERK share of a (out, in) layer before capping is out + in: a (2, 2) gets 4, a (10, 10) gets 20.
    scores = {"small": torch.rand(2, 2), "big": torch.rand(10, 10)}
    masks = allocate(scores, _ones(scores), 24, scope="erk")
    # 24 * 4/24 = 4 -> small is dense (4 of 4), big gets 20.
    assert int(masks["small"].sum()) == 4 and int(masks["big"].sum()) == 20
    masks = allocate(scores, _ones(scores), 12, scope="erk")
    assert int(masks["small"].sum()) == 2 and int(masks["big"].sum()) == 10


def test_final_layer_dense_and_min_density():
    scores = {"a": torch.tensor([9.0, 8.0, 7.0, 6.0]), "fc": torch.tensor([1.0, 2.0, 3.0, 0.5])}
    masks = allocate(scores, _ones(scores), 4, final_layer="fc", policy="prune")
    assert masks["fc"].sum() == 0
    masks = allocate(scores, _ones(scores), 5, final_layer="fc", policy="dense")
    assert masks["fc"].all() and masks["a"].tolist() == [True, False, False, False]
    # min density 0.5 of 4 weights -> at least 2, chosen by fc's own scores (3.0 and 2.0).
    masks = allocate(scores, _ones(scores), 4, final_layer="fc", policy=0.5)
    assert masks["fc"].tolist() == [False, True, True, False] and masks["a"].tolist() == [True, True, False, False]
    masks = allocate(scores, _ones(scores), 4, final_layer="fc", policy="min_density=0.25")
    assert int(masks["fc"].sum()) == 1
    # Hand-worked way out: a floor d with ceil(4 d) <= 3 is at most 0.75; round((1 - s) * 8) >= 4 needs
    # s <= 0.5625, given one step below the boundary (0.5624) so that rounding cannot cross it.
    with pytest.raises(ValueError, match=r"fc alone keeps 4 weights but the whole budget is 3 of 8 \(133 % of it\)\. "
                       r"The largest final-layer floor that fits is min_density=0\.75 .*at most 0\.5624"):
        allocate(scores, _ones(scores), 3, final_layer="fc", policy="dense")
    assert int(allocate(scores, _ones(scores), 3, final_layer="fc", policy=0.75)["fc"].sum()) == 3
    with pytest.raises(ValueError, match="final_layer must be"):
        FinalLayerPolicy.parse("sparse")
    with pytest.raises(ValueError, match=r"in \(0, 1\], got 1.5"):
        FinalLayerPolicy.parse(1.5)


def test_exponential_schedule_matches_d_to_the_t_over_T():
    densities = exponential_densities(1.0, 0.01, 4)
    assert densities == pytest.approx([0.01 ** (t / 4) for t in range(1, 5)])
    assert densities[-1] == 0.01


def test_gradual_schedule_is_zhu_gupta_cubic():
    schedule = GradualSchedule(final_sparsity=0.8, start_step=100, end_step=500, frequency=100, initial_sparsity=0.2)
    # s_t = s_f + (s_i - s_f)(1 - (t - t0)/(n dt))^3 with n dt = 400.
    assert schedule.sparsity_at(0) == 0.2
    assert schedule.sparsity_at(100) == pytest.approx(0.2)
    assert schedule.sparsity_at(300) == pytest.approx(0.8 - 0.6 * 0.5**3)
    assert schedule.sparsity_at(400) == pytest.approx(0.8 - 0.6 * 0.25**3)
    assert schedule.sparsity_at(10_000) == 0.8
    assert [s for s in range(0, 700, 50) if schedule.should_update(s)] == [100, 200, 300, 400, 500]
    odd = GradualSchedule(0.5, 0, 250, 100)
    assert [s for s in range(300) if odd.should_update(s)] == [0, 100, 200, 250]
    with pytest.raises(ValueError, match=r"final_sparsity must be in \[0, 1\), got 1.0"):
        GradualSchedule(1.0, 0, 10, 1)


def test_imp_schedule_prunes_a_fifth_of_the_remaining_per_round():
    schedule = IMPSchedule(rounds=5, rewind_step=10)
    assert [schedule.sparsity_at_round(r) for r in range(6)] == pytest.approx([1 - 0.8**r for r in range(6)])
    assert schedule.final_sparsity == pytest.approx(1 - 0.8**5)
    with pytest.raises(ValueError, match=r"round_index must be an integer in \[0, 5\], got 6"):
        schedule.sparsity_at_round(6)
    assert math.isclose(IMPSchedule(2, rate=0.5).sparsity_at_round(2), 0.75)


def test_topk_mask_equals_a_stable_descending_sort_with_ties_and_infinities():
    # Oracle: the documented rule written the slow way (stable sort over the candidates).
    def by_sort(scores, k, available):
        flat = scores.reshape(-1).double()
        candidates = torch.arange(flat.numel()) if available is None else torch.nonzero(available, as_tuple=True)[0]
        keep = torch.zeros(flat.numel(), dtype=torch.bool)
        keep[candidates[torch.sort(flat[candidates], descending=True, stable=True).indices[:k]]] = True
        return keep

    g = torch.Generator().manual_seed(0)
    for trial in range(500):
        n = int(torch.randint(1, 30, (1,), generator=g))
        scores = torch.randint(0, 4, (n,), generator=g).double()  # many ties
        scores[torch.rand(n, generator=g) < 0.1] = float("inf")
        scores[torch.rand(n, generator=g) < 0.1] = -float("inf")
        available = torch.rand(n, generator=g) < 0.7 if trial % 2 else None
        k = int(torch.randint(0, (n if available is None else int(available.sum())) + 1, (1,), generator=g))
        assert torch.equal(topk_mask(scores, k, available), by_sort(scores, k, available))
