"""The mask verdict against the all-ones baseline, and the remedy for every pipeline, on hand-worked masks."""

from __future__ import annotations

import json
import math

import pytest
import torch
from torch import nn
from torch.nn.utils import prune

from prune_landscape import MaskSet, models
from prune_landscape.audit import audit
from prune_landscape.remedy import plan_remedy
from prune_landscape.verdict import RISKY_PRICE, MaskLevel


def _net(widths, seed=0, **kwargs):
    net = models.mlp(list(widths), **kwargs)
    net.init_weights(torch.Generator().manual_seed(seed))
    return net


def test_levels_sort_worst_last_and_json_keys_are_stable():
    assert sorted(MaskLevel, key=int) == [MaskLevel.SAFE, MaskLevel.CAUTION, MaskLevel.RISKY, MaskLevel.BROKEN]
    report = audit(_net([4, 6, 3]), n_samples=5, masks=MaskSet({"fc2.weight": torch.eye(3, 6, dtype=torch.bool)}))
    data = json.loads(report.to_json())
    assert set(data["mask_verdict"]) >= {"level", "rules", "price", "explanation"}
    assert set(data["baseline"]) >= {"landscape", "existence"}
    assert set(data["remedy"]) >= {"pipeline", "setting", "extra_weights", "fraction_of_budget", "feasible"}
    assert data["headline"] == report.headline() and data["headline"][0] == f"mask verdict: {report.mask_verdict.summary}"
    metrics = report.metrics()
    assert metrics["mask_verdict/code"] == float(report.mask_verdict.level) and "baseline/landscape_code" in metrics
    assert report.mask_verdict.verdict is report.mask_verdict.level  # duck-types the theorem axes' Verdict


def test_collapsed_layer_and_no_path_are_broken():
    net = _net([4, 6, 3])
    masks = MaskSet({"fc1.weight": torch.zeros(6, 4, dtype=torch.bool)})
    verdict = audit(net, n_samples=10, masks=masks).mask_verdict
    assert verdict.level is MaskLevel.BROKEN and set(verdict.rules) == {"NO-PATH", "COLLAPSED"}
    assert "collapsed (no alive unit): fc1" in verdict.explanation


def test_an_output_without_fan_in_is_broken():
    head = torch.ones(3, 6, dtype=torch.bool)
    head[1] = False  # output 1 sees nothing
    verdict = audit(_net([4, 6, 3]), n_samples=10, masks=MaskSet({"fc2.weight": head})).mask_verdict
    assert verdict.level is MaskLevel.BROKEN and verdict.rules == ("DEAD-OUTPUT",)
    assert "1 of 3 outputs have no effective fan-in" in verdict.explanation


def test_dense_network_and_dense_head_are_safe_and_a_narrowed_head_input_is_caution():
    net = _net([4, 6, 3])
    dense = audit(net, n_samples=10).mask_verdict
    assert dense.level is MaskLevel.SAFE and dense.rules == ("DENSE-HEAD",)
    body = torch.ones(6, 4, dtype=torch.bool)
    body[0] = False  # hidden unit 0 gets no input: 5 of the 6 units entering the head remain
    narrowed = audit(net, n_samples=10, masks=MaskSet({"fc1.weight": body})).mask_verdict
    assert narrowed.level is MaskLevel.CAUTION and narrowed.rules == ("NARROWED",)
    assert "5 of 6 units entering the head are effective" in narrowed.explanation


def test_nl3_fires_for_the_mask_not_for_the_wide_dense_network():
    x = torch.tensor([[0.0, 1.0], [1.0, 0.0], [1.0, 1.0], [-1.0, 0.5]])
    y = torch.randn(4, 2, generator=torch.Generator().manual_seed(0))
    head = torch.ones(2, 8, dtype=torch.bool)
    head[0, 2:] = False  # output 0: fan-in 2 < n = 4 in a network 8 >= n wide
    report = audit(_net([2, 8, 2]), (x, y), masks=MaskSet({"fc2.weight": head}))
    assert report.baseline.landscape.rules == ("NL-1",)  # the dense wide network: no spurious valley
    assert report.mask_verdict.level is MaskLevel.RISKY and "NL-3" in report.mask_verdict.rules
    assert "NL-3 fires for this mask, not for the dense network" in report.mask_verdict.explanation


def test_non_closedness_is_risky_without_weight_decay_and_caution_with_it():
    net = _net([2, 2, 2], activation="linear", bias=False)
    masks = MaskSet({"fc1.weight": torch.tensor([[1, 0], [1, 1]]).bool(), "fc2.weight": torch.tensor([[1, 1], [0, 1]]).bool()})
    plain = audit(net, n_samples=3, masks=masks)
    assert plain.baseline.existence.verdict.name == "OPTIMUM_EXISTS"
    assert plain.mask_verdict.level is MaskLevel.RISKY and plain.mask_verdict.rules == ("EXISTENCE",)
    decayed = audit(net, n_samples=3, masks=masks, weight_decay=0.1).mask_verdict
    assert decayed.level is MaskLevel.CAUTION and "EXISTENCE-WD" in decayed.rules


def test_the_price_ranks_two_sparse_heads_of_equal_density():
    """ReLU features relu(x); labels read x0. Both heads keep 2 of 4 columns (the same for both outputs,
    so the cut units are dead and each head is dense over what is left): only the price tells them apart."""
    net = _net([4, 4, 2])
    with torch.no_grad():
        net.fc1.weight.copy_(torch.eye(4))
        net.fc1.bias.zero_()
    g = torch.Generator().manual_seed(1)
    x = torch.randn(200, 4, generator=g)
    y = (x[:, 0] > 0).long()  # separable on relu(x0): the dense head nearly zeroes the loss
    informative = torch.tensor([[1, 1, 0, 0], [1, 1, 0, 0]]).bool()
    blind = ~informative
    good = audit(net, (x, y), masks=MaskSet({"fc2.weight": informative})).mask_verdict
    bad = audit(net, (x, y), masks=MaskSet({"fc2.weight": blind})).mask_verdict
    assert good.price.final_layer_density == bad.price.final_layer_density == 0.5
    assert good.level is MaskLevel.CAUTION and good.rules == ("NARROWED",) and good.relative_price < RISKY_PRICE
    # Columns 2, 3 are independent of the label: the blind head can do no better than the label frequencies.
    assert bad.level is MaskLevel.RISKY and bad.rules == ("PRICE",) and bad.relative_price > 0.5
    assert bad.price_value > good.price_value and f"price +{bad.price_value:.3g} nats" in bad.explanation


def test_a_requested_final_layer_gap_probe_reuses_the_price():
    net = _net([4, 6, 3])
    data = (torch.randn(30, 4, generator=torch.Generator().manual_seed(2)), torch.arange(30) % 3)
    head = torch.rand(3, 6, generator=torch.Generator().manual_seed(3)) < 0.5
    head[:, 0] = True
    report = audit(net, data, masks=MaskSet({"fc2.weight": head}), probes=("final_layer_gap",))
    assert report.probes["final_layer_gap"] is report.mask_verdict.price
    assert report.to_dict()["head_price"]["sparsity_price"] == report.mask_verdict.price_value


# --------------------------------------------------------------------------------------------- remedy
def _pruned_count(model, names):
    return sum(int((getattr(model.get_submodule(n), "weight") != 0).sum()) for n in names)


def _apply(setting: str, model: nn.Module) -> None:
    """Run a remedy's torch.nn.utils.prune setting as a user would type it."""
    exec(setting, {"prune": prune, "nn": nn, "model": model})  # noqa: S102 - the string is ours, the point of the test


@pytest.mark.parametrize("kept", [1_000, 300])
def test_torch_setting_applies_exactly_the_stated_budget(kept):
    """MLP 16-32-16-4: 512 + 512 + 64 = 1,088 weights. The body needs >= 16 + 1 = 17 (one weight per unit
    feeding the head, one for fc1), so a dense head (64) fits at 1,000 and at 300 kept weights."""
    net = _net([16, 32, 16, 4])
    body = (("fc1", "Linear", 32), ("fc2", "Linear", 16))
    remedy = plan_remedy(final_module="fc3", final_total=64, final_kept=20, kept=kept, total=1_088, body=body,
                         pipeline="torch")
    assert remedy.feasible and remedy.extra_weights == 44 and remedy.fraction_of_budget == pytest.approx(44 / kept)
    assert remedy.setting == remedy.settings["torch"] and remedy.body_minimum == 17
    _apply(remedy.settings["torch"], net)
    assert int((net.fc3.weight != 0).sum()) == 64  # the head untouched: dense
    assert _pruned_count(net, ["fc1", "fc2", "fc3"]) == kept  # the same budget, exactly
    assert "parameters_to_prune=[(model.fc1, \"weight\"), (model.fc2, \"weight\")]" in remedy.settings["lightning"]
    assert f"amount={1_088 - kept}" in remedy.settings["lightning"]


def test_infeasible_dense_head_gives_the_highest_floor_that_fits_and_its_exact_cost():
    """Budget 60 of 1,088; the body needs 17; 43 spare -> min_density floor(1000 * 43 / 64) / 1000 = 0.671,
    ceil(0.671 * 64) = 43 head weights: +33 over the 10 it keeps."""
    net = _net([16, 32, 16, 4])
    remedy = plan_remedy(final_module="fc3", final_total=64, final_kept=10, kept=60, total=1_088,
                         body=(("fc1", "Linear", 32), ("fc2", "Linear", 16)))
    assert not remedy.feasible and remedy.min_density == 0.671 and remedy.extra_weights == 33
    assert remedy.settings["prune_landscape"] == 'prune_landscape.pruning.prune(..., final_layer="min_density=0.671")'
    assert "does not fit the budget" in remedy.text and "min_density=0.671: +33 weights" in remedy.text
    _apply(remedy.settings["torch"], net)
    assert int((net.fc3.weight != 0).sum()) == 43 and _pruned_count(net, ["fc1", "fc2", "fc3"]) == 60
    # When even the floor adds nothing, the remedy says which sparsity a dense head needs instead.
    hopeless = plan_remedy(final_module="fc3", final_total=64, final_kept=50, kept=60, total=1_088,
                           body=(("fc1", "Linear", 32), ("fc2", "Linear", 16)))
    assert hopeless.extra_weights == 0 and not hopeless.feasible
    assert f"fits at sparsity <= {1 - (64 + 17) / 1_088:.4g}" in hopeless.text


def test_remedy_lists_every_pipeline_and_a_long_body_compactly():
    body = tuple((f"blocks.{i}.conv", "Conv2d", 16) for i in range(6))
    remedy = plan_remedy(final_module="fc", final_total=640, final_kept=100, kept=20_000, total=270_000, body=body,
                         pipeline="lightning")
    assert set(remedy.settings) == {"prune_landscape", "lightning", "torch"} and remedy.setting == remedy.settings["lightning"]
    assert 'isinstance(m, nn.Conv2d) and m is not model.fc' in remedy.settings["torch"]
    short = plan_remedy(final_module="blocks.2.fc", final_total=10, final_kept=5, kept=50, total=100,
                        body=(("blocks.0.lin", "Linear", 5),))
    assert "(model.blocks[0].lin, \"weight\")" in short.settings["torch"]
    with pytest.raises(ValueError, match="pipeline must be one of"):
        plan_remedy(final_module="fc", final_total=1, final_kept=0, kept=1, total=2, body=(), pipeline="keras")
    with pytest.raises(ValueError, match="pipeline must be one of"):
        audit(models.mlp([2, 2]), pipeline="keras")


def test_audit_remedy_never_exceeds_the_budget():
    """fc2 (24 weights) cannot be dense in a 22-weight budget: the audit offers the floor instead."""
    report = audit(_net([3, 6, 4]), n_samples=5, masks=MaskSet({"fc2.weight": torch.eye(4, 6, dtype=torch.bool)}))
    remedy = report.remedy
    assert not remedy.feasible and remedy.min_density == 0.666 and remedy.extra_weights == 12
    assert math.ceil(remedy.min_density * 24) + remedy.body_minimum <= 22 == report.structure.num_kept  # 16 + 6
    assert report.metrics()["remedy/feasible"] == 0.0


def test_sweep_rows_carry_the_verdict_price_baseline_and_remedy():
    from prune_landscape.experiments.plan import Cell, SweepPlan
    from prune_landscape.experiments.sweep import audit_cell

    g = torch.Generator().manual_seed(0)
    x = torch.randn(64, 6, generator=g)
    data = (x, (x[:, 0] > 0).long() + (x[:, 1] > 0).long())
    plan = SweepPlan(methods=("random",), sparsities=(0.4,), final_layer_policies=("prune", "dense"), epochs=1)
    factory = lambda: models.mlp([6, 16, 3])  # noqa: E731
    pruned = audit_cell(Cell("random", 0.4, "prune", 0), plan, factory, data)
    dense = audit_cell(Cell("random", 0.4, "dense", 0), plan, factory, data)
    for row in (pruned, dense):
        assert row["mask_verdict"] == row["audit"]["mask_verdict"]["level"]
        assert row["mask_verdict_rules"] == row["audit"]["mask_verdict"]["rules"]
        assert row["baseline"]["text"] == row["audit"]["baseline"]["text"]
        assert row["metrics"]["mask_verdict/code"] == row["mask_verdict_code"]
    assert pruned["head_price"] == pytest.approx(pruned["audit"]["head_price"]["sparsity_price"])
    assert pruned["remedy"]["feasible"] and pruned["remedy"]["extra_weights"] == 48 - round(48 * pruned["final_layer_density"])
    assert dense["head_price"] is None and dense["remedy"] is None


def test_a_theorem_flag_that_the_measured_price_does_not_confirm_is_caution():
    """Output 0 keeps 3 of 8 features for n = 4 samples (NL-3 fires), but its targets use only those 3."""
    x = torch.tensor([[0.0, 1.0], [1.0, 0.0], [1.0, 1.0], [-1.0, 0.5]])
    head = torch.ones(2, 8, dtype=torch.bool)
    head[0, 3:] = False
    net = _net([2, 8, 2])
    with torch.no_grad():
        features = torch.relu(net.fc1(x))
    y = torch.stack([features[:, :3] @ torch.tensor([1.0, -2.0, 0.5]), features @ torch.linspace(-1, 1, 8)], 1)
    report = audit(net, (x, y), masks=MaskSet({"fc2.weight": head}))
    verdict = report.mask_verdict
    assert "NL-3" in report.landscape.rules and verdict.relative_price < RISKY_PRICE
    assert verdict.level is MaskLevel.CAUTION and "NL-3" in verdict.rules
    assert "not confirmed by the measured head price" in verdict.explanation
    # Without data nothing is measured: the class-level flag stays RISKY.
    unmeasured = audit(net, n_samples=4, masks=MaskSet({"fc2.weight": head})).mask_verdict
    assert unmeasured.price is None and unmeasured.level is MaskLevel.RISKY and unmeasured.rules == ("NL-3",)


def test_no_remedy_for_a_whole_head_on_a_broken_body():
    masks = MaskSet({"fc1.weight": torch.zeros(6, 4, dtype=torch.bool)})  # no path; fc2 kept whole
    report = audit(_net([4, 6, 3]), n_samples=10, masks=masks)
    assert not report.structure.final_layer_dense and report.remedy is None
    assert report.mask_verdict.level is MaskLevel.BROKEN


def test_a_price_that_cannot_be_measured_is_a_note_not_a_crash():
    head = torch.eye(3, 6, dtype=torch.bool) | torch.eye(3, 6, dtype=torch.bool).roll(1, 1)
    data = (torch.randn(20, 4, dtype=torch.float64), torch.randn(20, 2, dtype=torch.float64))  # 2 targets, 3 outputs
    verdict = audit(_net([4, 6, 3]), data, masks=MaskSet({"fc2.weight": head})).mask_verdict
    assert verdict.price is None and "targets have 2 columns, expected 3" in verdict.price_note
    assert "price not measured (ValueError: targets have 2 columns" in verdict.explanation


def test_single_report_markdown_has_the_verdict_the_remedies_and_the_baseline_marks():
    head = torch.ones(3, 12, dtype=torch.bool)
    head[:, 6:] = torch.eye(3, 6, dtype=torch.bool)
    report = audit(_net([4, 12, 3]), n_samples=50, masks=MaskSet({"fc2.weight": head}))
    text = report.to_markdown()
    assert f"## Mask verdict: {report.mask_verdict.level.name}" in text
    assert "- **SPARSE-HEAD** (CAUTION): sparse head: 58.3 % kept" in text
    assert "## Landscape: RISKY (the architecture's baseline: not the mask's doing)" in text  # NL-4 both ways
    assert "## Remedy" in text and all(f"- {name}: `" in text for name in ("prune_landscape", "lightning", "torch"))
    assert text.splitlines()[2] == f"- mask verdict: {report.mask_verdict.summary}"
