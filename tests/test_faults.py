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
import warnings

import pytest
import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import ModelCheckpoint

from prune_landscape import MaskSet, models
from prune_landscape.callbacks import GradualMagnitudePruning, IterativeMagnitudePruning
from prune_landscape.datamodules import DataModule, EpochShuffleSampler
from prune_landscape.lit import LitClassifier
from prune_landscape.pruning import GradualSchedule, IMPSchedule


# ------------------------------------------------------------------------------------------ resume
def _datamodule():
    return DataModule("teacher_student", batch_size=16, n=64, n_test=16, d=6, outputs=3, task="classification",
                      widths=[8], seed=3)


def _fit(tmp_path, callbacks, *, epochs, ckpt_path=None, checkpoint=None, seed=0):
    torch.manual_seed(seed)
    lit = LitClassifier(models.mlp([6, 12, 3]), lr=0.05, momentum=0.9, weight_decay=1e-3, epochs=None)
    trainer = pl.Trainer(max_epochs=epochs, callbacks=[*callbacks, *([checkpoint] if checkpoint else [])], logger=False,
                         enable_progress_bar=False, enable_model_summary=False, default_root_dir=tmp_path,
                         enable_checkpointing=checkpoint is not None, deterministic=True)
    trainer.fit(lit, datamodule=_datamodule(), ckpt_path=ckpt_path)
    return lit


def _state(lit):
    return {k: v.detach().clone() for k, v in lit.state_dict().items()}


@pytest.mark.parametrize("pipeline", ["gradual", "imp"])
def test_resume_from_an_epoch_boundary_is_bit_identical_with_the_packages_datamodule(tmp_path, pipeline):
    def callbacks():
        if pipeline == "gradual":
            return [GradualMagnitudePruning(GradualSchedule(final_sparsity=0.8, start_step=0, end_step=14, frequency=2))]
        return [IterativeMagnitudePruning(IMPSchedule(rounds=2, rewind_step=2), epochs_per_round=1)]

    full = _fit(tmp_path / "full", callbacks(), epochs=3)
    checkpoint = ModelCheckpoint(dirpath=tmp_path / "ckpt", save_last=True)
    _fit(tmp_path / "a", callbacks(), epochs=2, checkpoint=checkpoint)
    resumed = _fit(tmp_path / "b", callbacks(), epochs=3, ckpt_path=str(tmp_path / "ckpt" / "last.ckpt"), seed=99)
    assert MaskSet.from_module(resumed, source="hooks") == MaskSet.from_module(full, source="hooks")
    reference, state = _state(full), _state(resumed)
    assert sorted(state) == sorted(reference)
    for key in reference:  # bit for bit: same batches in the same order after the resume
        assert torch.equal(state[key], reference[key]), key


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
from prune_landscape.sweep import RowStore, SweepPlan, run_sweep, safe_name  # noqa: E402


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
        rows = run_sweep(plan, _factory, _task(), store=store, progress=False, figure_dir=tmp_path / "figures")
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
    rows = run_sweep(plan, _factory, _task(), store=RowStore(out), progress=False, figure_dir=out / "figures")
    written = [p for p in tmp_path.rglob("*.png")]
    assert written and all(p.parent == out / "figures" for p in written)
    assert rows[0]["figures"]["final_layer_gap"] == "figures/x_0.5_prune_0_final_layer_gap.png"
    assert safe_name("..") == "unnamed" and "/" not in safe_name("a/../../b")


def test_report_markdown_escapes_raw_html_and_files_are_readable_by_others(tmp_path):
    from prune_landscape.html import render_report

    row = {"key": "k", "method": "<img src=x onerror=alert(1)>", "sparsity": 0.5, "final_layer_policy": "prune",
           "seed": 0, "density": 0.5, "final_layer": "fc2.weight", "final_layer_density": 0.5, "final_layer_dense": False,
           "fan_in_min": 3, "n": 10, "dead_units": 0, "collapsed_layers": [], "landscape": "RISKY",
           "existence": "UNKNOWN", "train_accuracy": 0.5, "test_accuracy": 0.5, "layer_densities": {"fc1.weight": 0.5}}
    paths = render_report([row], tmp_path, meta={"note": "<script>x</script>"})
    markdown = paths["markdown"].read_text()
    assert "<img" not in markdown and "&lt;img src=x onerror=alert(1)&gt;" in markdown
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
    with pytest.raises(ValueError, match=r"expected \(N, \.\.\., 6\) float inputs .*Linear\(6, \.\.\.\).*got a batch of shape "
                                         r"\(2, 5\) float32"):
        run_sweep(plan, _factory, (torch.randn(10, 5), y[:10]), store=RowStore(tmp_path), progress=False)
    with pytest.raises(ValueError, match=r"got a batch of shape \(2, 6\) int64"):
        run_sweep(plan, _factory, (x.long(), y), store=RowStore(tmp_path), progress=False)
    assert not (tmp_path / "rows.jsonl").exists()


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
