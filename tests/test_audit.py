"""audit() and AuditReport: the headline, the remedy's exact cost, the views, probes and input errors."""

from __future__ import annotations

import json

import pytest
import torch

from prune_landscape import MaskSet, models, prunable_parameters
from prune_landscape.audit import audit
from prune_landscape.report import RELATIVE_SIGNAL, save_report
from prune_landscape.theory import Existence, Landscape

CIFAR_N = 50_000
EXAMPLE = torch.zeros(1, 3, 32, 32)


def _layerwise_magnitude(model, sparsity: float) -> MaskSet:
    """Every tensor keeps its own top round((1 - s) * size) magnitudes: the classifier is pruned too."""
    masks = {}
    for name in prunable_parameters(model):
        weight = model.get_parameter(name).detach().abs().reshape(-1)
        keep = round((1 - sparsity) * weight.numel())
        mask = torch.zeros_like(weight, dtype=torch.bool)
        mask[weight.topk(keep).indices] = True
        masks[name] = mask.reshape(model.get_parameter(name).shape)
    return MaskSet(masks)


def _fc_whole_same_budget(model, reference: MaskSet) -> MaskSet:
    """The classifier kept whole; the same total budget spent by global magnitude on the other layers."""
    names = [n for n in prunable_parameters(model) if n != "fc.weight"]
    budget = reference.num_kept - model.fc.weight.numel()
    scores = torch.cat([model.get_parameter(n).detach().abs().reshape(-1) for n in names])
    keep = torch.zeros_like(scores, dtype=torch.bool)
    keep[scores.topk(budget).indices] = True
    masks, start = {"fc.weight": torch.ones_like(model.fc.weight, dtype=torch.bool)}, 0
    for name in names:
        size = model.get_parameter(name).numel()
        masks[name] = keep[start : start + size].reshape(model.get_parameter(name).shape)
        start += size
    return MaskSet(masks)


@pytest.mark.parametrize("sparsity", [0.9, 0.98])
def test_resnet20_sparse_vs_dense_final_layer_and_exact_remedy_cost(sparsity):
    torch.manual_seed(0)
    net = models.resnet20()
    net.init_weights(torch.Generator().manual_seed(0))
    pruned = _layerwise_magnitude(net, sparsity)
    whole = _fc_whole_same_budget(net, pruned)
    assert pruned.num_kept == whole.num_kept  # same budget
    sparse_report = audit(net, n_samples=CIFAR_N, masks=pruned, example_input=EXAMPLE)
    dense_report = audit(net, n_samples=CIFAR_N, masks=whole, example_input=EXAMPLE)

    assert not sparse_report.structure.final_layer_dense and sparse_report.to_dict()["final_layer"]["dense"] is False
    assert dense_report.structure.final_layer_dense and dense_report.remedy is None
    cost = sparse_report.remedy.extra_weights
    assert cost == int(whole["fc.weight"].sum()) - int(pruned["fc.weight"].sum()) == 640 - round((1 - sparsity) * 640)
    assert sparse_report.remedy.fraction_of_budget == pytest.approx(cost / pruned.num_kept)
    expected = f"keep `fc` dense: +{cost:,} weights, {100 * cost / pruned.num_kept:.1f} % of the kept budget, taken from the other layers"
    assert sparse_report.remedy.text == expected and expected in str(sparse_report)
    # Real classifiers are narrow: NL-4 for both, and the report says the signal is relative.
    for report in (sparse_report, dense_report):
        assert report.landscape.verdict is Landscape.RISKY and report.landscape.rules == ("NL-4",)
        assert RELATIVE_SIGNAL in report.notes and report.facts.scope == "head"
        assert "no theorem covers the body" in report.to_markdown()
    fan = sparse_report.to_dict()["final_layer"]["fan_in"]
    assert fan["max"] < 64 and fan == {"min": sparse_report.structure.fan_in_min,
                                       "median": sparse_report.structure.fan_in_median, "max": fan["max"]}


@pytest.mark.slow
def test_remedy_with_the_pruning_api():
    pytest.importorskip("prune_landscape.pruning")
    from prune_landscape.pruning import prune

    net = models.resnet20()
    x = torch.randn(20, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    data = (x, torch.arange(20) % 10)
    options = {"magnitude": {}, "random": {}, "synflow": {"iterations": 2}, "snip": {},
               "ntk_sap": {"iterations": 1, "repeats": 1, "prune_samples": 20, "batch_size": 20}}
    for method, extra in options.items():
        pruned = prune(net, method, 0.98, data, final_layer="prune", seed=0, **extra)
        dense = prune(net, method, 0.98, data, final_layer="dense", seed=0, **extra)
        assert pruned.num_kept == dense.num_kept
        dense_report = audit(net, n_samples=CIFAR_N, masks=dense, example_input=EXAMPLE)
        assert dense_report.structure.final_layer_dense and dense_report.remedy is None, method
        report = audit(net, n_samples=CIFAR_N, masks=pruned, example_input=EXAMPLE)
        gained = int(dense["fc.weight"].sum()) - int(pruned["fc.weight"].sum())
        if report.structure.final_layer_dense:
            assert report.remedy is None, method
        else:
            assert report.remedy.extra_weights == 640 - int(pruned["fc.weight"].sum()), method
            if bool(dense["fc.weight"].all()):
                assert report.remedy.extra_weights == gained, method


def test_headline_comes_first_and_names_rule_provenance_and_facts():
    net = models.mlp([3, 6, 4])
    masks = MaskSet({"fc2.weight": torch.eye(4, 6, dtype=torch.bool)})
    report = audit(net, n_samples=5, masks=masks)
    lines = str(report).splitlines()
    # 6 hidden units >= n = 5 kept whole (NL-1); the eye mask leaves 4 effective units < n: NL-4 is the mask's.
    assert lines[0].startswith("mask verdict: RISKY by NL-4 - NL-4 fires for this mask, not for the dense network")
    assert lines[1].startswith("final layer fc2.weight: SPARSE") and "vs n = 5" in lines[1]
    assert lines[2].startswith("landscape: RISKY by NL-4 [RECALLED]") and "baseline" not in lines[2]
    assert lines[3].startswith("existence: UNKNOWN")
    assert lines[4].startswith("dead units: 2")  # hidden units 4 and 5 reach no output
    # Budget 18 + 4 = 22 of 42: a dense fc2 (24) does not fit. fc1 needs >= 6 (one per unit), so the
    # floor is floor(1000 * 16 / 24) / 1000 = 0.666 -> ceil(0.666 * 24) = 16 weights: +12.
    assert lines[5].startswith("remedy: a dense `fc2` does not fit the budget (the other layers need at least 6 "
                               "weights); floor it at min_density=0.666: +12 weights, 54.5 % of the kept budget")
    assert lines[6].startswith("architecture baseline (same network, every weight kept, n = 5): landscape "
                               "UNKNOWN by NL-1")  # NL-1 needs the data to check distinct inputs
    finding = report.landscape.deciding[0]
    assert finding.facts_dict["n"] == 5 and finding.facts_dict["activation"] == "relu"
    assert finding.facts_dict["fan_in_min"] == 1 and finding.facts_dict["widths"] == (3, 6, 4)


def test_to_dict_json_markdown_metrics_and_save(tmp_path):
    report = audit(models.mlp([2, 2, 2], "linear", bias=False), n_samples=3,
                   masks=MaskSet({"fc1.weight": torch.tensor([[1, 0], [1, 1]]).bool(),
                                  "fc2.weight": torch.tensor([[1, 1], [0, 1]]).bool()}))
    data = report.to_dict()
    for key in ("final_layer", "landscape", "existence", "dead_units", "collapsed_layers", "layers", "remedy", "probes"):
        assert key in data
    assert set(data["final_layer"]) >= {"name", "dense", "density", "fan_in"}
    assert data["existence"]["verdict"] == "OPTIMUM_MAY_NOT_EXIST" and data["existence"]["rules"] == ["LIN-5"]
    assert data["existence"]["certificate"] == {"kind": "LU", "unit": 1, "rows": [0, 1], "columns": [0, 1], "units": [1, 0]}
    assert json.loads(report.to_json()) == json.loads(json.dumps(data, default=str))
    metrics = report.metrics()
    assert all(isinstance(v, float) for v in metrics.values())
    assert metrics["existence/verdict_code"] == Existence.OPTIMUM_MAY_NOT_EXIST.value
    assert metrics["final_layer/fan_in_min"] == 1.0 and metrics["final_layer/density"] == 0.75
    assert "LU certificate: unit 1" in report.to_markdown()
    paths = save_report(report, tmp_path / "out")
    assert json.loads(paths["json"].read_text())["existence"]["rules"] == ["LIN-5"]
    assert paths["markdown"].read_text().startswith("# Pruning landscape audit")


class _Probe:
    def __init__(self, value):
        self.value = value

    def to_dict(self):
        return {"value": self.value}

    def scalars(self):
        return {"value": self.value}

    def figure(self):
        return None


def test_probes_by_callable_and_by_name(monkeypatch):
    probes = pytest.importorskip("prune_landscape.probes")
    # Resolution by name goes through the real registry; a cheap entry keeps the test fast.
    monkeypatch.setitem(probes.PROBES, "input_std", lambda model, data: _Probe(float(data[0].std())))
    assert {"hessian", "surface", "final_layer_gap", "restart_spread"} <= set(probes.PROBES)
    x = torch.randn(32, 4, generator=torch.Generator().manual_seed(0))
    data = (x, torch.randint(0, 3, (32,), generator=torch.Generator().manual_seed(1)))

    def mean_input(model, data):
        return _Probe(float(data[0].mean()))

    net = models.mlp([4, 8, 3])
    report = audit(net, data, probes=(mean_input, "input_std"))
    metrics = report.metrics()
    assert metrics["probe/mean_input/value"] == pytest.approx(float(x.mean()))
    assert metrics["probe/input_std/value"] == pytest.approx(float(x.std()))
    assert "probe input_std: value = " in str(report) and "- input_std: value = " in report.to_markdown()
    assert report.to_dict()["probes"]["mean_input"] == {"value": pytest.approx(float(x.mean()))}


def test_input_errors_are_raised_before_any_work():
    net = models.mlp([2, 3, 2])
    with pytest.raises(ValueError, match="unknown probe 'nope'"):
        audit(net, (torch.zeros(4, 2), torch.zeros(4)), probes=("nope",))
    with pytest.raises(ValueError, match="needs data"):
        audit(net, probes=(lambda m, d: None,))
    with pytest.raises(ValueError, match="n_samples must be a positive int"):
        audit(net, n_samples=0)
    with pytest.raises(ValueError, match="weight_decay must be a number >= 0"):
        audit(net, weight_decay=-1.0)


def test_n_samples_caps_the_data_and_a_larger_n_marks_data_facts_unknown():
    x = torch.eye(4, dtype=torch.float64)
    net = models.mlp([4, 2, 2], "linear", bias=False)
    masks = MaskSet({"fc1.weight": torch.tensor([[1, 1, 0, 0], [0, 0, 1, 1]]).bool()})
    assert audit(net, (x, torch.zeros(4, 2)), masks=masks).facts.whitened is True
    subset = audit(net, (x, torch.zeros(4, 2)), masks=masks, n_samples=100)
    assert subset.facts.whitened is None and subset.n == 100 and "holds 4 samples" in " ".join(subset.notes)


def test_final_layer_name_and_its_deprecated_spelling_and_structure_options_agree():
    """``final_layer`` in audit() names a layer: it is now ``final_layer_name`` (the old keyword warns)."""
    from prune_landscape.audit import StructureOptions

    net = models.mlp([4, 6, 3])
    # Hand-worked: with fc1 taken as the head, each of its 6 outputs reads all 4 inputs.
    named = audit(net, n_samples=5, final_layer_name="fc1")
    assert (named.structure.final_layer, named.structure.fan_in) == ("fc1.weight", (4,) * 6)
    grouped = audit(net, n_samples=5, structure_options=StructureOptions(final_layer_name="fc1"))
    with pytest.warns(DeprecationWarning, match="audit: final_layer= is deprecated; use final_layer_name=") as caught:
        old = audit(net, n_samples=5, final_layer="fc1")
    assert caught[0].filename == __file__  # the warning points at the caller's line
    for report in (grouped, old):
        assert report.to_dict() == named.to_dict()
    # A keyword overrides the value's field; unknown or doubled names are TypeErrors naming what is accepted.
    assert audit(net, n_samples=5, structure_options=StructureOptions(final_layer_name="fc1"),
                 final_layer_name="fc2").structure.final_layer == "fc2.weight"
    with pytest.raises(TypeError, match=r"unexpected keyword argument 'head'; expected one of \['example_input'"):
        audit(net, head="fc1")
    with pytest.raises(TypeError, match="give final_layer_name= only"):
        audit(net, final_layer="fc1", final_layer_name="fc1")
