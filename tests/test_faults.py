"""Fault injection: torn files, kills mid-write, diverged (NaN) models, failing probes, loggers and hooks,
unwritable directories, Ctrl-C, bad files and bad inputs, and resume from checkpoints. Every fault must
leave a finished run (or one clear error before any work), a written report, and no lost row.

The README's fault table is this file's tally (``FAULTS`` below lists what each test injects).
"""

from __future__ import annotations

import json
import math
import os
import stat
import sys
import warnings

import pytest
import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import ModelCheckpoint

from prune_landscape import MaskSet, models
from prune_landscape.integrations.callbacks import GradualMagnitudePruning, IterativeMagnitudePruning
from prune_landscape.integrations.datamodules import DataModule, EpochShuffleSampler
from prune_landscape.integrations.lit import LitClassifier
from prune_landscape.pruning import GradualSchedule, IMPSchedule


# ------------------------------------------------------------------------------------------ resume
def _datamodule():
    return DataModule("teacher_student", batch_size=16, n=64, n_test=16, d=6, outputs=3, task="classification",
                      widths=[8], seed=3)


def _own_loader():
    """A user's own DataLoader (no DataModule): shuffled by EpochShuffleSampler, as the README advises (with
    ``shuffle=True`` instead, the order comes from torch's global RNG, which no checkpoint holds, and this
    resume test fails)."""
    generator = torch.Generator().manual_seed(3)
    x = torch.randn(64, 6, generator=generator)
    dataset = torch.utils.data.TensorDataset(x, (x[:, 0] > 0).long() + (x[:, 1] > 0).long())
    return torch.utils.data.DataLoader(dataset, batch_size=16, sampler=EpochShuffleSampler(len(dataset), seed=7))


def _fit(tmp_path, callbacks, *, epochs, ckpt_path=None, checkpoint=None, seed=0, own_loader=False):
    torch.manual_seed(seed)
    lit = LitClassifier(models.mlp([6, 12, 3]), lr=0.05, momentum=0.9, weight_decay=1e-3, epochs=None)
    trainer = pl.Trainer(max_epochs=epochs, callbacks=[*callbacks, *([checkpoint] if checkpoint else [])], logger=False,
                         enable_progress_bar=False, enable_model_summary=False, default_root_dir=tmp_path,
                         enable_checkpointing=checkpoint is not None, deterministic=True)
    if own_loader:
        trainer.fit(lit, train_dataloaders=_own_loader(), ckpt_path=ckpt_path)
    else:
        trainer.fit(lit, datamodule=_datamodule(), ckpt_path=ckpt_path)
    return lit


def _state(lit):
    return {k: v.detach().clone() for k, v in lit.state_dict().items()}


@pytest.mark.parametrize(("pipeline", "own_loader"), [("gradual", False), ("imp", False), ("gradual", True)])
def test_resume_from_an_epoch_boundary_is_bit_identical_with_the_packages_datamodule(tmp_path, pipeline, own_loader):
    """With the package's DataModule, or a user's own DataLoader whose sampler is EpochShuffleSampler."""
    def callbacks():
        if pipeline == "gradual":
            return [GradualMagnitudePruning(GradualSchedule(final_sparsity=0.8, start_step=0, end_step=14, frequency=2))]
        return [IterativeMagnitudePruning(IMPSchedule(rounds=2, rewind_step=2), epochs_per_round=1)]

    full = _fit(tmp_path / "full", callbacks(), epochs=3, own_loader=own_loader)
    checkpoint = ModelCheckpoint(dirpath=tmp_path / "ckpt", save_last=True)
    _fit(tmp_path / "a", callbacks(), epochs=2, checkpoint=checkpoint, own_loader=own_loader)
    resumed = _fit(tmp_path / "b", callbacks(), epochs=3, ckpt_path=str(tmp_path / "ckpt" / "last.ckpt"), seed=99,
                   own_loader=own_loader)
    assert MaskSet.from_module(resumed, source="hooks") == MaskSet.from_module(full, source="hooks")
    reference, state = _state(full), _state(resumed)
    assert sorted(state) == sorted(reference)
    for key in reference:  # bit for bit: same batches in the same order after the resume
        assert torch.equal(state[key], reference[key]), key


def test_a_plain_shuffled_loader_does_not_resume_bit_identically(tmp_path, monkeypatch):
    """Why the README points own loaders at EpochShuffleSampler: ``shuffle=True`` draws each epoch's order
    from torch's global RNG, which the checkpoint does not hold, so the resumed run trains on other batches."""
    dataset = _own_loader().dataset

    def plain_loader():
        return torch.utils.data.DataLoader(dataset, batch_size=16, shuffle=True)

    monkeypatch.setattr(sys.modules[__name__], "_own_loader", plain_loader)
    full = _fit(tmp_path / "full", [], epochs=3, own_loader=True)
    checkpoint = ModelCheckpoint(dirpath=tmp_path / "ckpt", save_last=True)
    _fit(tmp_path / "a", [], epochs=2, checkpoint=checkpoint, own_loader=True)
    resumed = _fit(tmp_path / "b", [], epochs=3, ckpt_path=str(tmp_path / "ckpt" / "last.ckpt"), seed=99, own_loader=True)
    reference, state = _state(full), _state(resumed)
    assert any(not torch.equal(state[key], reference[key]) for key in reference)


def test_epoch_sampler_orders_are_a_function_of_seed_and_epoch():
    sampler = EpochShuffleSampler(10, seed=4)
    epochs = [list(sampler) for _ in range(3)]
    assert all(sorted(order) == list(range(10)) for order in epochs)
    assert epochs[0] != epochs[1] != epochs[2]
    again = EpochShuffleSampler(10, seed=4)
    again.set_epoch(2)  # what Lightning does after restoring a checkpoint at epoch 2
    assert list(again) == epochs[2]
    assert list(EpochShuffleSampler(10, seed=5)) != epochs[0]


# ------------------------------------------------------------------------------------ sweep faults
from prune_landscape.pruning import registry  # noqa: E402
from prune_landscape.experiments.plan import SweepPlan  # noqa: E402
from prune_landscape.experiments.rowstore import RowStore, safe_name  # noqa: E402
from prune_landscape.experiments.sweep import run_sweep  # noqa: E402


def _task(n=96, seed=0):
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 6, generator=generator)
    return x, (x[:, 0] > 0).long() + (x[:, 1] > 0).long()


def _factory():
    return models.mlp([6, 16, 3])


@pytest.fixture
def scratch_registry(monkeypatch):
    """Methods registered by a test vanish after it."""
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))


def test_torn_last_line_is_moved_aside_and_the_next_row_is_not_lost(tmp_path):
    store = RowStore(tmp_path)
    store.append({"key": "a", "value": 1})
    with open(store.path, "a") as stream:
        stream.write('{"key": "b", "val')  # killed mid-write (or the disk filled)
    assert store.torn
    with pytest.warns(RuntimeWarning, match="torn"):
        store.append({"key": "c", "value": 3})
    assert [r["key"] for r in store.rows()] == ["a", "c"] and not store.torn
    assert (tmp_path / "rows.jsonl.torn").read_text() == '{"key": "b", "val\n'
    # a store whose only line is torn
    lone = RowStore(tmp_path / "lone")
    lone.path.parent.mkdir()
    lone.path.write_text('{"key": "x"')
    with pytest.warns(RuntimeWarning):
        lone.append({"key": "y"})
    assert [r["key"] for r in lone.rows()] == ["y"]
    # killed between the row and its newline: the row is whole and kept
    whole = RowStore(tmp_path / "whole")
    whole.path.parent.mkdir()
    whole.path.write_text('{"key": "p", "v": 1}\n{"key": "q", "v": 2}')
    whole.append({"key": "r"})
    assert [r["key"] for r in whole.rows()] == ["p", "q", "r"]


def test_a_sweep_killed_mid_write_loses_no_row_on_rerun(tmp_path):
    plan = SweepPlan(methods=("magnitude", "random"), sparsities=(0.5,), epochs=1, train_options={"batch_size": 32})
    store = RowStore(tmp_path)
    run_sweep(plan, _factory, _task(), store=store, progress=False)
    lines = store.path.read_bytes().splitlines(keepends=True)
    assert len(lines) == 3
    store.path.write_bytes(b"".join(lines[:-1]) + lines[-1][: len(lines[-1]) // 2])  # the last row half-written
    with pytest.warns(RuntimeWarning, match="torn"):
        redone = run_sweep(plan, _factory, _task(), store=store, progress=False)
    assert [r["key"] for r in redone] == ["random|0.5|prune|0"]  # the torn row is run again
    assert sorted(r["key"] for r in store.rows()) == ["dense|0|dense|0", "magnitude|0.5|prune|0", "random|0.5|prune|0"]


def test_a_failing_cell_is_recorded_the_sweep_goes_on_and_a_rerun_retries_it(tmp_path, scratch_registry):
    def explode(model, masks, data, generator):
        raise RuntimeError("scorer blew up")

    registry.register_pruner("explode", explode)
    plan = SweepPlan(methods=("explode", "magnitude"), sparsities=(0.5,), epochs=0)
    store = RowStore(tmp_path)
    with pytest.warns(RuntimeWarning, match="row explode.0.5.prune.0 failed .RuntimeError: scorer blew up"):
        rows = run_sweep(plan, _factory, _task(), store=store, progress=False)
    assert [r["key"] for r in rows] == ["dense|0|dense|0", "explode|0.5|prune|0", "magnitude|0.5|prune|0"]
    failed = rows[1]
    assert failed["status"] == "failed" and failed["error"] == "RuntimeError: scorer blew up"
    assert "scorer blew up" in failed["traceback"]
    registry.register_pruner("explode", lambda model, masks, data, generator: {n: torch.rand(m.shape, generator=generator)
                                                                               for n, m in masks.items()}, overwrite=True)
    retried = run_sweep(plan, _factory, _task(), store=store, progress=False)
    assert [r["key"] for r in retried] == ["explode|0.5|prune|0"] and "status" not in retried[0]


def test_a_diverged_model_with_the_hessian_probe_finishes_every_row(tmp_path):
    # lr 1e30 makes every trained model's weights NaN; the Hessian probe must fail per row, not end the sweep
    plan = SweepPlan(methods=("magnitude",), sparsities=(0.5,), epochs=1, lr=1e30, train_options={"batch_size": 96},
                     probes=("hessian", "final_layer_gap"))
    store = RowStore(tmp_path)
    with pytest.warns(RuntimeWarning, match="probe 'hessian' failed"):
        rows = run_sweep(plan, _factory, _task(), store=store, progress=False)
    assert len(rows) == 2 and all(r.get("status") != "failed" for r in rows)
    for row in rows:
        assert "diverged" in row["probe_errors"]["hessian"] and "hessian" not in row["probes"]
        assert row["train_loss"] is None  # NaN after training (strict JSON has no NaN)


def test_the_hessian_of_a_diverged_model_is_a_clear_error_not_arpack():
    from prune_landscape.probes import hessian_spectrum

    net = _factory()
    with torch.no_grad():
        net.fc1.weight[0, 0] = float("nan")
    with pytest.raises(ValueError, match=r"non-finite weights in \['fc1.weight'\] \(it diverged\)"):
        hessian_spectrum(net, _task(), k=3)
    with pytest.raises(ValueError, match="chunk must be a positive int.*got 0"):
        hessian_spectrum(_factory(), _task(), k=3, chunk=0)


def test_a_failing_hook_does_not_end_the_sweep(tmp_path):
    plan = SweepPlan(methods=("magnitude",), sparsities=(0.5,), epochs=0)

    def broken_logger(row):
        raise OSError("disk full")

    with pytest.warns(RuntimeWarning, match="on_row callback failed.*disk full"):
        rows = run_sweep(plan, _factory, _task(), store=RowStore(tmp_path), on_row=[broken_logger], progress=False)
    assert len(rows) == 2 and len(RowStore(tmp_path).rows()) == 2


def test_names_cannot_escape_the_figure_directory(tmp_path, scratch_registry):
    registry.register_pruner("../../x", lambda model, masks, data, generator: {n: torch.ones(m.shape) for n, m in masks.items()})
    plan = SweepPlan(methods=("../../x",), sparsities=(0.5,), epochs=0, probes=("final_layer_gap",), dense_baseline=False)
    out = tmp_path / "deep" / "run"
    rows = run_sweep(plan, _factory, _task(), store=RowStore(out), progress=False)  # figures: <store>/figures
    written = [p for p in tmp_path.rglob("*.png")]
    assert written and all(p.parent == out / "figures" for p in written)
    assert rows[0]["figures"]["final_layer_gap"] == "figures/x_0.5_prune_0_final_layer_gap.png"
    assert safe_name("..") == "unnamed" and "/" not in safe_name("a/../../b")


def test_report_markdown_escapes_raw_html_and_files_are_readable_by_others(tmp_path):
    from prune_landscape.experiments.html import render_report

    row = {"key": "k", "method": "<img src=x onerror=alert(1)>", "sparsity": 0.5, "final_layer_policy": "prune",
           "seed": 0, "density": 0.5, "final_layer": "fc2.weight", "final_layer_density": 0.5, "final_layer_dense": False,
           "fan_in_min": 3, "n": 10, "dead_units": 0, "collapsed_layers": [], "landscape": "RISKY",
           "existence": "UNKNOWN", "train_accuracy": 0.5, "test_accuracy": 0.5, "layer_densities": {"fc1.weight": 0.5}}
    paths = render_report([row], tmp_path, meta={"note": "<script>x</script>"})
    markdown = paths["markdown"].read_text()
    assert "<img" not in markdown and "&lt;img src=x onerror=alert(1)>" in markdown
    assert "<script>" not in markdown
    for path in paths.values():
        assert stat.S_IMODE(path.stat().st_mode) == 0o644, path


# ------------------------------------------------------------------------------------- bad inputs
def test_data_the_model_cannot_take_is_named_before_any_row(tmp_path):
    plan = SweepPlan(methods=("magnitude",), sparsities=(0.5,), epochs=1)
    x, y = _task()
    with pytest.raises(ValueError, match=r"labels must be in \[0, 2\] for a model with 3 outputs \(classes\), got labels in \[0, 7\]"):
        run_sweep(plan, _factory, (x, y.clone().fill_(7).index_fill_(0, torch.tensor([0]), 0)), store=RowStore(tmp_path),
                  progress=False)
    with pytest.raises(ValueError, match=r"expected \(N, \.\.\., 6\) float inputs .*Linear\(6, \.\.\.\).*got inputs of shape "
                                         r"\(N, 5\) float32"):
        run_sweep(plan, _factory, (torch.randn(10, 5), y[:10]), store=RowStore(tmp_path), progress=False)
    with pytest.raises(ValueError, match=r"got inputs of shape \(N, 6\) int64"):
        run_sweep(plan, _factory, (x.long(), y), store=RowStore(tmp_path), progress=False)
    assert not (tmp_path / "rows.jsonl").exists()


def test_the_api_names_the_expected_input_shape_and_label_range():
    from prune_landscape import audit, prune
    from prune_landscape.training import train

    net = _factory()
    x, y = _task(20)
    wrong = (torch.randn(20, 5), y)
    for call, purpose in [(lambda: audit(net, wrong), "audit data"), (lambda: prune(net, "snip", 0.5, wrong), "prune data"),
                          (lambda: train(net, wrong, epochs=1), "train data")]:
        with pytest.raises(ValueError, match=rf"^{purpose}: the model does not accept these inputs: expected \(N, \.\.\., 6\) "
                                             rf"float inputs \(the first layer is Linear\(6, \.\.\.\)\), got inputs of shape "
                                             rf"\(N, 5\) float32"):
            call()
    with pytest.raises(ValueError, match=r"got inputs of shape \(N, 6\) int64 \(mat1 and mat2 must have the same dtype"):
        prune(net, "snip", 0.5, (x.long(), y))
    with pytest.raises(ValueError, match=r"^train data: labels must be in \[0, 2\] for a model with 3 outputs \(classes\), "
                                         r"got labels in \[5, 7\]$"):
        train(net, (x, y + 5), epochs=1)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    with pytest.raises(ValueError, match="weight_decay must be a number >= 0 and finite, got nan"):
        audit(net, (x, y), weight_decay=float("nan"))
    assert all(torch.equal(v, before[k]) for k, v in net.state_dict().items())  # nothing trained or changed


def test_a_probe_name_given_as_a_string_is_one_probe():
    from prune_landscape import audit

    x, y = _task()
    report = audit(_factory(), (x, y), probes="final_layer_gap")
    assert list(report.probes) == ["final_layer_gap"]
    assert SweepPlan(methods=("magnitude",), sparsities=(0.5,), probes="hessian").probes == ("hessian",)


def test_plan_checks_option_names_and_training_settings_before_work():
    for kwargs, message in [
        ({"method_options": {"snip": {"prune_sample": 3}}}, r"method_options.snip: unknown option 'prune_sample'; expected some of \[.*'prune_samples'"),
        ({"train_options": {"optimizer": "adamm"}}, r"fit.optimizer: expected one of \['sgd', 'adam'\], got 'adamm'"),
        ({"train_options": {"loss": "hinge"}}, r"fit.loss: expected one of \['cross_entropy', 'mse'\], got 'hinge'"),
        ({"train_options": {"batch_size": 0}}, "fit.batch_size: expected a positive int or null, got 0"),
        ({"train_options": {"weight_decay": float("nan")}}, "fit.weight_decay: expected a finite number >= 0, got nan"),
        ({"train_options": {"batchsize": 3}}, r"fit.batchsize: unknown training option; expected some of \[.*'batch_size'"),
    ]:
        with pytest.raises(ValueError, match=message):
            SweepPlan(methods=("magnitude",), sparsities=(0.5,), **kwargs)


def _safetensors(path, tensors, metadata):
    from safetensors.torch import save_file

    save_file(tensors, str(path), metadata=metadata)
    return path


def test_maskset_load_rejects_bad_files_with_the_path(tmp_path):
    net = models.mlp([4, 3, 2])
    good = {"fc1.weight": torch.ones(3, 4, dtype=torch.bool), "fc2.weight": torch.ones(2, 3, dtype=torch.bool)}
    meta = {"format": "prune_landscape.MaskSet", "version": "1", "inferred": "false"}
    corrupt = tmp_path / "corrupt.safetensors"
    corrupt.write_bytes(b"\x00\x01garbage" * 10)
    cases = [
        (corrupt, r"corrupt.safetensors is not a readable prune_landscape.MaskSet file"),
        (_safetensors(tmp_path / "foreign.safetensors", {"w": torch.zeros(2)}, {}),
         r"foreign.safetensors is not a prune_landscape.MaskSet file: expected format metadata .*got None"),
        (_safetensors(tmp_path / "v9.safetensors", good, {**meta, "version": "9"}),
         r"v9.safetensors: unknown prune_landscape.MaskSet format version '9'; this version reads '1'"),
        (_safetensors(tmp_path / "inferred.safetensors", good, {**meta, "inferred": "yes"}),
         r"inferred.safetensors: metadata 'inferred' must be 'true' or 'false', got 'yes'"),
        (_safetensors(tmp_path / "truthy.safetensors", good, {**meta, "inferred": '"true"'}), "must be 'true' or 'false'"),
        (_safetensors(tmp_path / "float.safetensors", {"fc1.weight": torch.ones(3, 4)}, meta),
         r"float.safetensors: masks must be bool tensors, got torch.float32 for 'fc1.weight'"),
        (_safetensors(tmp_path / "partial.safetensors", {"fc1.weight": good["fc1.weight"]}, meta),
         r"partial.safetensors: no mask for the model's prunable parameters \['fc2.weight'\].*strict=False"),
    ]
    for path, message in cases:
        with pytest.raises(ValueError, match=message):
            MaskSet.load(path, net)
    partial = MaskSet.load(tmp_path / "partial.safetensors", net, strict=False)
    assert list(partial) == ["fc1.weight"]
    assert MaskSet.load(MaskSet(good).save(tmp_path / "ok.safetensors"), net) == MaskSet(good)


# -------------------------------------------------------------------------------------- CLI faults
import signal  # noqa: E402
import subprocess  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

from hydra import compose, initialize_config_dir  # noqa: E402

from prune_landscape.integrations.cli import CONF_DIR, UsageError, run_audit  # noqa: E402
from prune_landscape.integrations.cli_loggers import wandb_offline_if_unreachable  # noqa: E402
from prune_landscape.integrations.cli_train import app as train_app  # noqa: E402

SCRIPT = Path(sys.executable).parent / "prune-landscape"
TINY = ["audit.methods=[magnitude]", "audit.sparsities=[0.9]", "data.max_samples=120", "data.batch_size=40",
        "model.widths=[64,32,10]", "fit.epochs=1", "audit.progress=false", "torch_threads=1"]


class FakeWandbLogger:
    """Records what the audit sends to a W&B logger (the name is what the CLI recognises)."""

    calls: list[tuple[str, object]] = []

    def __init__(self, **_: object):
        FakeWandbLogger.calls = []
        self.experiment = type("Run", (), {"summary": {}})()

    def log_metrics(self, metrics, step=None):
        self.calls.append(("log_metrics", dict(metrics)))

    def log_table(self, key, columns, data):
        self.calls.append(("log_table", (key, len(columns), len(data))))

    def log_image(self, key, images, caption=None):
        self.calls.append(("log_image", (key, len(images))))

    def save(self):
        self.calls.append(("save", None))

    def finalize(self, status):
        self.calls.append(("finalize", status))


class ExplodingLogger:
    """A logger whose every call fails (a lost connection, a full disk)."""

    def __init__(self, **_: object):
        pass

    def __getattr__(self, name):
        def fail(*args, **kwargs):
            raise ConnectionError(f"{name}: server gone")

        return fail


@pytest.fixture
def hydra_conf():
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        yield


def _audit_cfg(directory, *overrides):
    return compose("audit", overrides=[f"output_dir={directory}", *TINY, *overrides])


def test_cli_mistakes_are_reported_in_one_line_fast_and_leave_no_folder(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1]), "HYDRA_FULL_ERROR": "0"}
    for mistake, message in [("fit.optimizer=adamm", "fit.optimizer: expected one of ['adam', 'sgd'], got 'adamm'"),
                             ("fit.loss=hinge", "fit.loss: expected one of ['cross_entropy', 'mse'], got 'hinge'"),
                             ("data.batch_size=0", "data.batch_size: expected a positive int, got 0"),
                             ("+audit.method_options.ntk_sap.iteration=3", "audit.method_options.ntk_sap: expected option names"),
                             ("probes.names=[hesian]", "probes.names: expected names from"),
                             ("audit.sparsities=[0.9,1.0]", "audit.sparsities: expected numbers in [0, 1), got 1.0")]:
        run_dir = tmp_path / "runs" / "one"
        started = time.perf_counter()
        result = subprocess.run([str(SCRIPT), "audit", "experiment=demo", f"hydra.run.dir={run_dir}", mistake],
                                capture_output=True, text=True, cwd=tmp_path, env=env, timeout=120)
        elapsed = time.perf_counter() - started
        lines = result.stderr.strip().splitlines()
        assert result.returncode == 2 and len(lines) == 1, result.stderr  # one line: key, expected, given
        assert lines[0].startswith(f"prune-landscape audit: error: {message}"), lines[0]
        assert not (tmp_path / "runs").exists() and elapsed < 3.0, (mistake, elapsed)


def test_a_failing_logger_never_ends_the_audit_and_the_report_is_written(tmp_path, hydra_conf):
    with pytest.warns(RuntimeWarning, match="ExplodingLogger failed .*server gone"):
        run_audit(_audit_cfg(tmp_path, "+logger.bad._target_=test_faults.ExplodingLogger"))
    document = json.loads((tmp_path / "sweep.json").read_text())
    assert len(document["rows"]) == 2 and document["interrupted"] is False


def test_wandb_gets_one_table_and_the_plots_not_one_chart_per_number(tmp_path, hydra_conf):
    run_audit(_audit_cfg(tmp_path, "+logger.wb._target_=test_faults.FakeWandbLogger"))
    kinds = [kind for kind, _ in FakeWandbLogger.calls]
    assert "log_metrics" not in kinds  # no one-point charts
    tables = [detail for kind, detail in FakeWandbLogger.calls if kind == "log_table"]
    from prune_landscape.experiments.html import COLUMNS
    from prune_landscape.experiments.row import row_table

    columns, _ = row_table(RowStore(tmp_path).rows())  # the raw table: the rows' scalar fields, no key list
    assert {"method", "sparsity", "seed", "density", "final_layer_density", "mask_verdict", "test_accuracy"} <= set(columns)
    assert tables == [("audit/summary", len(COLUMNS), 2), ("audit/rows", len(columns), 2)]
    assert [detail[0] for kind, detail in FakeWandbLogger.calls if kind == "log_image"] == ["audit/plots"]
    assert kinds[-1] == "finalize"


def test_a_diverged_row_with_the_hessian_probe_is_in_the_report_and_the_audit_finishes(tmp_path, hydra_conf):
    with pytest.warns(RuntimeWarning, match="probe 'hessian' failed"):
        run_audit(_audit_cfg(tmp_path, "fit.lr=1e30", "probes.names=[hessian]"))
    document = json.loads((tmp_path / "sweep.json").read_text())
    assert len(document["rows"]) == 2 and "diverged" in document["meta"]["failed probes"]
    assert "failed probes" in (tmp_path / "sweep.md").read_text()


def test_an_exception_mid_sweep_leaves_an_interrupted_report(tmp_path, hydra_conf, monkeypatch):
    from prune_landscape.experiments import sweep

    real = sweep.audit_cell
    calls = []

    def second_call_interrupts(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt  # Ctrl-C in the middle of a row
        return real(*args, **kwargs)

    monkeypatch.setattr(sweep, "audit_cell", second_call_interrupts)
    with pytest.raises(KeyboardInterrupt):
        run_audit(_audit_cfg(tmp_path))
    document = json.loads((tmp_path / "sweep.json").read_text())
    assert document["interrupted"] is True and [r["key"] for r in document["rows"]] == ["dense|0|dense|0"]
    monkeypatch.setattr(sweep, "audit_cell", real)
    run_audit(_audit_cfg(tmp_path))  # the re-run finishes the rest
    document = json.loads((tmp_path / "sweep.json").read_text())
    assert document["interrupted"] is False and len(document["rows"]) == 2


def test_a_torn_store_marks_the_report_interrupted_until_the_rerun_repairs_it(tmp_path, hydra_conf, monkeypatch):
    run_audit(_audit_cfg(tmp_path))
    rows_file = tmp_path / "rows.jsonl"
    lines = rows_file.read_bytes().splitlines(keepends=True)
    rows_file.write_bytes(lines[0] + lines[1][:40])  # killed while writing the second row
    from prune_landscape.experiments import html

    flags = []
    real = html.render_report

    def spy(rows, directory, **kwargs):
        flags.append((len(rows), kwargs["interrupted"]))
        return real(rows, directory, **kwargs)

    monkeypatch.setattr(html, "render_report", spy)
    with pytest.warns(RuntimeWarning, match="torn"):
        run_audit(_audit_cfg(tmp_path))
    assert flags[0] == (1, True)  # before the repair: the report says the last run did not finish
    assert flags[-1] == (2, False)  # after it: both rows, none lost
    assert len(json.loads((tmp_path / "sweep.json").read_text())["rows"]) == 2


def test_unwritable_output_directories_fail_before_any_work(tmp_path, hydra_conf):
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    with pytest.raises(UsageError, match="not writable"):
        run_audit(_audit_cfg(blocker / "out"))
    if os.geteuid() != 0:  # root writes anywhere
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        with pytest.raises(UsageError, match="not writable"):
            run_audit(_audit_cfg(locked / "out"))


def test_an_unreachable_wandb_server_means_offline_at_once(monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "online")
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    monkeypatch.setenv("WANDB_BASE_URL", "http://127.0.0.1:9")  # the discard port: nothing listens
    from omegaconf import OmegaConf

    cfg = OmegaConf.create({"logger": {"wandb": {"_target_": "prune_landscape.integrations.loggers.SafeWandbLogger"}}})
    started = time.perf_counter()
    with pytest.warns(RuntimeWarning, match="127.0.0.1:9 is unreachable.*logging offline"):
        wandb_offline_if_unreachable(cfg, timeout=2.0)
    assert os.environ["WANDB_MODE"] == "offline" and time.perf_counter() - started < 5


def test_ctrl_c_in_train_prints_the_run_directory_last(tmp_path, monkeypatch, capsys):
    from prune_landscape.integrations.lit import LitClassifier

    def interrupted(self, batch, batch_idx):
        raise KeyboardInterrupt

    monkeypatch.setattr(LitClassifier, "training_step", interrupted)
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        cfg = compose("train", overrides=[f"output_dir={tmp_path}", "data.max_samples=64", "model.widths=[64,16,10]",
                                          "trainer.max_epochs=1", "probes=none", "trainer=cpu", "torch_threads=1"])
    try:
        with pytest.raises(SystemExit) as exit_info:
            train_app(cfg)
        assert exit_info.value.code == 130
        assert capsys.readouterr().out.strip().splitlines()[-1] == str(tmp_path)
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # Ctrl-C works again afterwards
    finally:
        signal.signal(signal.SIGINT, signal.default_int_handler)


def test_failed_calls_leave_no_folder_multirun_and_deep_checks_too(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1]), "HYDRA_FULL_ERROR": "0"}
    sweep_dir = tmp_path / "sweeps" / "s"
    started = time.perf_counter()
    multirun = subprocess.run([str(SCRIPT), "audit", "experiment=sparsity_sweep", "--multirun", "audit.sparsity=0.5,1.5",
                               f"hydra.sweep.dir={sweep_dir}"], capture_output=True, text=True, cwd=tmp_path, env=env,
                              timeout=120)
    assert time.perf_counter() - started < 3.0
    assert multirun.returncode == 2 and multirun.stderr.strip() == (
        "prune-landscape audit: error: audit.sparsity: expected numbers in [0, 1), got 1.5")
    assert not (tmp_path / "sweeps").exists()
    # found only once the model meets the data (inside the Hydra job): Hydra's run directory is removed again
    run_dir = tmp_path / "runs" / "r"
    deep = subprocess.run([str(SCRIPT), "audit", "experiment=demo", f"hydra.run.dir={run_dir}", "model.widths=[32,8,10]"],
                          capture_output=True, text=True, cwd=tmp_path, env=env, timeout=300)
    assert deep.returncode == 2 and "the model does not accept these inputs: expected (N, ..., 32)" in deep.stderr
    assert not (tmp_path / "runs").exists()


def test_step_loggers_get_the_rows_metrics_under_the_cells_prefix():
    from prune_landscape.integrations.cli_loggers import log_row

    class Recorder:
        def __init__(self):
            self.calls = []

        def log_metrics(self, metrics, step):
            self.calls.append((metrics, step))

    row = {"method": "snip", "final_layer_policy": "dense", "sparsity": 0.98, "seed": 2, "train_accuracy": 0.5,
           "test_accuracy": None, "train_loss": 1.25, "metrics": {"density": 0.02, "final_layer/dense": 1.0}}
    logger = Recorder()
    log_row([logger], row, 7)
    log_row([logger], {**row, "status": "failed"}, 8)  # a failed row has no numbers to log
    assert logger.calls == [({"snip/dense/s0.98/seed2/density": 0.02, "snip/dense/s0.98/seed2/final_layer/dense": 1.0,
                              "snip/dense/s0.98/seed2/train_loss": 1.25, "snip/dense/s0.98/seed2/train_accuracy": 0.5}, 7)]
