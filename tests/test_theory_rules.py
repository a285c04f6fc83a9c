"""Every rule of THEORY.md section 3: one case where it fires, one where it does not; section 5's examples."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from prune_landscape import MaskSet, models
from prune_landscape.audit import audit
from prune_landscape.theory import Closedness, Existence, Landscape, collect_facts, evaluate, rule_ids
from prune_landscape.theory import DEFAULT, Rule
from prune_landscape.theory.classify import RULES

LU_M1 = [[1, 0], [1, 1]]
LU_M2 = [[1, 1], [0, 1]]


def _masks(*layers) -> MaskSet:
    return MaskSet({f"fc{i}.weight": torch.tensor(m, dtype=torch.bool) for i, m in enumerate(layers, start=1)})


def _findings(net, masks=None, data=None, n=None, weight_decay=0.0):
    facts = collect_facts(net, data, masks=masks, n_samples=n, weight_decay=weight_decay)
    return {(f.rule, f.axis.value): f for f in evaluate(facts)}


def _fired(findings, rule):
    return [f for (r, _), f in findings.items() if r == rule and f.decided]


def _data(x):
    x = torch.as_tensor(x, dtype=torch.float64)
    return (x, torch.zeros(x.shape[0], 1))


WHITE4 = _data(torch.eye(4))
RANDOM4 = _data(torch.tensor([[1.0, 2.0, 0.5, -1.0], [0.3, -0.2, 1.5, 0.7], [2.0, 0.1, -0.4, 0.9], [-1.0, 0.6, 0.2, 0.4]]))
LIN2_MASKS = _masks([[1, 1, 0, 0], [0, 0, 1, 1]], [[1, 1], [1, 1]])


def test_every_rule_id_is_implemented():
    assert len(RULES) >= 18
    assert set(rule_ids()) == {"LIN-1", "LIN-1d", "LIN-2", "LIN-2d", "LIN-3", "LIN-4", "LIN-5", "NL-1", "NL-2", "NL-3",
                               "NL-4", "NL-5", "RELU-1", "RELU-2", "RELU-3", "RELU-4", "SMOOTH", "WD", "DEFAULT"}


def test_rules_are_values_and_every_finding_carries_its_declaration():
    assert all(isinstance(rule, Rule) for rule in RULES)
    declared: dict[str, set] = {}
    for rule in RULES:
        declared.setdefault(rule.id, set()).add((rule.citation, rule.provenance))
    # One citation and one provenance per id (LIN-1 and LIN-1d declare a landscape and an existence value).
    assert {rule_id: len(values) for rule_id, values in declared.items() if len(values) != 1} == {}
    assert rule_ids() == (*dict.fromkeys(rule.id for rule in RULES), "DEFAULT")
    # Hand-worked: ReLU, 6 hidden units, head masked to the identity on 3 of them, n = 5: NL-4 fires
    # (3 effective units < 5); the pair is closed and d_y = 3, so RELU-3 leaves existence UNKNOWN.
    masks = _masks([[1] * 4] * 6, [[int(i == j) for j in range(6)] for i in range(3)])
    findings = evaluate(collect_facts(models.mlp([4, 6, 3]), masks=masks, n_samples=5))
    assert [f.rule for f in findings] == ["NL-4", "RELU-3"]
    # Leaky ReLU, dense, 6 >= n = 5 units, no data: NL-1 cannot decide (distinctness needs data) and no
    # existence rule covers leaky ReLU: DEFAULT.
    findings += evaluate(collect_facts(models.mlp([4, 6, 3], "leaky_relu"), n_samples=5))
    assert [(f.rule, f.decided) for f in findings[2:]] == [("NL-1", False), ("DEFAULT", True)]
    by_id = {rule.id: rule for rule in (*RULES, DEFAULT)}
    for finding in findings:
        rule = by_id[finding.rule]
        assert (finding.basis, finding.provenance) == (rule.citation, rule.provenance), finding


# -- linear rules ----------------------------------------------------------------------------------------
def test_lin_1_fires_on_scalar_output_benign_control_and_not_on_lu():
    net = models.mlp([3, 3, 1], activation="linear", bias=False)
    found = _findings(net, _masks([[1, 0, 1], [1, 1, 0], [0, 1, 1]], [[1, 1, 1]]), n=5)
    assert found[("LIN-1", "landscape")].verdict is Landscape.NO_SPURIOUS_LOCAL_MIN
    assert found[("LIN-1", "existence")].verdict is Existence.OPTIMUM_EXISTS
    assert not _fired(_findings(models.mlp([2, 2, 2], "linear", bias=False), _masks(LU_M1, LU_M2)), "LIN-1")


def test_lin_1d_fires_for_deep_scalar_output_only():
    net = models.mlp([3, 4, 4, 1], activation="linear", bias=False)
    masks = _masks([[1, 0, 0], [0, 1, 0], [1, 1, 1], [0, 0, 1]], [[1, 0, 1, 0]] * 4, [[1, 1, 0, 1]])
    found = _findings(net, masks)
    assert found[("LIN-1d", "landscape")].verdict is Landscape.NO_SPURIOUS_LOCAL_MIN
    assert found[("LIN-1d", "existence")].verdict is Existence.OPTIMUM_EXISTS
    assert not _fired(_findings(models.mlp([3, 4, 4, 2], "linear", bias=False)), "LIN-1d")


def test_lin_2_needs_whitened_data():
    net = models.mlp([4, 2, 2], activation="linear", bias=False)
    assert _findings(net, LIN2_MASKS, WHITE4)[("LIN-2", "landscape")].verdict is Landscape.NO_SPURIOUS_LOCAL_MIN
    assert not _fired(_findings(net, LIN2_MASKS, RANDOM4), "LIN-2")
    undecided = _findings(net, LIN2_MASKS)[("LIN-2", "landscape")]
    assert undecided.verdict is Landscape.UNKNOWN and "no data" in undecided.explanation


def test_lin_2d_deep_non_intersected_first_layer():
    net = models.mlp([4, 2, 2, 2], activation="linear", bias=False)
    masks = _masks([[1, 1, 0, 0], [0, 0, 1, 1]], [[1, 1], [1, 1]], [[1, 1], [1, 1]])
    assert _findings(net, masks, WHITE4)[("LIN-2d", "landscape")].verdict is Landscape.NO_SPURIOUS_LOCAL_MIN
    sparse_later = _masks([[1, 1, 0, 0], [0, 0, 1, 1]], [[1, 0], [1, 1]], [[1, 1], [1, 1]])
    assert not _fired(_findings(net, sparse_later, WHITE4), "LIN-2d")


def test_lin_3_two_non_complete_classes_on_non_whitened_data():
    net = models.mlp([4, 2, 2], activation="linear", bias=False)
    found = _findings(net, LIN2_MASKS, RANDOM4)
    assert found[("LIN-3", "landscape")].verdict is Landscape.RISKY
    assert found[("LIN-3", "landscape")].facts_dict["whitened"] is False
    assert not _fired(_findings(net, LIN2_MASKS, WHITE4), "LIN-3")


def test_lin_4_three_outputs_with_sparse_second_layer():
    net = models.mlp([3, 2, 3], activation="linear", bias=False)
    found = _findings(net, _masks([[1, 1, 1]] * 2, [[1, 0], [1, 1], [0, 1]]))
    assert found[("LIN-4", "landscape")].verdict is Landscape.RISKY
    assert not _fired(_findings(models.mlp([3, 2, 2], "linear", bias=False), _masks([[1, 1, 1]] * 2, [[1, 0], [1, 1]])), "LIN-4")


def test_lin_5_on_the_lu_pattern_with_its_certificate():
    net = models.mlp([2, 2, 2], activation="linear", bias=False)
    report = audit(net, _data(torch.eye(2)), masks=_masks(LU_M1, LU_M2))
    assert report.existence.verdict is Existence.OPTIMUM_MAY_NOT_EXIST and report.existence.rules == ("LIN-5",)
    cert = report.existence.certificate
    assert (cert.kind, cert.unit, cert.rows, cert.columns) == ("LU", 1, (0, 1), (0, 1))
    assert report.to_dict()["existence"]["certificate"]["unit"] == 1
    assert not _fired(_findings(net), "LIN-5")


def test_linear_mlp_from_models_audits_as_linear_with_output_bias():
    report = audit(models.mlp([3, 4, 1], activation="linear"), n_samples=7)
    assert report.facts.activation == "linear" and report.facts.scope == "mlp"
    assert "LIN-1d" in report.landscape.rules


# -- non-linear rules -------------------------------------------------------------------------------------
GRID4 = _data(torch.tensor([[-1.5], [-0.5], [0.5], [1.5]]))


def test_nl_1_benign_control_of_section_5():
    report = audit(models.mlp([1, 5, 2]), GRID4)
    assert report.landscape.verdict is Landscape.NO_SPURIOUS_VALLEY and report.landscape.rules == ("NL-1",)
    assert report.structure.final_layer_dense
    duplicated = _data(torch.tensor([[0.5], [0.5], [1.0], [2.0]]))
    assert not _fired(_findings(models.mlp([1, 5, 2]), data=duplicated), "NL-1")
    assert not _fired(_findings(models.mlp([1, 3, 2]), data=GRID4), "NL-1")


def test_nl_2_needs_analytic_activation_wide_outputs_and_rank():
    data = _data(torch.randn(4, 2, generator=torch.Generator().manual_seed(0)))
    found = _findings(models.mlp([2, 8, 2], activation="tanh"), data=data)
    nl2 = found[("NL-2", "landscape")]
    assert nl2.verdict is Landscape.NO_SUBOPTIMAL_BASIN and nl2.facts_dict["rank_data"] == "real"
    generic = _findings(models.mlp([2, 8, 2], activation="tanh"), n=4)[("NL-2", "landscape")]
    assert generic.facts_dict["rank_data"] == "generic" and "generic data" in generic.explanation
    assert not _fired(_findings(models.mlp([2, 8, 2], activation="relu"), data=data), "NL-2")
    assert not _fired(_findings(models.mlp([2, 3, 2], activation="tanh"), data=data), "NL-2")


def test_nl_2_rank_condition_fails_on_repeated_samples():
    x = torch.tensor([[0.1, 0.2], [0.1, 0.2], [1.0, -1.0], [0.3, 0.9]])
    assert not _fired(_findings(models.mlp([2, 8, 2], activation="tanh"), data=_data(x)), "NL-2")


def test_nl_3_sparse_final_layer_leaves_a_narrow_output():
    diagonal = _masks([[1]] * 4, torch.eye(4).tolist())
    found = _findings(models.mlp([1, 4, 4]), diagonal, n=4)
    assert found[("NL-3", "landscape")].verdict is Landscape.RISKY
    assert found[("NL-3", "landscape")].facts_dict["fan_in_min"] == 1
    assert not _fired(_findings(models.mlp([1, 4, 4]), n=4), "NL-3")


def test_nl_4_narrow_net_and_recalled_text():
    found = _findings(models.mlp([2, 3, 2]), n=10)
    nl4 = found[("NL-4", "landscape")]
    assert nl4.verdict is Landscape.RISKY and "RECALLED" in nl4.explanation and nl4.provenance.value == "RECALLED"
    assert not _fired(_findings(models.mlp([2, 12, 2]), n=10), "NL-4")


def test_nl_5_information_only():
    found = _findings(models.mlp([3, 4, 1], activation="tanh"), n=6)
    assert found[("NL-5", "info")].verdict is None
    assert not _fired(_findings(models.mlp([3, 3, 1], activation="tanh"), n=6), "NL-5")


# -- existence rules --------------------------------------------------------------------------------------
def test_relu_1_scalar_output_any_masks():
    found = _findings(models.mlp([3, 4, 1]), _masks([[1, 0, 0], [1, 1, 0], [0, 0, 1], [1, 0, 1]], [[1, 0, 1, 1]]))
    assert found[("RELU-1", "existence")].verdict is Existence.OPTIMUM_EXISTS
    assert not _fired(_findings(models.mlp([3, 4, 2])), "RELU-1")


def test_relu_2_lu_pattern_on_the_grid():
    grid = torch.cartesian_prod(torch.tensor([-1.0, 0.0, 1.0]), torch.tensor([-1.0, 0.0, 1.0]))
    targets = grid @ torch.tensor([[0.0, 1.0], [1.0, 0.0]]).T
    report = audit(models.mlp([2, 2, 2]), (grid, targets), masks=_masks(LU_M1, LU_M2))
    assert report.existence.verdict is Existence.OPTIMUM_MAY_NOT_EXIST and report.existence.rules == ("RELU-2",)
    assert "RECALLED" in report.existence.explanation
    assert not _fired(_findings(models.mlp([2, 2, 2])), "RELU-2")


def test_relu_3_closed_multi_output_is_unknown():
    found = _findings(models.mlp([2, 3, 2]))
    assert found[("RELU-3", "existence")].verdict is Existence.UNKNOWN
    assert not _fired(_findings(models.mlp([2, 3, 1])), "RELU-3")


def test_relu_4_deep_relu_is_unknown():
    assert _findings(models.mlp([2, 3, 3, 2]))[("RELU-4", "existence")].verdict is Existence.UNKNOWN
    assert not _fired(_findings(models.mlp([2, 3, 2])), "RELU-4")


@pytest.mark.parametrize("activation", ["tanh", "sigmoid", "softplus", "gelu", "silu"])
def test_smooth_activations(activation):
    assert _findings(models.mlp([2, 3, 2], activation=activation))[("SMOOTH", "existence")].verdict is Existence.UNKNOWN


def test_smooth_does_not_fire_for_relu():
    assert not _fired(_findings(models.mlp([2, 3, 2])), "SMOOTH")


def test_weight_decay_restores_existence_but_keeps_the_certificate():
    net = models.mlp([2, 2, 2], activation="linear", bias=False)
    report = audit(net, masks=_masks(LU_M1, LU_M2), weight_decay=5e-4)
    assert report.existence.verdict is Existence.OPTIMUM_EXISTS_WITH_WEIGHT_DECAY and report.existence.rules == ("WD",)
    assert report.existence.certificate.kind == "LU"
    assert not _fired(_findings(net, _masks(LU_M1, LU_M2)), "WD")


def test_default_when_nothing_applies():
    found = _findings(nn.Sequential(nn.Linear(3, 2)))
    assert found[("DEFAULT", "landscape")].verdict is Landscape.UNKNOWN
    assert found[("DEFAULT", "existence")].verdict is Existence.UNKNOWN
    assert ("DEFAULT", "landscape") not in _findings(models.mlp([2, 3, 1], "linear"))


# -- missing facts and unsupported activations -----------------------------------------------------------
def test_missing_n_gives_unknown_with_reason():
    report = audit(models.mlp([2, 3, 2]))
    assert report.landscape.verdict is Landscape.UNKNOWN
    assert "NL-4" in report.landscape.rules and "pass data or n_samples" in report.landscape.explanation


class Swish(nn.Module):
    def forward(self, x):
        return x * torch.sigmoid(x)


def test_unrecognised_activation_gives_unknown_with_reason():
    net = nn.Sequential(nn.Linear(2, 5), Swish(), nn.Linear(5, 2))
    report = audit(net, n_samples=10)
    assert report.facts.activation == "unknown"
    assert report.landscape.verdict is Landscape.UNKNOWN and report.existence.verdict is Existence.UNKNOWN
    assert "Swish" in report.landscape.explanation
    assert str(report)  # renders


class FunctionalRelu(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(2, 5), nn.Linear(5, 2)

    def forward(self, x):
        return self.fc2(torch.relu(self.fc1(x)))


def test_functional_activation_is_never_read_as_linear():
    report = audit(FunctionalRelu(), n_samples=10)
    assert report.facts.scope == "head" and report.facts.activation == "unknown"
    assert not any(rule.startswith("LIN") for rule in report.landscape.rules)


def test_closedness_of_last_two_maps_of_a_conv_head():
    report = audit(models.lenet(), n_samples=100, example_input=torch.zeros(1, 1, 28, 28))
    assert report.facts.closedness_layers == ("fc2.weight", "fc3.weight")
    assert report.facts.closedness.status is Closedness.CLOSED


def test_relu_lu_instance_on_the_grid_has_a_diverging_minimising_sequence():
    # Section 5: biases large enough keep both ReLUs active on the grid, so the net is the linear LU
    # family plus a constant the output bias cancels; the loss tends to 0 while the weights blow up.
    grid = torch.cartesian_prod(torch.tensor([-1.0, 0.0, 1.0]), torch.tensor([-1.0, 0.0, 1.0])).double()
    target = grid @ torch.tensor([[0.0, 1.0], [1.0, 0.0]], dtype=torch.float64).T
    losses, norms = [], []
    for e in (1e-1, 1e-2, 1e-3):
        w1 = torch.tensor([[-1 / e, 0.0], [1.0, e]], dtype=torch.float64)
        w2 = torch.tensor([[1.0, 1 / e], [0.0, 1.0]], dtype=torch.float64)
        b1 = torch.full((2,), 2 / e, dtype=torch.float64)  # > max |W1 x| on the grid
        b2 = -(w2 @ b1)
        out = torch.relu(grid @ w1.T + b1) @ w2.T + b2
        losses.append(float(0.5 * ((out - target) ** 2).sum()))
        norms.append(float(torch.cat([w1.flatten(), w2.flatten()]).norm()))
    assert losses[0] > losses[1] > losses[2] and losses[2] < 1e-5
    assert norms[2] >= 1e3
