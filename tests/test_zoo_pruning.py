"""Every pruning method on every fast zoo model: an exact mask, or a clear refusal before any work.

For each (model, method): either the method's mask keeps exactly ``round((1 - s) * N)`` of the ``N``
prunable weights (tied tensors counted once), masks only prunable tensors and covers every Linear/Conv/
fused-attention weight (checked against the modules themselves, not the prunable-set function), or
``prune`` raises a ValueError whose message is the one expected for that model (the table below is written
from what each model is, not from the checks in ``pruning/fit.py``). In both cases the user's model is
bit-for-bit unchanged (parameters, buffers, parametrizations and their class properties, hooks, ties,
train/eval mode, requires_grad, ``.grad``) and still gives the same output.
"""

from __future__ import annotations

import functools
import sys
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.nn.utils import parametrize

sys.path.insert(0, str(Path(__file__).parent))

import zoo  # noqa: E402

from prune_landscape.batching import call_model, select_output  # noqa: E402
from prune_landscape.layers import prunable_parameters, prunable_weights  # noqa: E402
from prune_landscape.pruning import magnitude_step, prune  # noqa: E402

SPARSITY = 0.8
METHODS = ("magnitude", "random", "snip", "grasp", "synflow", "ntk_sap")
# Small settings: the test checks mechanics and counts; the methods' numbers are tested elsewhere.
SETTINGS = {
    "synflow": {"iterations": 2},
    "ntk_sap": {"iterations": 1, "repeats": 1, "prune_samples": 2, "batch_size": 2},
}
ENTRIES = zoo.zoo(fast_only=True)
# The two large fast models (ResNet-18: 11 M weights) run magnitude and random only, to keep the test
# fast; benchmarks/bench_zoo.py runs every method on them.
HEAVY = {"tv_resnet18", "tv_squeezenet1_0"}

_TOKENS = r"cannot score this model: it feeds .* but the model takes integer inputs"
_NORMS = r"synflow cannot score this model: its \d+ normalisation layer\(s\)"
_TOKEN_MODELS = ("hf_gpt2_lm", "hf_gpt2_cls", "hf_bert_cls", "hf_llama_lm", "tied_lm", "gru_classifier", "embedding_bag")
_NORM_MODELS = (
    "tv_convnext_small", "tv_vit_tiny", "tv_swin_tiny", "timm_test_vit", "timm_test_convnext",
    "layernorm_mlp", "swiglu_mlp", "channels_last",
)
REFUSALS = {
    **{(name, method): _TOKENS for name in _TOKEN_MODELS for method in ("synflow", "ntk_sap")},
    **{(name, "synflow"): _NORMS for name in _NORM_MODELS},
}


@functools.lru_cache(maxsize=None)
def _example(name: str) -> tuple:
    entry = zoo.entry(name)
    model = entry.build()
    inputs = entry.example_input()
    with torch.no_grad():
        output = select_output(call_model(model, inputs), entry.output_transform)
    targets = torch.randint(0, output.shape[-1], output.shape[:-1], generator=torch.Generator().manual_seed(0))
    return inputs, targets


def _snapshot(model: nn.Module) -> dict:
    """Everything about the model a pruner must not change (tensors cloned bit for bit)."""
    parametrized = {n: m for n, m in model.named_modules() if parametrize.is_parametrized(m)}
    return {
        "state": {k: v.detach().clone() for k, v in model.state_dict(keep_vars=True).items()},
        "parameters": [
            (n, id(p), p.requires_grad, None if p.grad is None else p.grad.clone())
            for n, p in model.named_parameters(remove_duplicate=False)
        ],
        "classes": [(n, type(m)) for n, m in model.named_modules()],
        "training": [m.training for m in model.modules()],
        "hooks": [
            (n, tuple(m._forward_hooks), tuple(m._forward_pre_hooks), tuple(m._backward_hooks), tuple(m._state_dict_hooks))
            for n, m in model.named_modules()
        ],
        "parametrizations": {n: [(a, len(m.parametrizations[a])) for a in m.parametrizations] for n, m in parametrized.items()},
        "class_properties": {n: [hasattr(type(m), a) for a in m.parametrizations] for n, m in parametrized.items()},
    }


def _assert_unchanged(before: dict, model: nn.Module) -> None:
    after = _snapshot(model)
    assert before["state"].keys() == after["state"].keys()
    for key, value in before["state"].items():
        assert value.dtype == after["state"][key].dtype and torch.equal(value, after["state"][key]), key
    assert [p[:3] for p in before["parameters"]] == [p[:3] for p in after["parameters"]]
    for (name, *_, grad), (_, *_, grad_after) in zip(before["parameters"], after["parameters"]):
        assert (grad is None) == (grad_after is None) and (grad is None or torch.equal(grad, grad_after)), name
    for key in ("classes", "training", "hooks", "parametrizations", "class_properties"):
        assert before[key] == after[key], key


def _stored(module: nn.Module, attr: str) -> torch.Tensor:
    """The stored tensor behind ``module.<attr>`` (what a tie shares; a parametrization's original)."""
    if parametrize.is_parametrized(module, attr):
        plist = module.parametrizations[attr]
        return plist.original if hasattr(plist, "original") else plist.original0
    return getattr(module, attr)


def _weight_ids_of_layers(model: nn.Module) -> set[int]:
    """ids of the tensors the layers themselves hold: the independent view of what must be masked."""
    held = set()
    for module in model.modules():
        if isinstance(module, (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)) or type(module).__name__ == "Conv1D":
            held.add(id(_stored(module, "weight")))  # Conv1D: HuggingFace GPT-2's transposed linear
        elif isinstance(module, nn.MultiheadAttention):
            held.add(id(module.in_proj_weight))
    return held


def _check_mask(model: nn.Module, masks, method: str) -> None:
    names = prunable_parameters(model)
    assert set(masks) == set(names), method
    stored, total = [], 0
    for n in names:
        module_name, _, attr = n.rpartition(".")
        module = model.get_submodule(module_name)
        weight = getattr(module, attr)
        assert masks[n].shape == weight.shape and masks[n].dtype == torch.bool, (method, n)
        stored.append(id(_stored(module, attr)))
        total += weight.numel()
    assert len(set(stored)) == len(stored), "a tied tensor is listed twice"
    assert _weight_ids_of_layers(model) <= set(stored), "a Linear/Conv/attention weight is not masked"
    assert masks.num_total == total, method
    assert masks.num_kept == round((1 - SPARSITY) * total), method


@pytest.mark.parametrize("name", [e.name for e in ENTRIES])
def test_every_method_on_zoo_model_is_exact_or_refused(name):
    entry = zoo.entry(name)
    model = entry.build()
    inputs, targets = _example(name)
    with torch.no_grad():
        expected_output = entry.output(model, inputs).clone()
    train = len(name) % 2 == 1  # half of the models in train mode: the mode must survive too
    model.train(train)
    before = _snapshot(model)
    methods = ("magnitude", "random") if name in HEAVY else METHODS
    masks = None
    rng = torch.random.get_rng_state()
    for method in methods:
        data = (inputs, targets) if method in ("snip", "grasp") else None
        options = SETTINGS.get(method, {})
        if (name, method) in REFUSALS:
            with pytest.raises(ValueError, match=REFUSALS[(name, method)]):
                prune(model, method, SPARSITY, data, example_inputs=inputs, output_transform=entry.output_transform, **options)
        else:
            masks = prune(model, method, SPARSITY, data, example_inputs=inputs, output_transform=entry.output_transform,
                          seed=1, **options)
            _check_mask(model, masks, method)
        _assert_unchanged(before, model)
        assert torch.equal(torch.random.get_rng_state(), rng), f"{method} drew from the global RNG"
    # final_layer="dense" finds the head automatically (structure analysis through output_transform) and keeps
    # it whole, at a sparsity where it fits in the budget.
    total = masks.num_total
    head = model.get_submodule(entry.final_layer.rpartition(".")[0]).weight.numel()
    sparsity = min(SPARSITY, round(1 - 1.2 * head / total, 4))
    dense = prune(model, "random", sparsity, example_inputs=inputs, output_transform=entry.output_transform, final_layer="dense")
    head_name = {a: w.name for w in prunable_weights(model) for a in (w.name, *w.aliases)}[entry.final_layer]
    assert bool(dense[head_name].all()) and dense.num_kept == round((1 - sparsity) * total)
    _assert_unchanged(before, model)
    unexpected = {m for (n, m) in REFUSALS if n == name} - set(methods)
    assert not unexpected or name in HEAVY
    with torch.no_grad():
        assert torch.equal(entry.output(model.eval(), inputs), expected_output)  # still runs, same function


@pytest.mark.parametrize("name", [e.name for e in ENTRIES if e.tied])
def test_tied_weights_are_one_prunable_tensor_and_stay_tied(name):
    entry = zoo.entry(name)
    model = entry.build()
    inputs, targets = _example(name)
    masks = prune(model, "snip", SPARSITY, (inputs, targets), example_inputs=inputs, output_transform=entry.output_transform)
    for first, second in entry.tied:
        assert model.get_parameter(first) is model.get_parameter(second)
        assert (first in masks) != (second in masks)  # exactly one name carries the mask
    masks.apply_to(model)
    for first, second in entry.tied:
        assert torch.equal(model.get_submodule(first.rpartition(".")[0]).weight, model.get_submodule(second.rpartition(".")[0]).weight)


def test_final_layer_dense_on_a_tied_head_fits_or_names_what_fits():
    # tied_lm: lm_head.weight is tok.weight (40 x 16 = 640 weights) of N = 1664 prunable weights.
    entry = zoo.entry("tied_lm")
    model = entry.build()
    inputs, _ = _example("tied_lm")
    total = sum(model.get_parameter(n).numel() for n in prunable_parameters(model))
    assert total == 1664
    # s = 0.8 keeps round(0.2 * 1664) = 333 < 640: the largest floor is floor(333/640, 4 dp) = 0.5203, and
    # dense fits up to s = 1 - 639.5/1664 = 0.61568.., given as 0.6156.
    with pytest.raises(ValueError, match=r"lm_head.weight alone keeps 640 weights but the whole budget is 333 of 1,664 .*"
                       r"min_density=0.5203 .*at most 0.6156"):
        prune(model, "magnitude", 0.8, final_layer="dense", final_layer_name="tok.weight", example_inputs=inputs)
    floor = prune(model, "magnitude", 0.8, final_layer=0.5203, final_layer_name="lm_head.weight", example_inputs=inputs)
    assert floor.num_kept == 333 and int(floor["lm_head.weight"].sum()) == 333  # ceil(0.5203 * 640) = 333
    dense = prune(model, "random", 0.6156, final_layer="dense", final_layer_name="tok.weight", example_inputs=inputs)
    assert dense.num_kept == round((1 - 0.6156) * 1664) and bool(dense["lm_head.weight"].all())


def test_final_layer_dense_keeps_the_named_head_of_a_multi_head_model():
    entry = zoo.entry("multi_head")
    model = entry.build()
    inputs, targets = _example("multi_head")
    masks = prune(model, "snip", 0.5, (inputs, targets), final_layer="dense", final_layer_name="cls.weight",
                  example_inputs=inputs, output_transform=entry.output_transform)
    total = sum(m.numel() for m in masks.values())
    assert bool(masks["cls.weight"].all()) and masks.num_kept == round(0.5 * total)
    # The box head does not reach the chosen output: its SNIP sensitivity is exactly 0, so it is pruned first.
    assert int(masks["box.weight"].sum()) == 0


def test_old_style_weight_norm_and_spectral_norm_hooks_are_left_in_place():
    torch.manual_seed(0)
    with pytest.warns(FutureWarning):
        first = nn.utils.weight_norm(nn.Linear(6, 8))
    model = nn.Sequential(first, nn.ReLU(), nn.utils.spectral_norm(nn.Linear(8, 3))).eval()
    x = torch.randn(4, 6)
    expected = model(x).detach().clone()
    before = _snapshot(model)
    for method in METHODS:
        data = (x, torch.tensor([0, 1, 2, 0])) if method in ("snip", "grasp") else None
        masks = prune(model, method, 0.5, data, example_inputs=x, **SETTINGS.get(method, {}))
        names = prunable_parameters(model)
        assert "2.weight" in names and set(masks) == set(names), method
        total = sum(getattr(model.get_submodule(n.rpartition(".")[0]), "weight").numel() for n in names)
        assert masks.num_kept == round(0.5 * total), method
        _assert_unchanged(before, model)
    assert torch.equal(model(x), expected)


def test_dict_batches_from_a_loader_feed_keyword_inputs_and_labels():
    entry = zoo.entry("hf_bert_cls")
    model = entry.build()
    inputs, targets = _example("hf_bert_cls")
    rows = [{**{k: v[i] for k, v in inputs.items()}, "labels": targets[i]} for i in range(2)]
    loader = torch.utils.data.DataLoader(rows, batch_size=2)
    from_loader = prune(model, "snip", SPARSITY, loader, output_transform=entry.output_transform)
    from_pair = prune(model, "snip", SPARSITY, (inputs, targets), output_transform=entry.output_transform)
    assert from_loader == from_pair


def test_loss_methods_refuse_batches_without_targets_or_with_mismatched_ones():
    entry = zoo.entry("hf_gpt2_lm")
    model = entry.build()
    inputs, _ = _example("hf_gpt2_lm")  # logits (2, 8, 64)
    loader = torch.utils.data.DataLoader([{"input_ids": row} for row in inputs], batch_size=2)
    with pytest.raises(ValueError, match="snip scores by the gradient of a loss, but the batches carry no targets"):
        prune(model, "snip", SPARSITY, loader)
    with pytest.raises(ValueError, match=r"outputs \(2, 8, 64\) need targets of shape \(2, 8\), got \(2,\).*loss_fn="):
        prune(model, "grasp", SPARSITY, (inputs, torch.tensor([1, 2])))
    # A custom loss makes any target layout fine.
    masks = prune(model, "snip", SPARSITY, (inputs, torch.tensor([1, 2])),
                  loss_fn=lambda out, y: nn.functional.cross_entropy(out[:, -1], y))
    assert masks.num_kept == round((1 - SPARSITY) * masks.num_total)


@pytest.mark.parametrize("name", ["tied_lm", "gru_classifier", "embedding_bag", "lstm_classifier", "hf_gpt2_lm"])
def test_prunable_all_adds_embeddings_and_recurrent_weights(name):
    entry = zoo.entry(name)
    model = entry.build()
    inputs, targets = _example(name)
    before = _snapshot(model)
    extra = {
        id(module.weight) for module in model.modules() if isinstance(module, (nn.Embedding, nn.EmbeddingBag))
    } | {id(p) for module in model.modules() if isinstance(module, nn.RNNBase) for n, p in module.named_parameters() if n.startswith("weight_")}
    assert extra
    for method in ("magnitude", "snip", "grasp"):
        run = lambda: prune(model, method, SPARSITY, (inputs, targets), example_inputs=inputs,  # noqa: E731
                            output_transform=entry.output_transform, prunable="all")
        if method == "grasp" and name == "embedding_bag":
            with pytest.raises(ValueError, match=r"grasp cannot score this model with prunable='all'.*EmbeddingBag"):
                run()
            continue
        masks = run()
        held = {id(model.get_parameter(n)) for n in masks}
        assert extra <= held, method
        assert len(held) == len(masks)  # tied tensors once
        assert masks.num_kept == round((1 - SPARSITY) * masks.num_total) == round(
            (1 - SPARSITY) * sum(model.get_parameter(n).numel() for n in masks)
        )
        _assert_unchanged(before, model)


def test_magnitude_step_reads_a_tied_mask_under_either_name():
    model = zoo.entry("tied_lm").build()
    first = prune(model, "magnitude", 0.5)
    under_alias = {("tok.weight" if n == "lm_head.weight" else n): m for n, m in first.items()}
    second = magnitude_step(model, 0.7, under_alias)
    assert set(second) == set(first) and "tok.weight" not in second
    assert bool((second["lm_head.weight"] <= first["lm_head.weight"]).all())  # masks only shrink
    assert second.num_kept == round(0.3 * first.num_total)
