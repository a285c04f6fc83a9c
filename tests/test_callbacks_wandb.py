"""LandscapeAudit with a WandbLogger in offline mode: the run's own .wandb file, read back record by record,
holds the audit scalars, the per-layer mask table, the summary keys and the mask artifact (type "mask")."""

import base64
import hashlib
import json
import struct
import time
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from torch.nn.utils import prune as torch_prune
from torch.utils.data import DataLoader, TensorDataset

from prune_landscape import MaskSet, models
from prune_landscape.callbacks import LandscapeAudit
from prune_landscape.lit import LitClassifier
from prune_landscape.loggers import SafeWandbLogger, configure_wandb_mode

_BLOCK = 32768  # the .wandb file is a LevelDB-style log: 7-byte header, then 32 KiB blocks of records
_FULL, _FIRST, _MIDDLE, _LAST = 1, 2, 3, 4


def read_wandb_records(path: Path) -> list:
    """Every protobuf Record in an offline run's .wandb file (what `wandb sync` would upload)."""
    from wandb.proto import wandb_internal_pb2

    data = path.read_bytes()
    ident, magic, _version = struct.unpack("<4sHB", data[:7])
    assert (ident, magic) == (b":W&B", 0xBEE1), f"not a .wandb file: {ident!r} {magic:#x}"
    position, pending, payloads = 7, b"", []
    while position + 7 <= len(data):
        left = _BLOCK - position % _BLOCK
        if left < 7:  # block trailer too short for a header: padding
            position += left
            continue
        _crc, length, kind = struct.unpack("<IHB", data[position : position + 7])
        chunk = data[position + 7 : position + 7 + length]
        position += 7 + length
        if kind == _FULL:
            payloads.append(chunk)
        elif kind == _FIRST:
            pending = chunk
        elif kind == _MIDDLE:
            pending += chunk
        elif kind == _LAST:
            payloads.append(pending + chunk)
    records = []
    for payload in payloads:
        record = wandb_internal_pb2.Record()
        record.ParseFromString(payload)
        records.append(record)
    return records


def _complete_records(path: Path, timeout: float = 60.0) -> list:
    """The run's records once its writer has finished (wandb-core may still be flushing after finish())."""
    deadline = time.monotonic() + timeout
    while True:
        records = read_wandb_records(path)
        if any(r.WhichOneof("record_type") == "exit" for r in records) or time.monotonic() > deadline:
            return records
        time.sleep(0.2)


def _key(item) -> str:
    return item.key or "/".join(item.nested_key)


def test_configure_wandb_mode_is_offline_unless_a_mode_and_a_key_are_set(tmp_path):
    no_netrc = str(tmp_path / "absent-netrc")
    assert configure_wandb_mode(env := {"NETRC": no_netrc}) == "offline" and env["WANDB_MODE"] == "offline"
    with pytest.warns(UserWarning, match="WANDB_MODE='online' but no W&B API key"):
        assert configure_wandb_mode({"WANDB_MODE": "online", "NETRC": no_netrc}) == "offline"
    assert configure_wandb_mode({"WANDB_API_KEY": "x" * 40, "NETRC": no_netrc}) == "offline"  # no mode chosen
    assert configure_wandb_mode({"WANDB_MODE": "online", "WANDB_API_KEY": "x" * 40}) == "online"
    assert configure_wandb_mode({"WANDB_MODE": "disabled", "NETRC": no_netrc}) == "disabled"


def test_offline_wandb_run_holds_table_summary_and_mask_artifact(tmp_path, monkeypatch):
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "absent-netrc"))
    monkeypatch.setenv("WANDB_SILENT", "true")
    for key in ("WANDB_DATA_DIR", "WANDB_CACHE_DIR", "WANDB_CONFIG_DIR", "WANDB_ARTIFACT_DIR"):
        monkeypatch.setenv(key, str(tmp_path / "wandb-home" / key.lower()))
    import wandb

    torch.manual_seed(0)
    lit = LitClassifier(models.mlp([6, 8, 3]), lr=0.05)
    mask = torch.ones(3, 8, dtype=torch.bool)
    mask[:, 5:] = False  # every output keeps 5 of 8 inputs
    torch_prune.custom_from_mask(lit.model.fc2, "weight", mask)
    data = DataLoader(TensorDataset(torch.randn(32, 6), torch.randint(0, 3, (32,))), batch_size=16)
    logger = SafeWandbLogger(save_dir=tmp_path / "wb", project="prune-landscape-test")
    audit = LandscapeAudit()
    trainer = pl.Trainer(
        max_epochs=2, callbacks=[audit], logger=logger, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, default_root_dir=tmp_path,
    )
    try:
        trainer.fit(lit, data)
        run_dir = Path(logger.experiment.dir).parent
    finally:
        wandb.finish()
    assert run_dir.name.startswith("offline-run-")
    records = _complete_records(next(run_dir.glob("run-*.wandb")))

    history = {}
    for record in records:
        if record.WhichOneof("record_type") == "history":
            history.update({_key(item): json.loads(item.value_json) for item in record.history.item})
    assert history["audit/final_layer/density"] == pytest.approx(15 / 24)
    assert history["audit/final_layer/fan_in_min"] == 5
    assert history["audit/density"] == pytest.approx((48 + 15) / 72)

    # The per-layer mask table: logged as a table file whose rows are the layers.
    assert history["audit/mask_table/_type"] == "table-file" and history["audit/mask_table/nrows"] == 2
    table = json.loads((run_dir / "files" / history["audit/mask_table/path"]).read_text())
    rows = {row[0]: dict(zip(table["columns"], row)) for row in table["data"]}
    assert rows["model.fc2.weight"]["kept"] == 15 and rows["model.fc2.weight"]["density"] == pytest.approx(15 / 24)
    # Hidden units 5, 6, 7 lost every outgoing weight: no path to the output, so 5 of 8 are alive.
    assert rows["model.fc1.weight"]["kept"] == 48 and rows["model.fc1.weight"]["alive_units"] == 5

    summary = {}
    for record in records:
        if record.WhichOneof("record_type") == "summary":
            summary.update({_key(item): json.loads(item.value_json) for item in record.summary.update})
    assert summary["audit/final_layer/density"] == pytest.approx(15 / 24)
    assert summary["audit/dead_units"] == 3
    for part in ("landscape", "existence"):
        if hasattr(audit.last_report, part):
            assert isinstance(summary[f"audit/{part}/verdict"], str) and isinstance(summary[f"audit/{part}/rules"], list)

    # The mask artifact: type "mask", one safetensors file whose MD5 is that of the file on disk.
    artifacts = [r.artifact for r in records if r.WhichOneof("record_type") == "artifact" and r.artifact.type == "mask"]
    assert len(artifacts) == 1
    (entry,) = artifacts[0].manifest.contents
    mask_file = tmp_path / "wb" / "mask.safetensors"
    assert entry.path == "mask.safetensors" and entry.size == mask_file.stat().st_size
    assert entry.digest == base64.b64encode(hashlib.md5(mask_file.read_bytes()).digest()).decode()
    assert json.loads(artifacts[0].metadata)["fingerprint"] == MaskSet.load(mask_file).fingerprint() == audit.last_masks.fingerprint()
    assert MaskSet.load(mask_file)["model.fc2.weight"].equal(mask)
