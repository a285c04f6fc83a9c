"""The audit runner's core: the row store, plan validation, cells, seeding, resuming."""

from __future__ import annotations

import json
import multiprocessing

import pytest
import torch

from prune_landscape import models
from prune_landscape.experiments.plan import Cell, SweepPlan
from prune_landscape.experiments.row import row_metrics, row_table
from prune_landscape.experiments.rowstore import RowStore, check_writable
from prune_landscape.experiments.sweep import audit_cell, fresh_model, run_sweep


def _append_many(directory, worker, count):
    store = RowStore(directory)
    for i in range(count):
        store.append({"key": f"{worker}-{i}", "payload": "x" * 2000})


def test_row_store_keeps_last_row_per_key_and_skips_a_torn_line(tmp_path):
    store = RowStore(tmp_path)
    assert store.rows() == []
    store.append({"key": "a", "value": 1.5})
    store.append({"key": "b", "value": float("nan"), "t": torch.tensor([1, 2])})
    store.append({"key": "a", "value": 2.5})
    with open(store.path, "a") as stream:
        stream.write('{"key": "c", "val')  # a process killed mid-write
    rows = store.rows()
    assert [r["key"] for r in rows] == ["b", "a"]
    assert rows[1]["value"] == 2.5
    assert rows[0]["value"] is None and rows[0]["t"] == [1, 2]  # strict JSON: no NaN; tensors as lists
    with pytest.raises(ValueError, match="needs a 'key'"):
        store.append({"value": 1})


def test_row_store_is_safe_across_processes(tmp_path):
    context = multiprocessing.get_context("fork")
    workers = [context.Process(target=_append_many, args=(tmp_path, w, 25)) for w in range(3)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    lines = (tmp_path / "rows.jsonl").read_text().splitlines()
    assert len(lines) == 75 and all(json.loads(line)["payload"] == "x" * 2000 for line in lines)
    assert len(RowStore(tmp_path).rows()) == 75


@pytest.mark.parametrize(("policy", "text"), [("prune", "prune"), ("dense", "dense"), (0.3, "min_density=0.3"),
                                              ("min_density=0.25", "min_density=0.25"), (1, "min_density=1")])
def test_final_layer_policies_normalise(policy, text):
    assert SweepPlan(methods=("magnitude",), sparsities=(0.5,), final_layer_policies=(policy,)).final_layer_policies == (text,)


@pytest.mark.parametrize("policy", ["sparse", 0.0, 1.5, "min_density=x", None])
def test_bad_final_layer_policy_names_the_choices(policy):
    with pytest.raises(ValueError, match="prune|min density|min_density"):
        SweepPlan(methods=("magnitude",), sparsities=(0.5,), final_layer_policies=(policy,))


def test_cell_keys_and_order():
    plan = SweepPlan(methods=("magnitude", "random"), sparsities=(0.9, 0.98), final_layer_policies=("prune", 0.5), seeds=(0, 3))
    cells = plan.cells()
    assert len(cells) == 2 + 2 * 2 * 2 * 2
    assert cells[0] == Cell("dense", 0.0, "dense", 0) and cells[1].key == "dense|0|dense|3"
    assert cells[2].key == "magnitude|0.9|prune|0" and cells[-1].key == "random|0.98|min_density=0.5|3"
    assert len({c.key for c in cells}) == len(cells)
    no_baseline = SweepPlan(methods=("snip",), sparsities=(0.5,), dense_baseline=False)
    assert [c.key for c in no_baseline.cells()] == ["snip|0.5|prune|0"]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"methods": ("magnitud",)}, r"unknown pruning method 'magnitud'; expected one of \[.*'magnitude'.*\]"),
        ({"methods": ()}, "at least one"),
        ({"sparsities": (1.0,)}, r"in \[0, 1\)"),
        ({"sparsities": ()}, r"in \[0, 1\)"),
        ({"seeds": (-1,)}, "non-negative"),
        ({"scope": "local"}, "scope must be one of"),
        ({"method_options": {"snipp": {}}}, r"method_options for unknown method 'snipp'; expected names from \["),
        ({"epochs": -1}, "epochs must be"),
        ({"lr": 0.0}, "lr must be"),
        ({"probes": ("hesian",)}, r"unknown probe 'hesian'; expected some of \[.*'hessian'"),
        ({"n_samples": 0}, "n_samples"),
    ],
)
def test_plan_rejects_bad_settings_before_any_work(kwargs, message):
    settings = {"methods": ("magnitude",), "sparsities": (0.9,), **kwargs}
    with pytest.raises(ValueError, match=message):
        SweepPlan(**settings)


def test_fresh_model_is_a_function_of_the_seed():
    a, b, c = (fresh_model(lambda: models.mlp([5, 4, 3]), seed) for seed in (1, 1, 2))
    assert torch.equal(a.fc1.weight, b.fc1.weight) and torch.equal(a.fc2.bias, b.fc2.bias)
    assert not torch.equal(a.fc1.weight, c.fc1.weight)


def test_check_writable_fails_clearly(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    with pytest.raises(PermissionError, match="not writable"):
        check_writable(blocker / "report")
    assert check_writable(tmp_path / "new" / "dir").is_dir()


def test_run_sweep_resumes_and_skips_finished_rows(tmp_path):
    """An interrupted sweep keeps its rows; the re-run does only the rest and gives the same numbers."""
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(96, 6, generator=generator)
    y = (x[:, 0] > 0).long() + (x[:, 1] > 0).long()
    plan = SweepPlan(methods=("magnitude", "random"), sparsities=(0.5,), final_layer_policies=("prune", "dense"), epochs=2, lr=0.1,
                     train_options={"batch_size": 32})
    factory = lambda: models.mlp([6, 16, 3])  # noqa: E731
    store = RowStore(tmp_path)
    calls = []

    def stop_after_two(row):
        calls.append(row["key"])
        if len(calls) == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_sweep(plan, factory, (x, y), (x, y), store=store, on_row=[stop_after_two], progress=False, context="c1")
    assert [r["key"] for r in store.rows()] == calls == ["dense|0|dense|0", "magnitude|0.5|prune|0"]
    rest = run_sweep(plan, factory, (x, y), (x, y), store=store, progress=False, context="c1")
    assert [r["key"] for r in rest] == ["magnitude|0.5|dense|0", "random|0.5|prune|0", "random|0.5|dense|0"]
    rows = {r["key"]: r for r in store.rows()}
    assert len(rows) == 5
    # a different context (another model or data) is not confused with finished rows
    again = run_sweep(plan, factory, (x, y), (x, y), store=RowStore(tmp_path), progress=False, context="c2",
                      on_row=[lambda row: None])
    assert len(again) == 5
    # the budget is exact: round((1 - s) * N) kept of N = 6*16 + 16*3 prunable weights
    total = 6 * 16 + 16 * 3
    for key in ("magnitude|0.5|prune|0", "random|0.5|dense|0"):
        assert rows[key]["density"] == pytest.approx(round(0.5 * total) / total)
    assert rows["magnitude|0.5|dense|0"]["final_layer_density"] == 1.0
    assert rows["dense|0|dense|0"]["density"] == 1.0 and rows["dense|0|dense|0"]["final_layer_dense"] is True
    # the same cell from the same seed gives the same row (the re-run under context c2 repeats it)
    assert {r["key"]: r["test_accuracy"] for r in again} == {k: r["test_accuracy"] for k, r in rows.items()}


def test_a_row_is_one_audit_report_plus_its_training_result():
    """Every flat field of a row reads the report it wraps (kept whole under "audit"); the loggers' numbers and
    the raw table are derived from the row, not from key lists of their own."""
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(96, 6, generator=generator)
    y = (x[:, 0] > 0).long() + (x[:, 1] > 0).long()
    plan = SweepPlan(methods=("magnitude",), sparsities=(0.5,), epochs=1, dense_baseline=False,
                     train_options={"batch_size": 32})
    row = audit_cell(plan.cells()[0], plan, lambda: models.mlp([6, 16, 3]), (x, y), (x[:32], y[:32]))
    audit = row["audit"]
    total = 6 * 16 + 16 * 3
    assert row["density"] == audit["density"] == pytest.approx(round(0.5 * total) / total)  # the exact budget
    head = audit["final_layer"]
    assert (row["final_layer"], row["final_layer_density"], row["final_layer_dense"]) == (head["name"], head["density"],
                                                                                          head["dense"])
    assert [row["fan_in_min"], row["fan_in_median"], row["fan_in_max"]] == [head["fan_in"][k] for k in ("min", "median", "max")]
    assert row["fan_in_min"] == min(head["fan_in_per_output"]) and head["name"] == "fc2.weight"
    assert row["n"] == audit["n"] == 96 and row["dead_units"] == audit["dead_units_total"]
    assert (row["landscape"], row["landscape_rules"]) == (audit["landscape"]["verdict"], audit["landscape"]["rules"])
    assert (row["existence"], row["existence_rules"]) == (audit["existence"]["verdict"], audit["existence"]["rules"])
    assert row["layer_densities"] == {layer["name"]: layer["density"] for layer in audit["layers"]}
    assert len(row["epoch_losses"]) == 1 and 0.0 <= row["test_accuracy"] <= 1.0
    assert row_metrics(row) == {**row["metrics"], **{k: row[k] for k in ("train_loss", "train_accuracy", "test_loss",
                                                                         "test_accuracy")}}
    columns, data = row_table([row])
    assert {"audit", "metrics", "probes", "baseline", "layer_densities"}.isdisjoint(columns)  # nested: not flat
    assert columns[:5] == ["key", "method", "sparsity", "final_layer_policy", "seed"]
    assert data[0][columns.index("collapsed_layers")] == ", ".join(row["collapsed_layers"])
    assert data[0][columns.index("test_accuracy")] == row["test_accuracy"]


def test_row_table_keeps_only_fields_flat_in_every_row():
    rows = [{"key": "a", "remedy": None, "rules": ["NL-4", "WD"], "x": 1.5},
            {"key": "b", "remedy": {"text": "keep fc3 dense"}, "rules": [], "x": None}]
    assert row_table(rows) == (["key", "rules", "x"], [["a", "NL-4, WD", 1.5], ["b", "", None]])
    assert row_table([]) == ([], [])


def test_cell_final_layer_policy_keeps_the_old_name_with_a_warning():
    cell = Cell("snip", 0.98, "dense", 0)
    assert cell.final_layer_policy == "dense" and cell.key == "snip|0.98|dense|0"
    with pytest.warns(DeprecationWarning, match="use Cell.final_layer_policy"):
        assert cell.final_layer == "dense"


def test_sweep_plan_final_layers_is_the_deprecated_name_of_final_layer_policies():
    with pytest.warns(DeprecationWarning, match=r"SweepPlan: final_layers= is deprecated; use final_layer_policies="):
        plan = SweepPlan(methods=("magnitude",), sparsities=(0.5,), final_layers=("dense", 0.25))
    assert plan.final_layer_policies == ("dense", "min_density=0.25")
    with pytest.warns(DeprecationWarning, match=r"SweepPlan.final_layers is deprecated"):
        assert plan.final_layers == plan.final_layer_policies
    with pytest.raises(ValueError, match=r"give final_layer_policies= only"):
        SweepPlan(methods=("magnitude",), sparsities=(0.5,), final_layers=("dense",), final_layer_policies=("prune",))
