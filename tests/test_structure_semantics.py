"""The semantics of alive / dead / fan-in per op kind (prune_landscape.structure docstring), on hand-built
models whose answers are worked out by hand, one failure class of issue #11 each."""

from __future__ import annotations

import logging

import pytest
import torch
from torch import nn
from torch.nn import functional as F  # noqa: N812

from prune_landscape import MaskSet, analyze_structure
from prune_landscape.layers import prunable_parameters, prunable_weights


def _dense(model, **overrides):
    masks = MaskSet.dense(model).to_dict()
    masks.update(overrides)
    return MaskSet(masks)


class LinearNormReluLinear(nn.Module):
    def __init__(self, norm: nn.Module, bias: bool = True):
        super().__init__()
        self.fc1 = nn.Linear(3, 4, bias=bias)
        self.norm = norm
        self.fc2 = nn.Linear(4, 2)

    def forward(self, x):
        return self.fc2(F.relu(self.norm(self.fc1(x))))


def test_dense_linear_layernorm_relu_linear_is_dense_and_connected():
    # Failure class 1: this was reported as a sparse head with fan-in 0 and no path.
    s = analyze_structure(LinearNormReluLinear(nn.LayerNorm(4)), torch.zeros(1, 3))
    assert s.final_layer == "fc2.weight" and s.final_layer_dense and s.connected
    assert s.fan_in == (4, 4) and s.total_dead_units == 0 and s.collapsed_layers == ()


def test_layernorm_revives_a_dead_pre_norm_unit_rmsnorm_does_not():
    # fc1 row 1 fully pruned, no bias: pre-norm unit 1 is exactly 0. LayerNorm subtracts the mean, so the
    # post-norm feature 1 depends on the input through the other features: fc2 still has 4 fed inputs.
    # RMSNorm divides by rms(x): 0 stays 0, so fc2 sees 3 fed inputs.
    row = torch.ones(4, 3, dtype=torch.bool)
    row[1] = False
    for norm, fed in ((nn.LayerNorm(4), 4), (nn.RMSNorm(4), 3)):
        net = LinearNormReluLinear(norm, bias=False)
        s = analyze_structure(net, torch.zeros(1, 3), _dense(net, **{"fc1.weight": row}))
        assert s.layer("fc1").alive.tolist() == [True, False, True, True]
        assert s.last_hidden_width == fed and s.fan_in == (fed, fed), type(norm).__name__


class Gated(nn.Module):
    def __init__(self, gate_bias: bool, activation):
        super().__init__()
        self.value = nn.Linear(3, 4)
        self.gate = nn.Linear(3, 4, bias=gate_bias)
        self.activation = activation
        self.head = nn.Linear(4, 2)

    def forward(self, x):
        return self.head(self.value(x) * self.activation(self.gate(x)))


def test_pruned_gate_row_with_bias_does_not_cut_the_channel():
    # Failure class 2: sigmoid(bias) != 0, so channel 0 still carries value(x)[0] to the head.
    row = torch.ones(4, 3, dtype=torch.bool)
    row[0] = False
    net = Gated(gate_bias=True, activation=torch.sigmoid)
    s = analyze_structure(net, torch.zeros(1, 3), _dense(net, **{"gate.weight": row}))
    assert s.last_hidden_width == 4 and s.final_layer_dense
    assert s.layer("gate").alive.tolist() == [False, True, True, True]  # the gate unit itself is constant
    assert s.layer("value").alive_units == 4


def test_pruned_swiglu_gate_row_without_bias_cuts_the_channel():
    # SiLU(0) = 0: the product is exactly 0, so channel 0 is cut and value unit 0 reaches nothing.
    row = torch.ones(4, 3, dtype=torch.bool)
    row[0] = False
    net = Gated(gate_bias=False, activation=F.silu)
    s = analyze_structure(net, torch.zeros(1, 3), _dense(net, **{"gate.weight": row}))
    assert s.last_hidden_width == 3 and s.fan_in == (3, 3)
    assert s.layer("value").alive.tolist() == [False, True, True, True]


class TokenModel(nn.Module):
    """Embedding -> Linear on (batch, tokens, features) -> attention pooling -> head; tied optionally."""

    def __init__(self, tied: bool):
        super().__init__()
        self.tok = nn.Embedding(12, 6)
        self.proj = nn.Linear(6, 6)
        self.attn = nn.MultiheadAttention(6, 2, batch_first=True)
        self.lm_head = nn.Linear(6, 12, bias=False)
        if tied:
            self.lm_head.weight = self.tok.weight

    def forward(self, ids):
        h = self.proj(self.tok(ids))
        a, _ = self.attn(h, h, h, need_weights=False)
        return self.lm_head(h + a)


def test_token_ids_feature_axis_units_and_fused_attention_projections():
    # Failure classes 4, 6, 7: token-id input, units on the last axis (6, not the 5 tokens), and the
    # MultiheadAttention's packed in_proj_weight (18 rows) and out_proj in the prunable set.
    net = TokenModel(tied=False)
    assert prunable_parameters(net) == ["proj.weight", "attn.in_proj_weight", "attn.out_proj.weight", "lm_head.weight"]
    s = analyze_structure(net, torch.randint(0, 12, (2, 5)), MaskSet.dense(net))
    assert [layer.units for layer in s.layers] == [6, 18, 6, 12]
    assert s.final_layer == "lm_head.weight" and s.final_layer_dense and s.total_dead_units == 0


def test_tied_embedding_head_is_one_parameter_and_masked_rows_are_seen():
    # Failure class 5: lm_head.weight is tok.weight. Scope "all" still lists it once (canonical name of the
    # Linear owner). Zeroing vocabulary row 3 removes head output 3 and the embedding of token 3 alike.
    net = TokenModel(tied=True)
    weights = prunable_weights(net, prunable="all")
    assert [w.name for w in weights] == ["proj.weight", "attn.in_proj_weight", "attn.out_proj.weight", "lm_head.weight"]
    assert weights[-1].aliases == ("tok.weight",)
    mask = torch.ones(12, 6, dtype=torch.bool)
    mask[3] = False
    s = analyze_structure(net, torch.randint(0, 12, (1, 4)), _dense(net, **{"lm_head.weight": mask}))
    assert s.fan_in[3] == 0 and s.dead_units["lm_head.weight"] == 1 and s.fan_in[0] == 6
    # A mask given under the alias name means the same tensor.
    by_alias = {n: m for n, m in MaskSet.dense(net).items() if n != "lm_head.weight"}
    s_alias = analyze_structure(net, torch.randint(0, 12, (1, 4)), MaskSet({**by_alias, "tok.weight": mask}))
    assert s_alias.fan_in == s.fan_in


def test_embedding_column_with_a_single_kept_entry_still_depends_on_the_ids():
    # Scope "all": embedding column 0 keeps only token 7's entry. Whatever ids are drawn, feature 0 varies
    # with the ids (token 7 or not): alive. Column 1 has no kept entry: constant 0, dead.
    net = nn.Sequential(nn.Embedding(10, 3), nn.Linear(3, 2))
    mask = torch.ones(10, 3, dtype=torch.bool)
    mask[:, 0] = False
    mask[7, 0] = True
    mask[:, 1] = False
    s = analyze_structure(net, torch.randint(0, 10, (1, 4)), _dense(net, **{"0.weight": mask}), prunable="all")
    assert s.layer("0.weight").alive.tolist() == [True, False, True]
    assert s.last_hidden_width == 2


class TwoHeads(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = nn.Linear(4, 6)
        self.aux = nn.Linear(6, 2)
        self.main = nn.Linear(6, 3)
        self.late = nn.Linear(6, 2)

    def forward(self, x):
        h = F.relu(self.body(x))
        return {"aux": self.aux(h), "logits": self.main(h), "late": self.late(h)}


def test_dict_output_final_layer_and_auxiliary_heads(caplog):
    # Failure class 8: "late" runs last but the output is "logits" (default transform for dicts); aux heads
    # reach an output of their own, so none of their units is dead. The choice is logged.
    net = TwoHeads()
    with caplog.at_level(logging.INFO, logger="prune_landscape.structure"):
        s = analyze_structure(net, torch.zeros(1, 4), MaskSet.dense(net))
    assert s.final_layer == "main.weight" and s.final_layer_source == "auto"
    assert any("final layer: main.weight" in r.getMessage() for r in caplog.records)
    assert s.total_dead_units == 0 and s.layers[-1].name == "main.weight"
    picked = analyze_structure(net, torch.zeros(1, 4), MaskSet.dense(net), output_transform=lambda o: o["late"])
    assert picked.final_layer == "late.weight"
    named = analyze_structure(net, torch.zeros(1, 4), MaskSet.dense(net), final_layer="aux")
    assert named.final_layer == "aux.weight" and named.final_layer_source == "explicit"
    # body unit 0 feeds only "aux": cutting aux's column 0 kills it only if main and late drop it too.
    cut = torch.ones(6, 4, dtype=torch.bool)
    masks = {"aux.weight": torch.ones(2, 6, dtype=torch.bool), "main.weight": torch.ones(3, 6, dtype=torch.bool),
             "late.weight": torch.ones(2, 6, dtype=torch.bool), "body.weight": cut}
    for head in ("aux.weight", "main.weight", "late.weight"):
        masks[head][:, 0] = False
    s_cut = analyze_structure(net, torch.zeros(1, 4), MaskSet(masks))
    assert s_cut.layer("body").alive.tolist() == [False] + [True] * 5


def test_recurrent_classifier_with_tuple_module_output():
    # Failure class 9: LSTM between Linear layers.
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.inp = nn.Linear(3, 5)
            self.rnn = nn.GRU(5, 4, batch_first=True)
            self.head = nn.Linear(4, 2)

        def forward(self, x):
            out, _ = self.rnn(self.inp(x))
            return self.head(out[:, -1])

    net = Net()
    row = torch.ones(5, 3, dtype=torch.bool)
    row[2] = False
    s = analyze_structure(net, torch.zeros(2, 6, 3), _dense(net, **{"inp.weight": row}))
    assert s.layer("inp").alive.tolist() == [True, True, False, True, True]
    assert s.final_layer_dense and s.fan_in == (4, 4)
    s_all = analyze_structure(net, torch.zeros(2, 6, 3), prunable="all")
    assert {"rnn.weight_ih_l0", "rnn.weight_hh_l0"} <= {layer.name for layer in s_all.layers}


def test_maxpool_and_relu_are_path_preserving_and_unknown_is_never_a_guess():
    # A ReLU unit that a particular input would switch off is still alive; the result says which units it
    # could not decide (none here: every dependence is exact).
    net = nn.Sequential(nn.Conv2d(1, 3, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(3 * 2 * 2, 2))
    s = analyze_structure(net, torch.zeros(1, 1, 4, 4), MaskSet.dense(net))
    assert s.total_dead_units == 0 and s.total_unknown_units == 0 and s.unknown_units == {}
    assert s.fan_in == (12, 12)


def test_errors_name_what_was_expected():
    with pytest.raises(ValueError, match="output_transform"):
        analyze_structure(nn.Linear(3, 2), torch.zeros(1, 3), output_transform=lambda out: out.argmax(-1))
    with pytest.raises(ValueError, match="precision must be"):
        analyze_structure(nn.Linear(3, 2), torch.zeros(1, 3), precision="half")
    with pytest.raises(ValueError, match="prunable must be"):
        analyze_structure(nn.Linear(3, 2), torch.zeros(1, 3), prunable="some")


class LateUnusedHead(nn.Module):
    """``probe`` runs after ``head`` but its value is discarded: it is not on the output's path."""

    def __init__(self):
        super().__init__()
        self.body = nn.Linear(4, 6)
        self.head = nn.Linear(6, 3)
        self.probe = nn.Linear(3, 2)

    def forward(self, x):
        out = self.head(F.relu(self.body(x)))
        self.probe(out.detach())
        return out


def test_cheap_final_layer_pass_matches_the_analysis_and_leaves_the_model_alone():
    from prune_landscape.layers import final_layer_name
    from prune_landscape.structure import final_layer_name as old_import

    net = TwoHeads().train()
    ids = {n: id(p) for n, p in net.named_parameters()}
    assert final_layer_name(net, torch.zeros(1, 4)) == "main.weight"  # "late" runs last, "logits" is the output
    assert final_layer_name(net, torch.zeros(1, 4), output_transform=lambda o: o["late"]) == "late.weight"
    assert old_import(net, torch.zeros(1, 4)) == "main.weight"
    assert net.training and ids == {n: id(p) for n, p in net.named_parameters()}
    assert all(not m._forward_pre_hooks and not m._forward_hooks for m in net.modules())
    # A later call whose value never reaches the output is not the head (the graph decides, not the order);
    # a ReLU that is off for this input (zeros, no bias) does not hide the path.
    late = LateUnusedHead()
    with torch.no_grad():
        late.body.bias.fill_(-1.0)
    assert final_layer_name(late, torch.zeros(1, 4)) == "head.weight"
    assert analyze_structure(late, torch.zeros(1, 4), MaskSet.dense(late)).final_layer == "head.weight"
    # Without an example: zeros of the first Linear's width; a conv net falls back to registration order.
    assert final_layer_name(late) == "head.weight"
    conv = nn.Sequential(nn.Conv2d(1, 2, 3), nn.Flatten(), nn.Linear(8, 5), nn.Linear(5, 2))
    assert final_layer_name(conv) == "3.weight"
    # No call reaches the output: the last one called (as the analysis does); none called: an error.
    assert final_layer_name(late, torch.zeros(1, 4), output_transform=lambda o: torch.ones(1)) == "probe.weight"

    class Unused(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(2, 2)

        def forward(self, x):
            return x * 2

    with pytest.raises(ValueError, match="no Linear or Conv layer of Unused ran"):
        final_layer_name(Unused(), torch.zeros(1, 2))


@pytest.mark.parametrize("precision", ["float64", "float32"])
def test_in_place_activation_right_after_a_prunable_call_keeps_its_units_alive(precision):
    # SqueezeNet's pattern: Conv2d -> ReLU(inplace=True). The pass's dual output of a conv is a view; an
    # in-place op on it once dropped the gradient hook, so every unit but the first layer's read as dead.
    net = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(inplace=True), nn.Conv2d(4, 5, 3), nn.ReLU(inplace=True),
                        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(5, 3), nn.ReLU(inplace=True), nn.Linear(3, 2))
    s = analyze_structure(net, torch.zeros(1, 1, 8, 8), MaskSet.dense(net), precision=precision)
    assert s.final_layer == "8.weight" and s.connected and s.final_layer_dense
    assert s.total_dead_units == 0 and s.total_unknown_units == 0, s.dead_units
