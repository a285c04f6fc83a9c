"""prune() as options -> prune set -> schedule: options parsed once, the old keyword deprecated, typed method
options, the shared argument checks, and the one re-draw function the built-in models use."""

from __future__ import annotations

import dataclasses
import math
import warnings

import pytest
import torch
from torch import nn

from prune_landscape import checks, models
from prune_landscape.pruning import (
    FinalLayerPolicy,
    NtkSapOptions,
    Scope,
    allocate,
    magnitude_step,
    ntk_sap_scores,
    prune,
    register_pruner,
)
from prune_landscape.pruning import allocation, state
from prune_landscape.pruning.allocation import AllocationRule, apply_rule, masks_at_sparsity
from prune_landscape.pruning.options import COMMON_OPTIONS, parse_options
from prune_landscape.pruning.reinit import reset_every_module
from prune_landscape.pruning.api import kept_counts
from prune_landscape.pruning.state import MasksInForce
from prune_landscape.pruning.workspace import working_copy


def _net() -> nn.Module:
    torch.manual_seed(0)
    return models.mlp([6, 8, 8, 4])  # 48 + 64 + 32 = 144 prunable weights


# ------------------------------------------------------------------------------------------ checks
@pytest.mark.parametrize(
    "call,message",
    [
        (lambda: checks.check_sparsity(1.0), "sparsity must be in [0, 1), got 1.0"),
        (lambda: checks.check_sparsity("0.5"), "sparsity must be a number in [0, 1), got '0.5'"),
        (lambda: checks.check_sparsity(float("nan")), "sparsity must be a number in [0, 1), got nan"),
        (lambda: checks.check_fraction("rate", True), "rate must be a number in [0, 1), got True"),
        (lambda: checks.check_positive_int("repeats", 0), "repeats must be a positive integer, got 0"),
        (lambda: checks.check_positive_int("repeats", 2.0), "repeats must be a positive integer, got 2.0"),
        (lambda: checks.check_positive_int("n", "x", optional=True), "n must be a positive integer or None, got 'x'"),
        (lambda: checks.check_int("seed", 1.5), "seed must be an integer, got 1.5"),
        (lambda: checks.check_probability("p", 1.01), "p must be a number in [0, 1], got 1.01"),
        (lambda: checks.check_positive_number("eps", 0), "eps must be a finite number > 0, got 0"),
        (lambda: checks.check_positive_number("eps", math.inf), "eps must be a finite number > 0, got inf"),
        (lambda: checks.check_nonnegative_number("ridge", -1e-3), "ridge must be a finite number >= 0, got -0.001"),
        (lambda: checks.check_bool("double", 1), "double must be True or False, got 1"),
        (lambda: checks.check_one_of("batchnorm", "train", ("batch", "eval")),
         "batchnorm must be one of ['batch', 'eval'], got 'train'"),
        (lambda: checks.check_callable("init_fn", 3, "a callable init_fn(model, generator)", optional=True),
         "init_fn must be a callable init_fn(model, generator) or None, got int"),
    ],
)
def test_every_check_reads_name_must_be_what_got_value(call, message):
    with pytest.raises(ValueError) as caught:
        call()
    assert str(caught.value) == message


def test_checks_return_normalised_values():
    assert checks.check_sparsity(0) == 0.0 and isinstance(checks.check_sparsity(0), float)
    assert checks.check_probability("p", 1) == 1.0
    assert checks.check_positive_int("n", None, optional=True) is None
    assert checks.check_one_of("scope", "erk", ["global", "erk"]) == "erk"


# ------------------------------------------------------------------------------------------ parsed once
def test_unknown_option_names_the_method_the_valid_and_the_common_options():
    with pytest.raises(ValueError) as caught:
        prune(_net(), "magnitude", 0.5, repeats=3)
    text = str(caught.value)
    assert "unknown option(s) ['repeats'] for method 'magnitude'; valid options: ['iterations']" in text
    assert all(name in text for name in COMMON_OPTIONS)


def test_old_final_layer_keyword_warns_naming_the_new_one_and_gives_the_same_mask():
    net = _net()
    new = prune(net, "magnitude", 0.75, final_layer_policy="dense")
    with pytest.warns(DeprecationWarning, match=r"final_layer= is deprecated; use final_layer_policy=") as caught:
        old = prune(net, "magnitude", 0.75, final_layer="dense")
    assert old == new and new["fc3.weight"].all()
    assert caught[0].filename == __file__  # the warning points at the caller's line
    with pytest.warns(DeprecationWarning, match="use final_layer_policy="):
        step = magnitude_step(net, 0.75, final_layer="dense")
    assert step == new
    with pytest.raises(ValueError, match=r"give final_layer_policy= only .*got both"):
        prune(net, "magnitude", 0.75, final_layer_policy="dense", final_layer="dense")


def test_errors_name_the_keyword_the_user_wrote():
    with pytest.raises(ValueError, match="^final_layer_policy must be 'prune', 'dense'"):
        prune(_net(), "magnitude", 0.5, final_layer_policy="sparse")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        with pytest.raises(ValueError, match="^final_layer must be 'prune', 'dense'"):
            prune(_net(), "magnitude", 0.5, final_layer="sparse")


def test_policy_scope_budget_and_final_layer_are_each_worked_out_once_per_call(monkeypatch):
    """Three SynFlow rounds with a dense head: one parse of each, one budget check, one final-layer pass."""
    counts = {"policy": 0, "scope": 0, "budget": 0, "final_layer": 0}

    def counting(key, function):
        def wrapped(*args, **kwargs):
            counts[key] += 1
            return function(*args, **kwargs)
        return wrapped

    monkeypatch.setattr(FinalLayerPolicy, "parse", staticmethod(counting("policy", FinalLayerPolicy.parse)))
    monkeypatch.setattr(Scope, "parse", staticmethod(counting("scope", Scope.parse)))
    monkeypatch.setattr(allocation, "check_final_layer_budget", counting("budget", allocation.check_final_layer_budget))
    monkeypatch.setattr(state, "_find_final_layer", counting("final_layer", state._find_final_layer))
    masks = prune(_net(), "synflow", 0.7, final_layer_policy="dense", iterations=3)
    assert counts == {"policy": 1, "scope": 1, "budget": 1, "final_layer": 1}
    assert masks.num_kept == round(0.3 * 144) and masks["fc3.weight"].all()


def test_parse_options_gives_one_typed_frozen_value():
    net = _net()
    options = parse_options(net, "ntk_sap", 0.8, None, {"input_shape": [6], "repeats": 2, "batch_size": 4})
    assert options.prune_set.input_shape == (6,) and options.prune_set.batch_size == 4
    assert options.scorer_options == NtkSapOptions(batch_size=4, repeats=2)  # prune()'s batch_size reaches the scorer
    assert options.schedule.iterations == 20 and options.schedule.progress is False
    with pytest.raises(dataclasses.FrozenInstanceError):
        options.sparsity = 0.5  # type: ignore[misc]


# ------------------------------------------------------------------------------------------ typed method options
def test_ntk_sap_options_value_or_keywords_give_the_same_scores():
    net = working_copy(models.mlp([4, 3, 2]))
    masks = {n: torch.ones_like(p, dtype=torch.bool) for n, p in net.named_parameters() if p.dim() > 1}
    data = (torch.zeros(6, 4), torch.zeros(6))
    by_value = ntk_sap_scores(net, masks, data, torch.Generator().manual_seed(2), NtkSapOptions(repeats=2, batch_size=3))
    by_keywords = ntk_sap_scores(working_copy(models.mlp([4, 3, 2])), masks, data, torch.Generator().manual_seed(2),
                                 repeats=2, batch_size=3)
    assert all(torch.equal(by_value[n], by_keywords[n]) for n in masks)


@pytest.mark.parametrize(
    "options,message",
    [
        ({"repeats": 0}, "repeats must be a positive integer, got 0"),
        ({"eps": -1.0}, "eps must be a finite number > 0, got -1.0"),
        ({"batchnorm": "train"}, "batchnorm must be one of ['batch', 'eval'], got 'train'"),
        ({"double": "yes"}, "double must be True or False, got 'yes'"),
    ],
)
def test_bad_ntk_sap_options_raise_before_any_work(options, message):
    with pytest.raises(ValueError) as caught:
        prune(_net(), "ntk_sap", 0.5, input_shape=(6,), **options)
    assert str(caught.value) == message


@dataclasses.dataclass(frozen=True)
class _PowerOptions:
    power: float = 1.0

    def __post_init__(self):
        checks.check_positive_number("power", self.power)


def _power_magnitude(model, masks, data, generator, options):
    assert isinstance(options, _PowerOptions)  # one typed value, not keywords
    return {n: model.get_parameter(n).detach().abs() ** options.power for n in masks}


def test_a_scorer_with_an_options_dataclass_gets_one_checked_instance():
    register_pruner("power_magnitude", _power_magnitude, options_type=_PowerOptions, overwrite=True)
    net = _net()
    assert prune(net, "power_magnitude", 0.5, power=3.0) == prune(net, "magnitude", 0.5)  # |w|^3 ranks as |w|
    with pytest.raises(ValueError, match="power must be a finite number > 0, got 0"):
        prune(net, "power_magnitude", 0.5, power=0)
    with pytest.raises(ValueError, match=r"unknown option\(s\) \['exponent'\] for method 'power_magnitude'"):
        prune(net, "power_magnitude", 0.5, exponent=2)


# ------------------------------------------------------------------------------------------ allocation pieces
def test_masks_at_sparsity_matches_a_hand_worked_budget():
    scores = {"a": torch.tensor([4.0, 3.0, 2.0, 1.0]), "head": torch.tensor([0.5, 5.0, 0.1, 0.2])}
    # 8 weights at sparsity 0.5: 4 kept. Global: the four largest scores 5, 4, 3, 2.
    plain = masks_at_sparsity(scores, 0.5)
    assert plain["a"].tolist() == [True, True, True, False] and plain["head"].tolist() == [False, True, False, False]
    # Dense head: all 4 head weights, nothing left for "a".
    dense = masks_at_sparsity(scores, 0.5, final_layer="head", policy="dense")
    assert not dense["a"].any() and dense["head"].all()
    # Floor 0.5: the head keeps its best 2 (5.0, 0.5), "a" the best 2 of the rest (4, 3).
    floored = masks_at_sparsity(scores, 0.5, final_layer="head", policy=0.5)
    assert floored["a"].tolist() == [True, True, False, False] and floored["head"].tolist() == [True, True, False, False]


def test_one_rule_applied_round_by_round_matches_allocate_each_time():
    torch.manual_seed(3)
    scores = {"a": torch.rand(10), "b": torch.rand(6)}
    current = {n: torch.ones(s.shape, dtype=torch.bool) for n, s in scores.items()}
    rule = allocation.allocation_rule(current, 5, scope=Scope.ERK, final_layer="b", policy=FinalLayerPolicy.parse(0.5))
    assert rule == AllocationRule(Scope.ERK, FinalLayerPolicy.parse(0.5), "b", 3)
    for keep in (12, 8, 5):
        expected = allocate(scores, current, keep, scope="erk", final_layer="b", policy=0.5)
        current = apply_rule(rule, scores, current, keep)
        assert all(torch.equal(current[n], expected[n]) for n in scores)
        assert sum(int(m.sum()) for m in current.values()) == keep and int(current["b"].sum()) >= 3


def test_kept_counts_follow_d_to_the_t_over_t_and_end_exactly():
    start = MasksInForce.of({"w": torch.ones(144, dtype=torch.bool)})
    counts = kept_counts(start, 0.9, 14, 5)
    assert counts == [144 - int((1 - 0.1 ** (t / 5)) * 144) for t in range(1, 5)] + [14]


# ------------------------------------------------------------------------------------------ one re-draw function
def test_builtin_models_redraw_through_reset_parameters_seeded_by_the_generator():
    """Oracle written out by hand: a seed drawn from the generator seeds the global RNG, then each Linear's
    reset_parameters() in registration order."""
    net = models.mlp([5, 4, 3])
    net.init_weights(torch.Generator().manual_seed(9))
    oracle = models.mlp([5, 4, 3])
    seed = int(torch.randint(0, 2**62, (1,), generator=torch.Generator().manual_seed(9)))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        oracle.fc1.reset_parameters()
        oracle.fc2.reset_parameters()
    assert all(torch.equal(a, b) for a, b in zip(net.state_dict().values(), oracle.state_dict().values()))
    again = models.mlp([5, 4, 3])
    reset_every_module(again, torch.Generator().manual_seed(9))
    assert all(torch.equal(a, b) for a, b in zip(net.state_dict().values(), again.state_dict().values()))
