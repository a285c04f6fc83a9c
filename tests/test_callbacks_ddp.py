"""DDP with 2 CPU processes (gloo): identical masks on every rank, one audit report.

Lightning's DDP launcher re-runs the calling script once per extra process, so the run lives in a small
script file executed in a subprocess; each rank writes its mask fingerprint to a file.
"""

import json
import subprocess
import sys
import textwrap

import pytest

SCRIPT = textwrap.dedent(
    """
    import json, os, sys
    from pathlib import Path

    import pytorch_lightning as pl
    import torch
    from pytorch_lightning.loggers import CSVLogger
    from torch.utils.data import DataLoader, TensorDataset

    from prune_landscape import MaskSet, models
    from prune_landscape.integrations.callbacks import AuditReporting, GradualMagnitudePruning, LandscapeAudit, PruneAtInit
    from prune_landscape.integrations.lit import LitClassifier
    from prune_landscape.pruning import GradualSchedule

    out = Path(sys.argv[1])
    # A different initialisation on each rank: magnitude masks computed locally would differ, so equal
    # masks right after setup (before DDP wraps the model and syncs its buffers) prove that rank 0's
    # masks were broadcast.
    torch.manual_seed(100 + int(os.environ.get("LOCAL_RANK", "0")))
    lit = LitClassifier(models.mlp([6, 16, 3]), lr=0.05)
    init_masks = {}

    class Record(pl.Callback):
        def setup(self, trainer, pl_module, stage):
            init_masks["fingerprint"] = MaskSet.from_module(pl_module, source="hooks").fingerprint()

    g = torch.Generator().manual_seed(0)
    data = DataLoader(TensorDataset(torch.randn(64, 6, generator=g), torch.randint(0, 3, (64,), generator=g)), batch_size=8)
    audit = LandscapeAudit(reporting=AuditReporting(report_dir=out / "report"))
    schedule = GradualSchedule(final_sparsity=0.8, start_step=2, end_step=6, frequency=2, initial_sparsity=0.5)
    trainer = pl.Trainer(
        strategy="ddp", accelerator="cpu", devices=2, max_epochs=2, logger=CSVLogger(out, name="csv"),
        callbacks=[PruneAtInit("magnitude", 0.5), GradualMagnitudePruning(schedule), audit, Record()],
        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
    )
    trainer.fit(lit, data)
    masks = MaskSet.from_module(lit, source="hooks")
    (out / f"rank{trainer.global_rank}.json").write_text(json.dumps({
        "init": init_masks["fingerprint"], "final": masks.fingerprint(), "density": masks.density,
        "records": len(audit.records), "world_size": trainer.world_size,
    }))
    """
)


@pytest.mark.slow
def test_ddp_two_processes_identical_masks_one_report(tmp_path):
    script = tmp_path / "ddp_run.py"
    script.write_text(SCRIPT)
    result = subprocess.run(
        [sys.executable, str(script), str(tmp_path)], capture_output=True, text=True, timeout=300, cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr[-4000:]
    rank0 = json.loads((tmp_path / "rank0.json").read_text())
    rank1 = json.loads((tmp_path / "rank1.json").read_text())
    assert rank0["world_size"] == rank1["world_size"] == 2
    assert rank0["init"] == rank1["init"]
    assert rank0["final"] == rank1["final"]
    # Final density over the prunable weights: the schedule's final sparsity, exactly (N = 96 + 48 = 144).
    assert rank0["density"] == pytest.approx(round(0.2 * 144) / 144)
    # Only rank zero audits and writes: one report, one metrics file with the audit scalars.
    assert rank0["records"] >= 2 and rank1["records"] == 0
    assert sorted(p.name for p in (tmp_path / "report").iterdir()) == ["mask.safetensors", "report.json", "report.md"]
    metrics_files = list((tmp_path / "csv").rglob("metrics.csv"))
    assert len(metrics_files) == 1 and "audit/density" in metrics_files[0].read_text()
