"""prune(): shared invariants for every method, existing masks, registry, and errors before any work."""

import pytest
import torch
from torch import nn

from prune_landscape import MaskSet, models
from prune_landscape.pruning import (
    available_methods,
    magnitude_step,
    ntk_sap_scores,
    prune,
    register_pruner,
    synflow_scores,
)
from prune_landscape.pruning.reinit import fixed_parameters

METHODS = ["magnitude", "random", "snip", "grasp", "synflow", "ntk_sap"]
FAST = {"ntk_sap": {"iterations": 3, "repeats": 2, "batch_size": 16}, "synflow": {"iterations": 5}}


def _net():
    torch.manual_seed(0)
    return models.mlp([6, 8, 8, 4])


def _data(n=40):
    g = torch.Generator().manual_seed(1)
    return torch.randn(n, 6, generator=g), torch.randint(0, 4, (n,), generator=g)


def _snapshot(model):
    return {
        "state": {k: v.clone() for k, v in model.state_dict().items()},
        "training": [m.training for m in model.modules()],
        "grads": [p.grad for p in model.parameters()],
        "hooks": [len(m._forward_pre_hooks) + len(m._forward_hooks) + len(m._backward_hooks) for m in model.modules()],
        "rng": torch.get_rng_state(),
    }


def _assert_unchanged(model, before):
    after = _snapshot(model)
    assert before["state"].keys() == after["state"].keys()
    for key, value in before["state"].items():
        assert torch.equal(value, after["state"][key]), key  # bitwise
    assert before["training"] == after["training"] and after["grads"] == [None] * len(after["grads"])
    assert before["hooks"] == after["hooks"] and torch.equal(before["rng"], after["rng"])


@pytest.mark.parametrize("method", METHODS)
def test_invariants_for_every_method(method):
    net = _net().train()
    before = _snapshot(net)
    options = FAST.get(method, {})
    masks = prune(net, method, 0.75, _data(), seed=3, **options)
    _assert_unchanged(net, before)
    assert set(masks) == {"fc1.weight", "fc2.weight", "fc3.weight"}
    assert masks.num_total == 144 and masks.num_kept == round(0.25 * 144)
    assert prune(net, method, 0.75, _data(), seed=3, **options) == masks  # same seed, same mask
    # Final layer kept dense: fc3 whole, the global count still exact.
    dense = prune(net, method, 0.75, _data(), seed=3, final_layer="dense", **options)
    assert dense["fc3.weight"].all() and dense.num_kept == 36
    # An existing mask is respected: pruned entries stay pruned, the sparsity is the total target.
    masked = _net()
    masks.apply_to(masked)
    deeper = prune(masked, method, 0.9, _data(), seed=4, **options)
    assert deeper.num_kept == round(0.1 * 144)
    assert all(not (deeper[n] & ~masks[n]).any() for n in masks)


def test_different_seeds_give_different_ntk_sap_masks():
    net = _net()
    options = {"iterations": 2, "repeats": 1, "input_shape": (6,)}
    first = prune(net, "ntk_sap", 0.8, seed=0, **options)
    assert prune(net, "ntk_sap", 0.8, seed=0, **options) == first
    second = prune(net, "ntk_sap", 0.8, seed=1, **options)
    assert second != first and second.num_kept == first.num_kept == round(0.2 * 144)


@pytest.mark.parametrize("scorer,data_use,options", [(ntk_sap_scores, "shapes", {"repeats": 1}), (synflow_scores, "sample_shape", {})])
def test_pruned_entries_stay_pruned_across_iterations(scorer, data_use, options):
    seen = []

    def spy(model, masks, data, generator, **kwargs):
        seen.append({n: m.clone().cpu() for n, m in masks.items()})
        return scorer(model, masks, data, generator, **kwargs)

    register_pruner("spy", lambda m, k, d, g, repeats=1: spy(m, k, d, g, **({"repeats": repeats} if options else {})), data=data_use, overwrite=True)
    final = prune(_net(), "spy", 0.9, _data(), iterations=5)
    seen.append(final.to_dict())
    counts = [sum(int(m.sum()) for m in step.values()) for step in seen]
    assert counts == [144] + [144 - int((1 - 0.1 ** (t / 5)) * 144) for t in range(1, 5)] + [round(0.1 * 144)]
    for earlier, later in zip(seen, seen[1:]):
        assert all(not (later[n] & ~earlier[n]).any() for n in earlier)


def test_magnitude_step_prunes_further_and_matches_prune():
    net = _net()
    first = magnitude_step(net, 0.2)
    assert first == prune(net, "magnitude", 0.2)
    second = magnitude_step(net, 0.5, first, final_layer="dense")
    # "dense" keeps whatever the final layer still has; the rest of the budget comes from fc1 and fc2.
    assert second.num_kept == 72 and torch.equal(second["fc3.weight"], first["fc3.weight"])
    assert all(not (second[n] & ~first[n]).any() for n in first)
    with pytest.raises(ValueError, match="masks only shrink"):
        magnitude_step(net, 0.1, second)


def test_layerwise_and_erk_scopes_through_prune():
    net = _net()
    layerwise = prune(net, "magnitude", 0.5, scope="layerwise")
    assert [int(m.sum()) for m in layerwise.values()] == [24, 32, 16]
    erk = prune(net, "magnitude", 0.5, scope="erk")
    assert erk.num_kept == 72


def test_register_pruner_and_its_options():
    def negative_magnitude(model, masks, data, generator, *, power=1.0):
        return {n: -model.get_parameter(n).detach().abs() ** power for n in masks}

    register_pruner("smallest", negative_magnitude, overwrite=True)
    assert "smallest" in available_methods() and set(METHODS) <= set(available_methods())
    net = _net()
    masks = prune(net, "smallest", 0.5, power=2.0)
    kept = torch.cat([net.get_parameter(n).detach().abs()[m] for n, m in masks.items()])
    pruned = torch.cat([net.get_parameter(n).detach().abs()[~m] for n, m in masks.items()])
    assert kept.max() <= pruned.min()
    with pytest.raises(ValueError, match="already registered"):
        register_pruner("smallest", negative_magnitude)
    with pytest.raises(ValueError, match=r"\(model, masks, data, generator, \*\*options\)"):
        register_pruner("bad", lambda model: {}, overwrite=True)


class _Calls:
    count = 0


def _counting(model, masks, data, generator):
    _Calls.count += 1
    return {n: torch.ones(m.shape) for n, m in masks.items()}


class _NoReset(nn.Module):
    def __init__(self):
        super().__init__()
        self.scale = nn.Parameter(torch.ones(4))
        self.fc = nn.Linear(4, 2)

    def forward(self, x):
        return self.fc(x * self.scale)


@pytest.mark.parametrize(
    "args,kwargs,message",
    [
        (("counting_values", 1.0), {}, r"sparsity must be in \[0, 1\), got 1.0"),
        (("counting_values", -0.1), {}, r"sparsity must be in \[0, 1\), got -0.1"),
        (("no_such_method", 0.5), {}, r"unknown pruning method 'no_such_method'; expected one of \[.*'ntk_sap'"),
        (("counting_values", 0.5), {}, "needs data"),
        (("counting_values", 0.5, "data"), {"eps": 0.1}, r"unknown option\(s\) \['eps'\].*valid options: \['batch_size'"),
        (("counting_values", 0.5, "data"), {"final_layer": "sparse"}, "final_layer must be"),
        (("counting_values", 0.5, "data"), {"scope": "local-ish"}, "scope must be one of"),
        (("counting_values", 0.99, "data"), {"final_layer": "dense"}, r"fc3.weight alone keeps 32 weights but the whole budget is 1 of \d+ .*largest final-layer floor that fits is min_density=0.03"),
    ],
)
def test_bad_input_raises_before_any_work(args, kwargs, message):
    register_pruner("counting_values", _counting, data="values", overwrite=True)
    method, sparsity, *rest = args
    data = _data() if rest else None
    _Calls.count = 0
    with pytest.raises(ValueError, match=message):
        prune(_net(), method, sparsity, data, **kwargs)
    assert _Calls.count == 0


def test_data_dependent_methods_need_data_or_shape():
    for method in ("snip", "grasp"):
        with pytest.raises(ValueError, match=f"pruning method '{method}' needs data"):
            prune(_net(), method, 0.5)
    with pytest.raises(ValueError, match=r"needs the batch shape: pass data=..., example_inputs=... or input_shape="):
        prune(models.resnet20(), "ntk_sap", 0.5)
    with pytest.raises(ValueError, match="needs the input shape"):
        prune(models.resnet20(), "synflow", 0.5)
    with pytest.raises(ValueError, match=r"unknown option\(s\) \['temperature'\] for method 'ntk_sap'"):
        prune(models.resnet20(), "ntk_sap", 0.5, input_shape=(3, 32, 32), temperature=1.0)


class _FusedNoReset(nn.Module):
    """Owns a prunable Linear whose reset_parameters() is hidden: no rule can re-draw it."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 2)
        self.fc.reset_parameters = None  # an attribute that is not callable

    def forward(self, x):
        return self.fc(x)


def test_ntk_sap_needs_a_way_to_reinitialise():
    with pytest.raises(ValueError, match=r"own prunable weights without reset_parameters\(\): \['fc'\].*Pass init_fn="):
        prune(_FusedNoReset(), "ntk_sap", 0.5, input_shape=(4,))
    # A non-prunable parameter without a reset rule keeps its value; the prunable ones are re-drawn.
    assert fixed_parameters(_NoReset()) == ["scale"]
    assert prune(_NoReset(), "ntk_sap", 0.5, input_shape=(4,), iterations=2, repeats=1).num_kept == 4

    def init_fn(model, generator):
        with torch.no_grad():
            for p in model.parameters():
                p.copy_(torch.randn(p.shape, generator=generator))

    masks = prune(_NoReset(), "ntk_sap", 0.5, input_shape=(4,), init_fn=init_fn, iterations=2, repeats=1)
    assert masks.num_kept == 4


def test_existing_mask_denser_target_is_refused():
    net = _net()
    prune(net, "magnitude", 0.5).apply_to(net)
    assert MaskSet.from_module(net).num_kept == 72
    with pytest.raises(ValueError, match="masks only shrink"):
        prune(net, "magnitude", 0.3)
