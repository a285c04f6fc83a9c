"""LandscapeAudit inside real Trainer.fit runs: hand-applied masks, Lightning's ModelPruning (both orders),
CSV scalars read back, and loggers that fail (training continues, the report is still written)."""

import csv
import dataclasses
import json
import re
import warnings
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import ModelPruning
from pytorch_lightning.loggers import CSVLogger, WandbLogger
from torch.nn.utils import prune as torch_prune
from torch.utils.data import DataLoader, TensorDataset

from prune_landscape import MaskSet, models
from prune_landscape.integrations.callbacks import AuditReporting, AuditSchedule, LandscapeAudit, ModelIO
from prune_landscape.integrations.lit import LitClassifier
from prune_landscape.integrations.loggers import SafeWandbLogger, logger_failed


def _data(seed=0, n=48):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 6, generator=g)
    y = torch.randint(0, 3, (n,), generator=g)
    return DataLoader(TensorDataset(x, y), batch_size=16)


def _lit(seed=0):
    torch.manual_seed(seed)
    return LitClassifier(models.mlp([6, 8, 3]), lr=0.05)


def _trainer(tmp_path, callbacks, logger=False, epochs=3):
    return pl.Trainer(
        max_epochs=epochs, callbacks=callbacks, logger=logger, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, default_root_dir=tmp_path, log_every_n_steps=1,
    )


class _HandPrune(pl.Callback):
    """Attach a hand-written mask to the final layer at the start of epoch 1 (mid-run, by hand)."""

    # Output 0 keeps 2 inputs, output 1 keeps 3, output 2 keeps 8: fan-in min 2, density 13/24.
    MASK = torch.zeros(3, 8, dtype=torch.bool)
    MASK[0, :2] = True
    MASK[1, :3] = True
    MASK[2, :] = True

    def on_train_epoch_start(self, trainer, pl_module):
        if trainer.current_epoch == 1:
            torch_prune.custom_from_mask(pl_module.model.fc2, "weight", self.MASK)


def _csv_rows(path):
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def test_hand_pruned_masks_are_audited_and_csv_holds_the_scalars(tmp_path):
    lit = _lit()
    fc1_mask = torch.ones(8, 6, dtype=torch.bool)
    fc1_mask[:, 3:] = False  # half the first layer's inputs cut: 24 of 48 kept
    torch_prune.custom_from_mask(lit.model.fc1, "weight", fc1_mask)
    audit = LandscapeAudit()
    logger = CSVLogger(tmp_path, name="csv")
    _trainer(tmp_path, [_HandPrune(), audit], logger=logger).fit(lit, _data())

    # Two mask states, each audited once (fc1 alone, then fc1 + the hand-made final-layer mask), then
    # the final audit with the training data.
    assert [(r.trigger, r.epoch) for r in audit.records] == [("train_start", 0), ("epoch_start", 1), ("train_end", 3)]
    first, second, final = audit.records
    assert final.fingerprint == second.fingerprint and final.metrics["audit/n"] == 48
    assert first.metrics["audit/density"] == pytest.approx((24 + 24) / 72)
    assert first.metrics["audit/final_layer/density"] == 1.0
    assert second.metrics["audit/density"] == pytest.approx((24 + 13) / 72)
    assert second.metrics["audit/final_layer/density"] == pytest.approx(13 / 24)
    assert second.metrics["audit/final_layer/fan_in_min"] == 2.0
    assert audit.last_masks["model.fc2.weight"].equal(_HandPrune.MASK)

    rows = _csv_rows(tmp_path / "csv" / "version_0" / "metrics.csv")
    logged = [{k: float(v) for k, v in row.items() if k.startswith("audit/") and v != ""} for row in rows]
    logged = [row for row in logged if row]
    assert logged == [r.metrics for r in audit.records]
    assert [int(row["step"]) for row in rows if row.get("audit/density")] == [r.step for r in audit.records]

    # The report and the mask land in the run directory (trainer.log_dir).
    run_dir = tmp_path / "csv" / "version_0"
    assert audit.report_paths["mask"] == run_dir / "mask.safetensors"
    assert MaskSet.load(run_dir / "mask.safetensors") == MaskSet.from_module(lit, source="hooks") == audit.last_masks
    assert json.loads((run_dir / "report.json").read_text())
    assert (run_dir / "report.md").read_text().strip()


class _Snapshot(pl.Callback):
    """Masks held through torch.nn.utils.prune hooks at each epoch end."""

    def __init__(self):
        self.seen = []

    def on_train_epoch_end(self, trainer, pl_module):
        self.seen.append(MaskSet.from_module(pl_module, source="hooks"))


@pytest.mark.parametrize("audit_first", [True, False])
def test_audit_sees_modelpruning_masks_in_either_order(tmp_path, audit_first):
    lit = _lit(1)
    audit = LandscapeAudit()
    snapshot = _Snapshot()
    pruning = ModelPruning(
        "l1_unstructured", amount=0.3, parameter_names=["weight"], make_pruning_permanent=True,
        use_lottery_ticket_hypothesis=False, verbose=0,
    )
    callbacks = [audit, pruning, snapshot] if audit_first else [pruning, snapshot, audit]
    _trainer(tmp_path, callbacks).fit(lit, _data())

    # ModelPruning prunes 30 % of the remaining weights at each of the 3 epoch ends; the audit sees each
    # of those masks (plus the dense start) and, at the end, exactly the last one ModelPruning made.
    assert len({r.fingerprint for r in audit.records}) == 4 and audit.records[-1].trigger == "train_end"
    made = snapshot.seen[-1]
    assert audit.last_masks == made
    assert audit.last_masks.tensor_densities() == made.tensor_densities()
    assert audit.records[-1].density == pytest.approx(made.density)
    first_seen = next(r for r in audit.records if r.fingerprint == made.fingerprint())
    assert not first_seen.inferred  # read from the hooks, before they were removed
    assert audit.records[-1].metrics["audit/final_layer/density"] == pytest.approx(made.tensor_densities()["model.fc2.weight"])
    # make_pruning_permanent removed the hooks; the zeros left behind are the same mask.
    assert MaskSet.from_module(lit).inferred and MaskSet.from_module(lit) == made


class _ConnectionLost(pl.Callback):
    """During the second epoch the W&B run raises on every log call, like a dropped connection; then it is back."""

    def on_train_epoch_end(self, trainer, pl_module):
        experiment = trainer.logger.experiment
        if trainer.current_epoch == 0:
            self.log = experiment.log

            def lost(*args, **kwargs):
                raise ConnectionError("simulated: connection to W&B lost")

            experiment.log = lost
        elif trainer.current_epoch == 1:
            experiment.log = self.log


@pytest.fixture
def offline_wandb(tmp_path, monkeypatch):
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.delenv("WANDB_MODE", raising=False)
    for key in ("WANDB_DATA_DIR", "WANDB_CACHE_DIR", "WANDB_CONFIG_DIR", "WANDB_ARTIFACT_DIR"):
        monkeypatch.setenv(key, str(tmp_path / "wandb-home" / key.lower()))
    monkeypatch.setenv("WANDB_SILENT", "true")
    yield
    import wandb

    wandb.finish()


def test_wandb_that_cannot_initialise_warns_and_training_continues(tmp_path, monkeypatch, offline_wandb):
    import wandb

    def refuse(*args, **kwargs):
        raise wandb.errors.CommError("simulated: cannot reach W&B")

    monkeypatch.setattr(wandb, "init", refuse)
    logger = SafeWandbLogger(save_dir=tmp_path / "wb", project="t")
    audit = LandscapeAudit()
    lit = _lit()
    with pytest.warns(RuntimeWarning, match="SafeWandbLogger failed during initialisation .*cannot reach W&B.*training continues"):
        trainer = _trainer(tmp_path, [audit], logger=logger, epochs=2)
        trainer.fit(lit, _data())
    assert trainer.current_epoch == 2 and logger_failed(logger)
    assert (tmp_path / "wb" / "report.json").is_file() and (tmp_path / "wb" / "mask.safetensors").is_file()


def test_wandb_that_loses_its_connection_warns_and_stays_on(tmp_path, offline_wandb):
    """A failing log call is recorded and warned; the user's logger is never switched off, so what is
    logged after the connection is back (the final audit, the summary, the artifact) reaches the run."""
    from test_callbacks_wandb import _complete_records, _history

    logger = WandbLogger(save_dir=tmp_path / "wb", project="t", offline=True)  # a plain Lightning logger
    audit = LandscapeAudit()
    lit = _lit()
    fc2 = torch.ones(3, 8, dtype=torch.bool)
    fc2[:, 6:] = False
    torch_prune.custom_from_mask(lit.model.fc2, "weight", fc2)
    with pytest.warns(RuntimeWarning, match="WandbLogger failed during log_metrics .*connection to W&B lost.*stays on"):
        trainer = _trainer(tmp_path, [audit, _ConnectionLost()], logger=logger, epochs=3)
        trainer.fit(lit, _data())
    run_dir = Path(logger.experiment.dir).parent
    import wandb

    wandb.finish()
    assert trainer.current_epoch == 3 and logger_failed(logger)
    records = _complete_records(next(run_dir.glob("run-*.wandb")))
    history = _history(records)
    final = [row for row in history if row.get("audit/n") == 48]  # the final audit (with data), after the outage
    assert len(final) == 1 and final[0]["audit/final_layer/density"] == pytest.approx(18 / 24)
    assert any("audit/mask_table/_type" in row for row in history)
    assert any(r.WhichOneof("record_type") == "artifact" and r.artifact.type == "mask" for r in records)
    report = json.loads((run_dir / "files" / "report.json").read_text())
    (failure,) = [f for f in report["run"]["failures"] if f["what"].startswith("logger WandbLogger")]
    assert failure["what"] == "logger WandbLogger.log_metrics" and failure["count"] >= 1
    assert MaskSet.load(run_dir / "files" / "mask.safetensors") == audit.last_masks


# Every flat keyword LandscapeAudit took before its settings were grouped: (keyword, value, group, class).
_LEGACY = [
    ("probe_every_n_epochs", 3, "schedule", AuditSchedule),
    ("probe_at_end", False, "schedule", AuditSchedule),
    ("structure_every_n_epochs", 2, "schedule", AuditSchedule),
    ("check_every_n_steps", 5, "schedule", AuditSchedule),
    ("final_with_data", False, "schedule", AuditSchedule),
    ("batch_to_inputs", len, "model_io", ModelIO),
    ("batch_to_targets", len, "model_io", ModelIO),
    ("example_input", (1, 2), "model_io", ModelIO),
    ("report_dir", "runs/audit", "reporting", AuditReporting),
    ("prefix", "a/", "reporting", AuditReporting),
    ("log_mask_artifact", False, "reporting", AuditReporting),
    ("guard_loggers", False, "reporting", AuditReporting),
]


@pytest.mark.parametrize(("keyword", "value", "group", "kind"), _LEGACY, ids=[row[0] for row in _LEGACY])
def test_each_old_keyword_still_works_and_warns_with_the_new_spelling(keyword, value, group, kind):
    expected = f"LandscapeAudit: {keyword}= is deprecated; use {group}= (as {group}={kind.__name__}({keyword}=...))"
    with pytest.warns(DeprecationWarning, match=re.escape(expected)):
        old = LandscapeAudit(**{keyword: value})
    new = LandscapeAudit(**{group: kind(**{keyword: value})})
    assert getattr(old, group) == getattr(new, group) == kind(**{keyword: value})
    assert getattr(old, group) != kind(), "the keyword changed its field"
    as_mapping = LandscapeAudit(**{group: {keyword: value}})  # a Hydra config section
    assert getattr(as_mapping, group) == getattr(new, group)


def test_old_keywords_refine_a_given_group_and_groups_are_frozen():
    with pytest.warns(DeprecationWarning):
        audit = LandscapeAudit(schedule=AuditSchedule(probe_every_n_epochs=4), probe_at_end=False, prefix="x/")
    assert audit.schedule == AuditSchedule(probe_every_n_epochs=4, probe_at_end=False)
    assert audit.reporting == AuditReporting(prefix="x/")
    assert AuditReporting(report_dir="runs").report_dir == Path("runs")
    with pytest.raises(dataclasses.FrozenInstanceError):
        audit.schedule.probe_at_end = True


def test_invalid_arguments_raise_before_any_work():
    with pytest.raises(ValueError, match="n_samples must be a positive integer or None, got 2.5"):
        LandscapeAudit(n_samples=2.5)
    with pytest.raises(ValueError, match="probe_every_n_epochs must be a positive integer or None, got 0"):
        LandscapeAudit(schedule=AuditSchedule(probe_every_n_epochs=0))
    with pytest.raises(ValueError, match="check_every_n_steps must be a positive integer, got 1.5"):
        LandscapeAudit(schedule={"check_every_n_steps": 1.5})
    with pytest.raises(ValueError, match=r"schedule: unknown field\(s\) \['probe_every'\]; expected some of \['check_every_n_steps'"):
        LandscapeAudit(schedule={"probe_every": 2})
    with pytest.raises(ValueError, match="model_io must be a ModelIO or a mapping of its fields, got AuditSchedule"):
        LandscapeAudit(model_io=AuditSchedule())
    with pytest.raises(ValueError, match="output_transform must be a callable or None, got str"):
        ModelIO(output_transform="logits")
    with pytest.raises(TypeError, match=r"LandscapeAudit\(\) got unexpected keyword argument\(s\) \['report_directory'\]"):
        LandscapeAudit(report_directory="runs")
    with pytest.raises(ValueError, match="probes must be a sequence of names or callables, got the string 'hessian'"):
        LandscapeAudit("hessian")


class _CountingProbe:
    """A probe (model, data) -> result that records the epochs it ran at and the samples it saw."""

    __name__ = "counting"

    def __init__(self):
        self.calls = []

    def __call__(self, model, data):
        samples = sum(len(y) for _, y in data)
        self.calls.append(samples)
        probe = self

        class Result:
            def scalars(self):
                return {"calls": float(len(probe.calls)), "samples": float(samples)}

            def figure(self):
                return None

        return Result()


@pytest.mark.parametrize("spelling", ["schedule", "old keyword"])
def test_probes_run_every_n_epochs_and_at_the_end_and_their_scalars_are_logged(tmp_path, spelling):
    probe = _CountingProbe()
    if spelling == "schedule":
        audit = LandscapeAudit([probe], schedule=AuditSchedule(probe_every_n_epochs=2))
    else:
        with pytest.warns(DeprecationWarning, match=r"schedule=AuditSchedule\(probe_every_n_epochs=...\)"):
            audit = LandscapeAudit([probe], probe_every_n_epochs=2)
    logger = CSVLogger(tmp_path, name="csv")
    _trainer(tmp_path, [audit], logger=logger, epochs=4).fit(_lit(), _data())
    # Epoch ends 2 and 4, then the end of fit: three runs, each over the 48 training samples.
    assert probe.calls == [48, 48, 48]
    probed = [r for r in audit.records if r.with_probes]
    assert [(r.trigger, r.epoch) for r in probed] == [("epoch_end", 1), ("epoch_end", 3), ("train_end", 4)]
    assert [r.metrics["audit/probe/counting/calls"] for r in probed] == [1.0, 2.0, 3.0]
    rows = _csv_rows(tmp_path / "csv" / "version_0" / "metrics.csv")
    assert [float(row["audit/probe/counting/calls"]) for row in rows if row.get("audit/probe/counting/calls")] == [1.0, 2.0, 3.0]


def test_resume_reattaches_hand_applied_masks_before_the_state_loads(tmp_path):
    from pytorch_lightning.callbacks import ModelCheckpoint

    first = _lit()
    torch_prune.custom_from_mask(first.model.fc2, "weight", _HandPrune.MASK)
    checkpoint = ModelCheckpoint(dirpath=tmp_path / "ckpt", save_last=True)
    trainer = pl.Trainer(max_epochs=1, callbacks=[LandscapeAudit(), checkpoint], logger=False, enable_progress_bar=False,
                         enable_model_summary=False, default_root_dir=tmp_path)
    trainer.fit(first, _data())

    # A fresh module has a plain fc2.weight; the checkpoint holds fc2.weight_orig / fc2.weight_mask.
    resumed = _lit(seed=9)
    audit = LandscapeAudit()
    _trainer(tmp_path, [audit], epochs=2).fit(resumed, _data(), ckpt_path=str(tmp_path / "ckpt" / "last.ckpt"))
    assert MaskSet.from_module(resumed, source="hooks")["model.fc2.weight"].equal(_HandPrune.MASK)
    fc2 = resumed.model.fc2
    assert torch.all((fc2.weight_orig * fc2.weight_mask)[~_HandPrune.MASK] == 0)
    assert audit.records[-1].metrics["audit/final_layer/fan_in_min"] == 2.0
