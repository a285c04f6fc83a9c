"""Structure analysis on the model zoo (issue #11), checked against an independent float64 oracle.

Per fast zoo model: a dense mask (connected, no dead or UNKNOWN unit, no collapsed layer, the right final
layer, final layer dense), a zeroed head row plus column and a random 90 % mask, each compared
unit by unit with tests/zoo_oracle.py; and the user's model left bit-for-bit unchanged.
"""

from __future__ import annotations

import pytest
import torch
from torch.nn.utils import parametrize

from prune_landscape import MaskSet, analyze_structure
from prune_landscape.layers import final_layer_name, prunable_weights

from zoo import call, zoo
from zoo_oracle import oracle_alive

FAST = zoo(fast_only=True)
IDS = [e.name for e in FAST]


def _random_masks(model, density: float, seed: int) -> MaskSet:
    generator = torch.Generator().manual_seed(seed)
    dense = MaskSet.dense(model)
    return MaskSet({n: torch.rand(m.shape, generator=generator) < density for n, m in dense.items()})


def _agree(entry, model, example, masks: MaskSet, structure) -> int:
    """Assert unit-by-unit agreement with the oracle; returns the number of UNKNOWN units skipped."""
    names = [layer.name for layer in structure.layers]
    expected = oracle_alive(model, example, dict(masks), names, structure.final_layer)
    assert set(expected) == set(names), f"{entry.name}: oracle observed {sorted(set(names) - set(expected))} differently"
    skipped = 0
    for layer in structure.layers:
        decided = torch.ones_like(layer.alive) if layer.unknown is None else ~layer.unknown
        skipped += int((~decided).sum())
        wrong = (layer.alive != expected[layer.name]) & decided
        assert not wrong.any(), (
            f"{entry.name} {layer.name}: analysis alive {int(layer.alive.sum())}/{layer.units}, oracle "
            f"{int(expected[layer.name].sum())}/{layer.units}; units differing: {wrong.nonzero().flatten()[:10].tolist()}"
        )
    return skipped


def _final_mask(model, structure, masks: MaskSet) -> tuple[str, torch.Tensor, int]:
    weight = next(w for w in prunable_weights(model) if w.name == structure.final_layer)
    return weight.name, masks[weight.name].clone(), weight.unit_axis


@pytest.mark.parametrize("entry", FAST, ids=IDS)
def test_zoo_structure_matches_the_oracle(entry):
    model = entry.build()
    example = entry.example_input()
    dense = MaskSet.dense(model)
    s = analyze_structure(model, example, dense, output_transform=entry.output_transform)
    assert s.final_layer == entry.final_layer, f"{entry.name}: final layer {s.final_layer}, expected {entry.final_layer}"
    assert s.connected and s.final_layer_dense, f"{entry.name}: dense mask reported {s.table()}"
    assert s.total_dead_units == 0 and s.collapsed_layers == () and s.total_unknown_units == 0, s.table()
    assert s.last_hidden_width == s.last_hidden_units
    # The cheap forward-order pass pruning uses finds the same head as the full analysis.
    assert final_layer_name(model, example, output_transform=entry.output_transform) == s.final_layer, entry.name
    single = example[:1] if isinstance(example, torch.Tensor) and example.dim() >= 2 else example
    _agree(entry, model, single, dense, s)

    # Head row 0 and head column 0 zeroed together: output 0 loses every input, input feature 0 feeds
    # nothing, so the unit that produced it may die upstream (unless a norm or a residual carries it on).
    name, head, axis = _final_mask(model, s, dense)
    cut = head.clone()
    cut.select(axis, 0).fill_(False)
    cut.select(1 - axis, 0).fill_(False)
    masks = MaskSet({**dense.to_dict(), name: cut})
    s_cut = analyze_structure(model, example, masks, output_transform=entry.output_transform)
    assert s_cut.fan_in[0] == 0 and s_cut.dead_units[name] == 1 and not s_cut.final_layer_dense, s_cut.table()
    assert s_cut.last_hidden_width == s_cut.last_hidden_units - 1, s_cut.table()
    assert set(s_cut.fan_in[1:]) == {s_cut.last_hidden_units - 1}, s_cut.table()
    _agree(entry, model, single, masks, s_cut)

    masks = _random_masks(model, 0.1, seed=7)
    s_rand = analyze_structure(model, example, masks, output_transform=entry.output_transform)
    _agree(entry, model, single, masks, s_rand)


def _snapshot(model):
    return {
        "state": {k: v.detach().clone() for k, v in model.state_dict(keep_vars=True).items()},
        "ids": {n: id(p) for n, p in model.named_parameters(remove_duplicate=False)},
        "classes": {n: type(m) for n, m in model.named_modules()},
        "parametrized": {n: tuple(m.parametrizations) for n, m in model.named_modules() if parametrize.is_parametrized(m)},
        "hooks": {n: (len(m._forward_hooks), len(m._forward_pre_hooks), len(m._backward_hooks)) for n, m in model.named_modules()},
        "training": {n: m.training for n, m in model.named_modules()},
        "grads": {n: p.grad for n, p in model.named_parameters()},
        "requires_grad": {n: p.requires_grad for n, p in model.named_parameters()},
    }


@pytest.mark.parametrize("entry", FAST, ids=IDS)
def test_zoo_model_is_left_unchanged_and_still_runs(entry):
    model = entry.build().train()  # train mode: spectral_norm would run power iterations, BN update stats
    example = entry.example_input()
    before = _snapshot(model)
    analyze_structure(model, example, output_transform=entry.output_transform)  # reads the model's own masks
    final_layer_name(model, example, output_transform=entry.output_transform)
    after = _snapshot(model)
    for key in ("ids", "classes", "parametrized", "hooks", "training", "grads", "requires_grad"):
        assert before[key] == after[key], f"{entry.name}: {key} changed"
    assert before["state"].keys() == after["state"].keys()
    for key, value in before["state"].items():
        assert value.dtype == after["state"][key].dtype and torch.equal(value, after["state"][key]), f"{entry.name}: {key} changed"
    for first, second in entry.tied:
        params = dict(model.named_parameters(remove_duplicate=False))
        assert params[first] is params[second], f"{entry.name}: tie {first} / {second} broken"
    reference = entry.build()
    with torch.no_grad():
        assert torch.equal(entry.output(model.eval(), example), entry.output(reference, example))
    assert call is not None


@pytest.mark.parametrize("entry", FAST, ids=IDS)
def test_zoo_final_layer_pass_follows_pruning_hooks(entry):
    # torch.nn.utils.prune makes a new weight tensor at every call (parametrizations at every access): the
    # cheap pass must follow it, and agree with the analysis reading the same hooked model.
    model, example = entry.build(), entry.example_input()
    _random_masks(model, 0.1, seed=3).apply_to(model)
    cheap = final_layer_name(model, example, output_transform=entry.output_transform)
    assert cheap == entry.final_layer, f"{entry.name}: {cheap}, expected {entry.final_layer}"
    if entry.name in ("mlp", "tied_lm", "parametrized", "mha_classifier", "hf_gpt2_lm"):
        s = analyze_structure(model, example, output_transform=entry.output_transform)
        assert s.final_layer == cheap, f"{entry.name}: analysis {s.final_layer}, cheap pass {cheap}"


@pytest.mark.parametrize("name", ["cnn_maxpool", "tv_vit_tiny", "tv_efficientnet_small", "hf_gpt2_lm", "hf_llama_lm",
                                  "swiglu_mlp", "gru_classifier", "parametrized"])
def test_float32_model_values_agree_with_float64_random_values(name):
    # Large models run in float32 on their own weights (zeros replaced) instead of fresh float64 draws;
    # both are generic points, so every unit must get the same verdict.
    entry = next(e for e in FAST if e.name == name)
    model, example = entry.build(), entry.example_input()
    masks = _random_masks(model, 0.1, seed=11)
    wide = analyze_structure(model, example, masks, output_transform=entry.output_transform, precision="float64")
    narrow = analyze_structure(model, example, masks, output_transform=entry.output_transform, precision="float32")
    assert (wide.precision, narrow.precision) == ("float64", "float32")
    for a, b in zip(wide.layers, narrow.layers):
        decided = torch.ones_like(a.alive) if b.unknown is None else ~b.unknown
        assert torch.equal(a.alive[decided], b.alive[decided]), f"{name} {a.name}: {a.alive_units} vs {b.alive_units}"
    assert wide.fan_in == narrow.fan_in and wide.final_layer == narrow.final_layer
    # The float32 path reads the model's own tensors (no copy when no mask applies): still never written.
    before = {k: v.detach().clone() for k, v in model.state_dict().items()}
    analyze_structure(model, example, output_transform=entry.output_transform, precision="float32")
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items()), f"{name}: weights changed"
