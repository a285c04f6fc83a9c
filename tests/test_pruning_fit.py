"""Method fit, re-initialisation for any model, the prune-set size option and the twice-differentiable GraSP."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from prune_landscape.pruning import check_fit, get_pruner, prune, redraw_initial_weights, register_pruner
from prune_landscape.pruning.api import NTK_SAP_MAX_DEFAULT_SAMPLES
from prune_landscape.pruning.grasp import grasp_scores
from prune_landscape.pruning.reinit import fixed_parameters
from prune_landscape.pruning.workspace import classification_loss, working_copy


class _Attention(nn.Module):
    def __init__(self):
        super().__init__()
        self.inp = nn.Linear(4, 8)
        self.attn = nn.MultiheadAttention(8, 2, batch_first=True)
        self.cls = nn.Parameter(torch.full((1, 1, 8), 0.5))  # no rule re-draws it: kept as it is
        self.head = nn.Linear(8, 3)

    def forward(self, x):
        h = torch.cat([self.cls.expand(x.shape[0], 1, 8), self.inp(x)], dim=1)
        return self.head(self.attn(h, h, h, need_weights=False)[0][:, 0])


def test_redraw_initial_weights_uses_each_modules_reset_and_the_seed_alone():
    net = _Attention()
    rng_before = torch.random.get_rng_state()
    redraw_initial_weights(net, seed=3)
    assert torch.equal(torch.random.get_rng_state(), rng_before)  # the caller's global RNG is untouched
    first = {k: v.clone() for k, v in net.state_dict().items()}
    redraw_initial_weights(net, seed=3)
    assert all(torch.equal(first[k], v) for k, v in net.state_dict().items())
    redraw_initial_weights(net, seed=4)
    assert not torch.equal(first["attn.in_proj_weight"], net.attn.in_proj_weight)  # the fused projection
    # Children before parents, as at construction: MHA's own _reset_parameters zeroes out_proj.bias last.
    assert torch.count_nonzero(net.attn.out_proj.bias) == 0 and torch.count_nonzero(net.attn.in_proj_bias) == 0
    assert torch.equal(net.cls, torch.full((1, 1, 8), 0.5)) and fixed_parameters(net) == ["cls"]
    with pytest.raises(ValueError, match="seed must be an integer or a torch.Generator, got 'a'"):
        redraw_initial_weights(net, seed="a")


def test_init_weights_without_a_generator_parameter_is_not_the_contract():
    class TimmLike(nn.Module):  # timm's init_weights(mode='') and HF's init_weights() take no generator
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(3, 2)

        def init_weights(self, mode=""):
            raise AssertionError("must not be called")

        def forward(self, x):
            return self.fc(x)

    masks = prune(TimmLike(), "ntk_sap", 0.5, input_shape=(3,), iterations=1, repeats=1, prune_samples=2)
    assert masks.num_kept == 3


def test_ntk_sap_prune_set_defaults_to_ten_per_class_capped_for_large_heads():
    seen = []

    def shapes_only(model, masks, data, generator, *, batch_size=256):
        seen.append(tuple(data[0].shape))
        return {n: torch.rand(m.shape, generator=generator) for n, m in masks.items()}

    register_pruner("record_shapes", shapes_only, data="shapes", overwrite=True)
    prune(nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 7)), "record_shapes", 0.5, input_shape=(4,))
    prune(nn.Sequential(nn.Linear(4, 2000)), "record_shapes", 0.5, input_shape=(4,))
    prune(nn.Sequential(nn.Linear(4, 2000)), "record_shapes", 0.5, input_shape=(4,), prune_samples=3)
    assert seen == [(70, 4), (NTK_SAP_MAX_DEFAULT_SAMPLES, 4), (3, 4)] and NTK_SAP_MAX_DEFAULT_SAMPLES == 1024


def test_grasp_through_hardsigmoid_equals_grasp_through_its_definition():
    class Gate(nn.Module):
        def __init__(self, gate):
            super().__init__()
            self.a, self.b, self.head, self.gate = nn.Linear(5, 6), nn.Linear(5, 6), nn.Linear(6, 3), gate

        def forward(self, x):
            return self.head(torch.relu(self.a(x)) * self.gate(self.b(x)))

    class Definition(nn.Module):
        def forward(self, x):
            return nn.functional.relu6(x + 3) / 6

    torch.manual_seed(0)
    net = Gate(nn.Hardsigmoid()).double()
    twin = Gate(Definition()).double()
    twin.load_state_dict(net.state_dict())
    x, y = torch.randn(8, 5, dtype=torch.float64) * 3, torch.randint(0, 3, (8,))
    masks = {n: torch.ones_like(p, dtype=torch.bool) for n, p in net.named_parameters() if n.endswith("weight")}
    scores = grasp_scores(working_copy(net), masks, (x, y), None, temperature=1.0)
    reference = grasp_scores(working_copy(twin), masks, (x, y), None, temperature=1.0)
    for name in masks:
        torch.testing.assert_close(scores[name], reference[name], rtol=1e-12, atol=1e-15)
        assert scores[name].abs().sum() > 0


def test_classification_loss_is_token_level_cross_entropy_ignoring_minus_100():
    logits = torch.randn(2, 3, 5, dtype=torch.float64)
    targets = torch.tensor([[1, 4, -100], [0, 2, 3]])
    manual = -torch.stack([logits[i, t].log_softmax(-1)[targets[i, t]] for i in range(2) for t in range(3) if targets[i, t] >= 0]).mean()
    torch.testing.assert_close(classification_loss(logits, targets), manual)
    torch.testing.assert_close(classification_loss(logits[:, 0], targets[:, 1]), nn.functional.cross_entropy(logits[:, 0], targets[:, 1]))


def test_fit_rules_name_reason_and_fix():
    norm_net = nn.Sequential(nn.Linear(4, 8), nn.GroupNorm(2, 8), nn.Linear(8, 2))
    with pytest.raises(ValueError, match=r"synflow cannot score this model: its 1 normalisation layer\(s\) \['1'\].*Use 'ntk_sap'"):
        check_fit(norm_net, get_pruner("synflow"), example_inputs=torch.ones(1, 4))
    check_fit(norm_net, get_pruner("ntk_sap"), example_inputs=torch.ones(1, 4))  # fine: noise through GroupNorm

    class LlamaRMSNorm(nn.Module):  # recognised by its class name
        def forward(self, x):
            return x

    with pytest.raises(ValueError, match=r"normalisation layer\(s\) \['norm'\]"):
        check_fit(_with_norm(LlamaRMSNorm()), get_pruner("synflow"), example_inputs=torch.ones(1, 2))
    embedded = nn.Sequential(nn.Embedding(10, 4), nn.Linear(4, 2))
    with pytest.raises(ValueError, match=r"embedding layers \['0'\] that take token ids.*example_inputs="):
        prune(embedded, "synflow", 0.5, input_shape=(3,))
    with pytest.raises(ValueError, match=r"integer inputs \(\(2, 3\) int64; token ids\?\)"):
        prune(embedded, "ntk_sap", 0.5, example_inputs=torch.zeros(2, 3, dtype=torch.long))
    with pytest.raises(ValueError, match="the model does not (run on the example|accept these) inputs"):
        prune(nn.Linear(3, 2), "snip", 0.5, (torch.ones(2, 4), torch.tensor([0, 1])))


def _with_norm(norm: nn.Module) -> nn.Module:
    net = nn.Sequential(nn.Linear(2, 2))
    net.add_module("norm", norm)
    return net


class _TwoInputs(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b, self.head = nn.Linear(6, 5), nn.Linear(4, 5), nn.Linear(10, 3)

    def forward(self, image, meta):
        return self.head(torch.cat([torch.tanh(self.a(image)), torch.tanh(self.b(meta))], dim=1))


class _Concatenated(_TwoInputs):
    def forward(self, x):
        return super().forward(x[:, :6], x[:, 6:])


def test_ntk_sap_on_keyword_inputs_equals_ntk_sap_on_their_concatenation():
    # One flat noise tensor split into the inputs is exactly the noise the single-input twin sees.
    torch.manual_seed(0)
    two, one = _TwoInputs(), _Concatenated()
    one.load_state_dict(two.state_dict())
    example = {"image": torch.randn(2, 6), "meta": torch.randn(2, 4)}
    options = {"iterations": 2, "repeats": 2, "prune_samples": 6, "batch_size": 3}
    structured = prune(two, "ntk_sap", 0.6, example_inputs=example, seed=5, **options)
    flat = prune(one, "ntk_sap", 0.6, input_shape=(10,), seed=5, **options)
    assert structured.num_kept == round(0.4 * (30 + 20 + 30))
    assert structured == flat
    with pytest.raises(ValueError, match="share no batch dimension"):
        prune(two, "ntk_sap", 0.6, example_inputs={"image": torch.randn(2, 6), "meta": torch.randn(3, 4)})


def test_ntk_sap_with_dropout_depends_on_the_seed_only_and_leaves_the_global_rng_alone():
    # NTK-SAP's BatchNorm-statistics pass runs in train mode, where dropout draws random numbers.
    net = nn.Sequential(nn.Linear(6, 12), nn.BatchNorm1d(12), nn.ReLU(), nn.Dropout(0.5), nn.Linear(12, 3))
    options = {"input_shape": (6,), "iterations": 2, "repeats": 1, "prune_samples": 8, "batch_size": 4}
    torch.manual_seed(1)
    first = prune(net, "ntk_sap", 0.7, seed=2, **options)
    state = torch.random.get_rng_state()
    torch.manual_seed(12345)
    second = prune(net, "ntk_sap", 0.7, seed=2, **options)
    assert first == second
    torch.manual_seed(1)
    prune(net, "ntk_sap", 0.7, seed=2, **options)
    assert torch.equal(torch.random.get_rng_state(), state)
