"""LandscapeAudit on LightningModules as users write them (issue #16), in both Lightning namespaces: no
forward, a forward returning a dict, a teacher and a student; pruned by Lightning's ModelPruning and by this
package's pruners. The masks are checked against the pruning buffers (or a hand-computed global magnitude
mask), the CSV scalars against the masks, and the report's run section against the choice made."""

import csv
import json
import warnings

import pytest
import torch

from _lightning_namespaces import NAMESPACES, data, namespace, trainer
from prune_landscape.integrations.callbacks import LandscapeAudit, PruneAtInit
from prune_landscape.integrations.lit import LitClassifier
from prune_landscape import models
from prune_landscape.audit import audit as audit_function


class _Buffers:
    """Callback listed after the pruner: the torch.nn.utils.prune mask buffers at each epoch end, read raw."""

    def __init__(self, base):
        class Snapshot(base):
            def __init__(self):
                self.seen = []

            def on_train_epoch_end(self, trainer, pl_module):
                self.seen.append({n: b.clone() for n, b in pl_module.named_buffers() if n.endswith("_mask")})

        self.callback = Snapshot()

    @property
    def last(self):
        return self.callback.seen[-1]


def _csv(path):
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def _last(rows, key):
    values = [float(row[key]) for row in rows if row.get(key)]
    return values[-1]


def _audit_warnings(record):
    return [w for w in record if "cannot choose the network" in str(w.message)]


@pytest.mark.parametrize("ns_name", NAMESPACES)
def test_issue_run_without_forward_modelpruning_and_csvlogger(tmp_path, ns_name, capsys):
    """The run of issue #16: ModelPruning('l1_unstructured', amount=0.5) + LandscapeAudit() + CSVLogger."""
    ns = namespace(ns_name)
    torch.manual_seed(0)
    module = ns.NoForward()
    buffers = _Buffers(ns.pl.Callback)
    audit = LandscapeAudit()
    logger = ns.CSVLogger(tmp_path, name="csv")
    fit = trainer(ns, tmp_path, [ns.ModelPruning("l1_unstructured", amount=0.5, verbose=0), buffers.callback, audit], logger=logger)
    fit.fit(module, data())

    assert fit.current_epoch == 2 and fit.state.finished
    masks = buffers.last  # ModelPruning's own buffers after its last pruning step
    final_density = masks["net.fc2.weight_mask"].float().mean().item()
    weights_kept = masks["net.fc1.weight_mask"].sum().item() + masks["net.fc2.weight_mask"].sum().item()
    assert 0 < final_density < 1

    rows = _csv(tmp_path / "csv" / "version_0" / "metrics.csv")
    assert _last(rows, "audit/final_layer/density") == pytest.approx(final_density)
    assert _last(rows, "audit/density") == pytest.approx(weights_kept / (48 + 24))
    assert {"audit/final_layer/fan_in_min", "audit/final_layer/dense", "audit/final_layer/last_hidden_width"} <= set(rows[0])

    report = json.loads((tmp_path / "csv" / "version_0" / "report.json").read_text())
    assert report["final_layer"]["name"] == "fc2.weight" and report["final_layer"]["density"] == pytest.approx(final_density)
    assert report["run"]["network"]["name"] == "net" and report["run"]["network"]["rule"] == "single child"
    assert "defines no forward" in report["run"]["network"]["reason"] and report["run"]["interrupted"] is None
    assert "## Run" in (tmp_path / "csv" / "version_0" / "report.md").read_text()
    printed = [line for line in capsys.readouterr().out.splitlines() if line.startswith("LandscapeAudit:")]
    assert printed == ["LandscapeAudit: auditing 'net' (rule: single child; NoForward defines no forward; 'net' holds every prunable weight)"]


def _global_magnitude_mask(weights, sparsity):
    """Global magnitude pruning by hand (float64): keep the round((1 - s) * N) largest |w|."""
    flat = torch.cat([w.detach().double().abs().reshape(-1) for w in weights.values()])
    keep = round((1 - sparsity) * flat.numel())
    threshold = flat.sort(descending=True).values[keep - 1]
    return {name: w.detach().double().abs() >= threshold for name, w in weights.items()}


@pytest.mark.parametrize("ns_name", NAMESPACES)
def test_forward_returning_a_dict_with_this_packages_pruner(tmp_path, ns_name):
    ns = namespace(ns_name)
    torch.manual_seed(1)
    module = ns.DictForward()
    expected = _global_magnitude_mask({"fc1.weight": module.net.fc1.weight, "fc2.weight": module.net.fc2.weight}, 0.5)
    audit = LandscapeAudit()
    trainer(ns, tmp_path, [PruneAtInit("magnitude", 0.5), audit], logger=ns.CSVLogger(tmp_path, name="csv")).fit(module, data())

    assert audit.choice.name == "net" and audit.choice.rule == "single child"
    assert "forward returns a dict" in audit.choice.reason
    assert audit.last_masks["fc2.weight"].equal(expected["fc2.weight"])
    assert audit.records[0].metrics["audit/final_layer/density"] == pytest.approx(expected["fc2.weight"].double().mean().item())
    rows = _csv(tmp_path / "csv" / "version_0" / "metrics.csv")
    assert _last(rows, "audit/final_layer/density") == pytest.approx(expected["fc2.weight"].double().mean().item())
    assert _last(rows, "audit/density") == pytest.approx(0.5)


@pytest.mark.parametrize("ns_name", NAMESPACES)
@pytest.mark.parametrize("pruner", ["ModelPruning", "PruneAtInit"])
def test_teacher_and_student_undecided_warns_once_and_writes_what_it_can(tmp_path, ns_name, pruner):
    ns = namespace(ns_name)
    torch.manual_seed(2)
    module = ns.TeacherStudent()
    pruning = ns.ModelPruning("l1_unstructured", amount=0.5, verbose=0) if pruner == "ModelPruning" else PruneAtInit("magnitude", 0.5)
    buffers = _Buffers(ns.pl.Callback)
    audit = LandscapeAudit()
    logger = ns.CSVLogger(tmp_path, name="csv")
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        fit = trainer(ns, tmp_path, [pruning, buffers.callback, audit], logger=logger)
        fit.fit(module, data())
    assert fit.current_epoch == 2  # training went on
    (warning,) = _audit_warnings(record)
    assert "LandscapeAudit(network='student' or network='teacher')" in str(warning.message)
    assert not audit.choice.decided

    # What it could: densities of every masked tensor and the final layer by parameter order.
    final = buffers.last["student.fc2.weight_mask"]
    report = json.loads((tmp_path / "csv" / "version_0" / "report.json").read_text())
    assert report["status"] == "partial" and report["run"]["network"]["rule"] == "undecided"
    # One schema: the partial report's keys are the full report's (plus why it is partial).
    full = audit_function(models.mlp([6, 8, 3])).to_dict()
    assert set(report) - {"reason", "run"} <= set(full) and full["status"] == "complete"
    assert set(report["final_layer"]) - {"found_by"} <= set(full["final_layer"])
    assert report["final_layer"]["name"] == "student.fc2.weight" and report["final_layer"]["found_by"] == "parameter order"
    assert report["final_layer"]["density"] == pytest.approx(final.float().mean().item())
    layers = {layer["name"]: layer for layer in report["layers"]}
    for name in ("teacher.fc1.weight", "teacher.fc2.weight", "student.fc1.weight"):
        assert layers[name]["kept"] == int(buffers.last[name + "_mask"].sum())
    rows = _csv(tmp_path / "csv" / "version_0" / "metrics.csv")
    assert _last(rows, "audit/final_layer/density") == pytest.approx(final.float().mean().item())
    assert _last(rows, "audit/partial") == 1.0


@pytest.mark.parametrize("ns_name", NAMESPACES)
@pytest.mark.parametrize("pruner", ["ModelPruning", "PruneAtInit"])
def test_teacher_and_student_with_the_network_argument(tmp_path, ns_name, pruner):
    ns = namespace(ns_name)
    torch.manual_seed(3)
    module = ns.TeacherStudent()
    pruning = ns.ModelPruning("l1_unstructured", amount=0.5, verbose=0) if pruner == "ModelPruning" else PruneAtInit("magnitude", 0.5)
    buffers = _Buffers(ns.pl.Callback)
    audit = LandscapeAudit(network="student" if pruner == "ModelPruning" else (lambda m: m.student))
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        trainer(ns, tmp_path, [pruning, buffers.callback, audit], logger=ns.CSVLogger(tmp_path, name="csv")).fit(module, data())
    assert not _audit_warnings(record)
    assert audit.choice.name == "student" and audit.choice.rule == "argument"
    final = buffers.last["student.fc2.weight_mask"]
    report = json.loads((tmp_path / "csv" / "version_0" / "report.json").read_text())
    assert report["final_layer"]["name"] == "fc2.weight"
    assert report["final_layer"]["density"] == pytest.approx(final.float().mean().item())
    assert report["kept"] == int(buffers.last["student.fc1.weight_mask"].sum() + final.sum())


@pytest.mark.parametrize("ns_name", NAMESPACES)
def test_teacher_and_student_where_only_the_student_is_pruned_is_chosen_automatically(tmp_path, ns_name):
    ns = namespace(ns_name)
    torch.manual_seed(4)
    module = ns.TeacherStudent()
    student = module.student
    pruning = ns.ModelPruning(
        "l1_unstructured", amount=0.5, parameters_to_prune=[(student.fc1, "weight"), (student.fc2, "weight")], verbose=0
    )
    buffers = _Buffers(ns.pl.Callback)
    audit = LandscapeAudit()
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        trainer(ns, tmp_path, [pruning, buffers.callback, audit]).fit(module, data())
    # Before any pruning both networks' weights count (undecided, no warning yet); once only the student
    # carries masks, it is the single child holding every pruned weight. forward runs the student only,
    # so it does not describe the whole module.
    assert not _audit_warnings(record)
    assert audit.choice.rule == "single child" and audit.choice.name == "student"
    assert "forward does not reach the weights ['teacher.fc1.weight'" in audit.choice.reason
    assert audit.last_masks["fc2.weight"].equal(buffers.last["student.fc2.weight_mask"].bool())
    assert audit.records[-1].metrics["audit/final_layer/density"] == pytest.approx(buffers.last["student.fc2.weight_mask"].float().mean().item())


def test_a_working_forward_is_the_network_and_a_wrong_name_fails_at_setup(tmp_path):
    ns = namespace("pytorch_lightning")
    audit = LandscapeAudit()
    trainer(ns, tmp_path, [audit], epochs=1).fit(LitClassifier(models.mlp([6, 8, 3]), lr=0.05), data())
    assert audit.choice.rule == "forward" and audit.choice.name == "" and "model.fc2.weight" in audit.last_masks

    fit = trainer(ns, tmp_path / "second", [LandscapeAudit(network="studnet")], epochs=1)
    with pytest.raises(ValueError, match=r"network='studnet' is not a submodule of TeacherStudent; expected one of \['teacher', 'student'\]"):
        fit.fit(ns.TeacherStudent(), data())
    assert fit.global_step == 0 and not list(tmp_path.joinpath("second").rglob("report.json"))  # a setup error leaves no report


@pytest.mark.parametrize("ns_name", NAMESPACES)
def test_this_packages_pruners_that_need_a_forward_prune_a_module_without_one(tmp_path, ns_name):
    """SNIP and a dense final layer run a forward: through the chosen network, not the LightningModule."""
    from prune_landscape.integrations.callbacks import GradualMagnitudePruning, IterativeMagnitudePruning
    from prune_landscape.pruning import GradualSchedule, IMPSchedule

    ns = namespace(ns_name)
    for pruner in (
        PruneAtInit("snip", 0.5, final_layer_policy="dense"),
        GradualMagnitudePruning(GradualSchedule(0.5, 0, 4, 2), final_layer_policy="dense"),
        IterativeMagnitudePruning(IMPSchedule(rounds=1, rate=0.5), final_layer_policy="dense"),
    ):
        torch.manual_seed(5)
        module = ns.NoForward()
        audit = LandscapeAudit()
        trainer(ns, tmp_path, [pruner, audit]).fit(module, data())
        assert pruner._choice.name == "net" and audit.choice.name == "net"
        # 36 of the 72 weights kept; the 24 of the final layer all among them.
        assert int(module.net.fc2.weight_mask.sum()) == 24 and int(module.net.fc1.weight_mask.sum()) == 12
        assert audit.records[-1].metrics["audit/final_layer/density"] == 1.0
        assert audit.records[-1].metrics["audit/density"] == pytest.approx(0.5)


def test_this_packages_pruners_prune_only_the_named_network(tmp_path):
    ns = namespace("lightning.pytorch")
    torch.manual_seed(6)
    module = ns.TeacherStudent()
    teacher = {name: p.clone() for name, p in module.teacher.named_parameters()}
    expected = _global_magnitude_mask({"fc1.weight": module.student.fc1.weight, "fc2.weight": module.student.fc2.weight}, 0.75)
    audit = LandscapeAudit(network="student")
    trainer(ns, tmp_path, [PruneAtInit("magnitude", 0.75, network="student"), audit]).fit(module, data())
    assert not any(name.endswith("_orig") for name, _ in module.teacher.named_parameters())
    assert all(torch.equal(p, teacher[name]) for name, p in module.teacher.named_parameters())
    assert module.student.fc1.weight_mask.bool().equal(expected["fc1.weight"])
    assert module.student.fc2.weight_mask.bool().equal(expected["fc2.weight"])
    assert audit.records[0].metrics["audit/density"] == pytest.approx(18 / 72)
    assert set(audit.last_masks) == {"fc1.weight", "fc2.weight"}
    assert all(audit.last_masks[name].equal(expected[name]) for name in expected)
