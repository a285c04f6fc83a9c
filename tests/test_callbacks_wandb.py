"""LandscapeAudit with a WandbLogger in offline mode, in both Lightning namespaces: the run's own .wandb file,
read back record by record, holds the audit scalars, the per-layer mask table, the summary keys, the probe
figure, the mask artifact (type "mask") and the user's metrics logged after the audit."""

import base64
import hashlib
import json
import struct
import time
import warnings
from pathlib import Path

import pytest
import torch
from torch.nn.utils import prune as torch_prune

from _lightning_namespaces import NAMESPACES, data, namespace, trainer
from prune_landscape import MaskSet
from prune_landscape.integrations.callbacks import LandscapeAudit
from prune_landscape.integrations.loggers import configure_wandb_mode

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


@pytest.fixture
def offline_wandb(tmp_path, monkeypatch):
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("NETRC", str(tmp_path / "absent-netrc"))
    monkeypatch.setenv("WANDB_SILENT", "true")
    for key in ("WANDB_DATA_DIR", "WANDB_CACHE_DIR", "WANDB_CONFIG_DIR", "WANDB_ARTIFACT_DIR"):
        monkeypatch.setenv(key, str(tmp_path / "wandb-home" / key.lower()))
    monkeypatch.chdir(tmp_path)  # anything written to the CWD would land here and be seen
    import wandb

    yield wandb
    wandb.finish()


def _history(records):
    """Each history record as a dict, in the order the run logged them."""
    return [
        {_key(item): json.loads(item.value_json) for item in record.history.item}
        for record in records
        if record.WhichOneof("record_type") == "history"
    ]


@pytest.mark.parametrize("ns_name", NAMESPACES)
def test_offline_wandb_run_holds_everything_promised_in_both_namespaces(tmp_path, ns_name, offline_wandb):
    """The user's own WandbLogger (offline), a probe with a figure, then the user's test metrics after the
    audit. The run's .wandb file, read back record by record, holds: the audit scalars, the per-layer mask
    table, the verdicts and rules in the summary, the probe figure, the mask artifact, and test/loss."""
    ns = namespace(ns_name)
    torch.manual_seed(0)
    module = ns.NoForward()
    mask = torch.ones(3, 8, dtype=torch.bool)
    mask[:, 5:] = False  # every output keeps 5 of 8 inputs
    torch_prune.custom_from_mask(module.net.fc2, "weight", mask)
    logger = ns.WandbLogger(save_dir=tmp_path / "wb", project="prune-landscape-test", offline=True)
    audit = LandscapeAudit(["final_layer_gap"])
    fit = trainer(ns, tmp_path, [audit], logger=logger)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fit.fit(module, data(n=32))
        fit.test(module, data(seed=1, n=32))  # the user's own metrics, logged after the audit
    run_dir = Path(logger.experiment.dir).parent
    offline_wandb.finish()
    assert not [w for w in caught if "failed" in str(w.message)], [str(w.message) for w in caught if "failed" in str(w.message)]
    assert run_dir.name.startswith("offline-run-")
    records = _complete_records(next(run_dir.glob("run-*.wandb")))
    history = _history(records)
    merged = {key: value for row in history for key, value in row.items()}

    assert merged["audit/final_layer/density"] == pytest.approx(15 / 24)
    assert merged["audit/final_layer/fan_in_min"] == 5
    assert merged["audit/density"] == pytest.approx((48 + 15) / 72)

    # The per-layer mask table: logged as a table file whose rows are the layers.
    assert merged["audit/mask_table/_type"] == "table-file" and merged["audit/mask_table/nrows"] == 2
    table = json.loads((run_dir / "files" / merged["audit/mask_table/path"]).read_text())
    rows = {row[0]: dict(zip(table["columns"], row)) for row in table["data"]}
    assert rows["fc2.weight"]["kept"] == 15 and rows["fc2.weight"]["density"] == pytest.approx(15 / 24)
    # Hidden units 5, 6, 7 lost every outgoing weight: no path to the output, so 5 of 8 are alive.
    assert rows["fc1.weight"]["kept"] == 48 and rows["fc1.weight"]["alive_units"] == 5

    # The probe's figure: one image file, a real PNG of the figure's size.
    stem = "audit/probe/final_layer_gap/"
    image = {key[len(stem):]: value for key, value in merged.items() if key.startswith(stem)}
    assert image["_type"] == "images/separated" and image["count"] == 1
    png = (run_dir / "files" / image["filenames"][0]).read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and struct.unpack(">II", png[16:24]) == (image["width"], image["height"]) == (450, 320)

    summary = {}
    for record in records:
        if record.WhichOneof("record_type") == "summary":
            summary.update({_key(item): json.loads(item.value_json) for item in record.summary.update})
    assert summary["audit/final_layer/density"] == pytest.approx(15 / 24)
    assert summary["audit/dead_units"] == 3
    report = audit.last_report
    for part in ("mask_verdict", "landscape", "existence"):
        assert summary[f"audit/{part}/verdict"] == getattr(report, part).verdict.name
        assert summary[f"audit/{part}/rules"] == [str(rule) for rule in getattr(report, part).rules]
    assert summary["audit/headline"] == "\n".join(report.headline())
    assert summary["audit/network"]["name"] == "net" and summary["audit/network"]["rule"] == "single child"

    # The mask artifact: type "mask", one safetensors file whose MD5 is that of the file in the run's own
    # directory (not the working directory, not the shared save_dir).
    artifacts = [r.artifact for r in records if r.WhichOneof("record_type") == "artifact" and r.artifact.type == "mask"]
    assert len(artifacts) == 1
    (entry,) = artifacts[0].manifest.contents
    mask_file = run_dir / "files" / "mask.safetensors"
    assert audit.report_paths["mask"] == mask_file and (run_dir / "files" / "report.json").is_file()
    assert not (tmp_path / "report.json").exists() and not (tmp_path / "wb" / "report.json").exists()
    assert entry.path == "mask.safetensors" and entry.size == mask_file.stat().st_size
    assert entry.digest == base64.b64encode(hashlib.md5(mask_file.read_bytes()).digest()).decode()
    assert json.loads(artifacts[0].metadata)["fingerprint"] == MaskSet.load(mask_file).fingerprint() == audit.last_masks.fingerprint()
    assert MaskSet.load(mask_file)["fc2.weight"].equal(mask)

    # The user's metrics after the audit reached W&B: test/loss comes after the audit's last scalars.
    audit_rows = [i for i, row in enumerate(history) if "audit/final_layer/density" in row]
    test_rows = [i for i, row in enumerate(history) if "test/loss" in row]
    assert test_rows and audit_rows and test_rows[-1] > audit_rows[-1]


def test_probe_figures_render_without_pyplot_on_an_agg_canvas():
    """Probes build bare matplotlib Figures (a FigureCanvasBase, which cannot render: the old crash)."""
    import sys

    from matplotlib.figure import Figure

    from prune_landscape.integrations.loggers import figure_to_array

    had_pyplot = "matplotlib.pyplot" in sys.modules
    figure = Figure(figsize=(2, 1), dpi=40, facecolor=(1.0, 0.0, 0.0))
    array = figure_to_array(figure)
    assert array.shape == (40, 80, 3) and array.dtype.name == "uint8"
    assert (array == [255, 0, 0]).all()  # the red face colour, pixel for pixel
    assert ("matplotlib.pyplot" in sys.modules) == had_pyplot  # no pyplot state created


def test_an_unreachable_wandb_server_falls_back_to_offline_within_the_timeout(tmp_path, monkeypatch, offline_wandb):
    """W&B's own default waits 90 s on a server it cannot reach; SafeWandbLogger gives up after
    init_timeout and logs the run offline, so nothing is lost and training starts promptly."""
    from prune_landscape.integrations.loggers import SafeWandbLogger

    monkeypatch.setenv("WANDB_MODE", "online")
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    monkeypatch.setenv("WANDB_BASE_URL", "http://127.0.0.1:9")  # nothing listens there: connection refused
    offline_wandb.teardown()  # W&B caches the settings of earlier (offline) runs process-wide
    ns = namespace("pytorch_lightning")
    logger = SafeWandbLogger(save_dir=tmp_path / "wb", project="t", init_timeout=3)
    start = time.monotonic()
    try:
        with pytest.warns(RuntimeWarning, match="W&B could not start online .*logging this run offline instead"):
            trainer(ns, tmp_path, [LandscapeAudit()], logger=logger, epochs=1).fit(ns.NoForward(), data())
        elapsed = time.monotonic() - start
        run_dir = Path(logger.experiment.dir).parent
    finally:
        offline_wandb.finish()
        offline_wandb.teardown()  # W&B keeps the unreachable server's settings process-wide otherwise
    assert elapsed < 30, f"start-up took {elapsed:.1f} s"
    assert run_dir.name.startswith("offline-run-")
    history = _history(_complete_records(next(run_dir.glob("run-*.wandb"))))
    assert any("audit/final_layer/density" in row for row in history)
