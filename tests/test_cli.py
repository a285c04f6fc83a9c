"""The `prune-landscape` CLI: dispatch, clear errors before work, Ctrl-C, the real console script, multirun."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir

from prune_landscape import models
from prune_landscape.integrations.cli import CONF_DIR, UsageError, main, recipe_command, run_audit, run_train
from prune_landscape.data import digits
from test_html import _check_cells, _Tables

SCRIPT = Path(sys.executable).parent / "prune-landscape"
TINY = ["audit.methods=[magnitude,random]", "audit.sparsities=[0.9]", "audit.final_layer_policies=[prune,dense]",
        "data.max_samples=150", "data.batch_size=32", "model.widths=[64,64,64,10]", "fit.epochs=8", "audit.progress=false",
        "torch_threads=1"]


@pytest.fixture(autouse=True)
def hydra_config_dir():
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        yield


def _cfg(tmp_path, *overrides):
    return compose("audit", overrides=[f"output_dir={tmp_path}", *TINY, *overrides])


@pytest.fixture(scope="module")
def tiny_audit(tmp_path_factory):
    directory = tmp_path_factory.mktemp("tiny")
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        run_audit(compose("audit", overrides=[f"output_dir={directory}", *TINY]))
    return directory


def test_tiny_audit_numbers_match_an_oracle_and_the_pages(tiny_audit):
    document = json.loads((tiny_audit / "sweep.json").read_text())
    rows = {r["key"]: r for r in document["rows"]}
    assert sorted(rows) == ["dense|0|dense|0", "magnitude|0.9|dense|0", "magnitude|0.9|prune|0",
                            "random|0.9|dense|0", "random|0.9|prune|0"]
    # oracle: global magnitude at init by hand, on the same seeded init (PyTorch default init from seed 0)
    net = models.mlp([64, 64, 64, 10])
    net.init_weights(generator=torch.Generator().manual_seed(0))
    weights = [getattr(net, f"fc{i}").weight.detach().abs().flatten() for i in (1, 2, 3)]
    everything = torch.cat(weights)
    keep = round(0.1 * everything.numel())
    threshold = everything.sort(descending=True).values[keep - 1]
    final_density = float((weights[-1] >= threshold).float().mean())
    assert rows["magnitude|0.9|prune|0"]["final_layer_density"] == pytest.approx(final_density)
    assert rows["magnitude|0.9|prune|0"]["density"] == pytest.approx(keep / everything.numel())
    assert rows["magnitude|0.9|dense|0"]["final_layer_density"] == 1.0
    # the test accuracy is what the trained model scores on the test split (n = train samples)
    assert all(r["n"] == 150 for r in rows.values())
    assert rows["dense|0|dense|0"]["test_accuracy"] > 0.5
    # the pages show exactly the JSON numbers
    parser = _Tables()
    parser.feed((tiny_audit / "sweep.html").read_text())
    table = parser.tables[0]
    _check_cells([t for t, _ in table[0]], [[t for t, _ in row] for row in table[1:]], document["rows"])
    lines = (tiny_audit / "sweep.md").read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("| method |"))
    md = [[c.strip() for c in line.strip("|").split("|")] for line in lines[start:start + 2 + len(rows)]]
    _check_cells(md[0], md[2:], document["rows"])
    assert len((tiny_audit / "rows.jsonl").read_text().splitlines()) == 5


def test_ctrl_c_keeps_finished_rows_and_a_rerun_completes(tmp_path):
    seen = []

    def interrupt_after_first(row):
        seen.append(row["key"])
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_audit(_cfg(tmp_path), hooks=[interrupt_after_first])
    document = json.loads((tmp_path / "sweep.json").read_text())
    assert document["interrupted"] is True
    assert [r["key"] for r in document["rows"]] == seen == ["dense|0|dense|0"]
    assert "Interrupted" in (tmp_path / "sweep.html").read_text()
    assert "dense" in (tmp_path / "sweep.md").read_text()
    # the same command again finishes the rest without redoing the first row
    run_audit(_cfg(tmp_path), hooks=[lambda row: seen.append(row["key"])])
    assert len(seen) == 5 and seen.count("dense|0|dense|0") == 1
    document = json.loads((tmp_path / "sweep.json").read_text())
    assert document["interrupted"] is False and len(document["rows"]) == 5


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["audit.methods=[magnitude,snipp]"], r"^audit.methods: expected names from \[.*'snip'.*'synflow'\], got 'snipp'$"),
        (["model.name=resnet21"], r"^model.name: expected one of \[.*'resnet20'.*\], got 'resnet21'$"),
        (["data.name=digitz"], r"^data.name: expected one of \[.*'digits'.*\], got 'digitz'$"),
        (["audit.sparsities=[1.5]"], r"^audit.sparsities: expected numbers in \[0, 1\), got 1.5$"),
        (["audit.final_layer_policies=[sparse]"], "^audit.final_layer_policies: expected 'prune', 'dense' or a min density.*got 'sparse'$"),
        (["probes=none", "probes.names=[hesian]"], r"^probes.names: expected names from \[.*'hessian'.*\], got 'hesian'$"),
        (["fit.optimizer=adamm"], r"^fit.optimizer: expected one of \['adam', 'sgd'\], got 'adamm'$"),
        (["fit.loss=hinge"], r"^fit.loss: expected one of \['cross_entropy', 'mse'\], got 'hinge'$"),
        (["data.batch_size=0"], r"^data.batch_size: expected a positive int, got 0$"),
        (["fit.batch_size=-3"], r"^fit.batch_size: expected a positive int, got -3$"),
        (["fit.weight_decay=nan"], r"^fit.weight_decay: expected a finite number >= 0, got nan$"),
        (["+audit.method_options.snip.prune_sample=10"],
         r"^audit.method_options.snip: expected option names from \[.*'prune_samples'\], got 'prune_sample'$"),
        (["+fit.epoch=3"], r"^fit.epoch: expected a key from \[.*'epochs'.*\] \(unknown key\), got 3$"),
        (["model.widths=[32,8,10]"], r"the model does not accept these inputs: expected \(N, \.\.\., 32\) float inputs.*"
                                     r"got inputs of shape \(N, 1, 8, 8\) float32"),
        (["model.widths=[64,16,5]"], r"labels must be in \[0, 4\] for a model with 5 outputs \(classes\), got labels in \[0, 9\]"),
        (["model.widths=[64,64,10]"], r"final-layer policy 'dense' at sparsity 0.9 needs 640 weights in fc2.weight but the whole budget is 474 of 4736"),
    ],
)
def test_bad_names_fail_before_work_and_list_the_choices(tmp_path, overrides, message):
    output = tmp_path / "out"
    with pytest.raises(UsageError, match=message):
        run_audit(compose("audit", overrides=[f"output_dir={output}", *TINY, *overrides]))
    assert not output.exists()  # checked before the output folder is made


def test_audit_final_layers_is_the_deprecated_key_of_final_layer_policies(tmp_path):
    """An old command line (``audit.final_layers=[...]``) still plans the same rows, with a warning naming the new key."""
    from prune_landscape.integrations.cli_audit import build_plan
    from prune_landscape.integrations.config_check import check_config

    old = _cfg(tmp_path, "audit.final_layers=[dense,0.3]")
    with pytest.warns(FutureWarning, match=r"audit.final_layers is deprecated; use audit.final_layer_policies"):
        check_config(old, "audit")
    assert build_plan(old).final_layer_policies == ("dense", "min_density=0.3")
    assert build_plan(_cfg(tmp_path)).final_layer_policies == ("prune", "dense")  # TINY's new key
    with pytest.raises(UsageError, match=r"^audit.final_layers: expected 'prune', 'dense' or a min density"):
        run_audit(_cfg(tmp_path / "out", "audit.final_layers=[sparse]"))


def test_unknown_group_option_lists_the_options():
    with pytest.raises(Exception, match=r"(?s)model/mlpp.*Available options.*lenet.*mlp.*resnet20"):
        compose("audit", overrides=["model=mlpp"])


def test_unwritable_output_directory_fails_before_work(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(UsageError, match="not writable"):
        run_audit(_cfg(blocker / "out"))


def test_missing_mandatory_keys_are_named(tmp_path):
    with pytest.raises(UsageError, match=r"^audit.(methods|sparsities): expected a value \(the key is mandatory\), got '\?\?\?'$"):
        run_audit(compose("audit", overrides=[f"output_dir={tmp_path}"]))


def test_dispatch_errors(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["frobnicate"])
    assert exit_info.value.code == 2
    assert "unknown command 'frobnicate'; expected one of ['audit', 'train']" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        main(["audit", "experiment=dmeo"])
    assert exit_info.value.code == 2 and "unknown recipe 'dmeo'; expected one of [" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["audit", "experiment=imp_lenet_mnist"])
    assert "is for `prune-landscape train`" in capsys.readouterr().err
    blocker = Path(__file__)  # a file: no directory can be made under it
    with pytest.raises(SystemExit) as exit_info:
        main(["audit", "experiment=demo", f"hydra.run.dir={blocker}/run"])
    assert exit_info.value.code == 2 and "is not writable" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0 and "experiment=demo" in capsys.readouterr().out


def _run_script(*args, cwd):
    env = {**os.environ, "WANDB_MODE": "offline", "HYDRA_FULL_ERROR": "0"}
    return subprocess.run([str(SCRIPT), *args], capture_output=True, text=True, cwd=cwd, env=env, timeout=300)


def test_console_script_prints_the_report_directory_last(tmp_path):
    run_dir = tmp_path / "run"
    result = _run_script("audit", "experiment=demo", f"hydra.run.dir={run_dir}", "audit.methods=[magnitude]",
                         "audit.final_layer_policies=[prune]", *TINY[1:], cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip().splitlines()[-1] == str(run_dir)
    assert {"sweep.json", "sweep.md", "sweep.html", "rows.jsonl"} <= {p.name for p in run_dir.iterdir()}
    bad = _run_script("audit", "experiment=demo", f"hydra.run.dir={tmp_path / 'bad'}", "audit.methods=[nope]", cwd=tmp_path)
    assert bad.returncode == 2 and "audit.methods: expected names from [" in bad.stderr and "got 'nope'" in bad.stderr
    assert "Traceback" not in bad.stderr
    assert not (tmp_path / "bad").exists()  # reported before Hydra makes the run directory


def test_multirun_over_two_sparsities_gives_one_report(tmp_path):
    sweep = tmp_path / "sweep"
    result = _run_script("audit", "experiment=sparsity_sweep", "--multirun", "audit.sparsity=0.5,0.9",
                         f"hydra.sweep.dir={sweep}", "audit.methods=[magnitude]", "data.max_samples=100",
                         "model.widths=[64,16,10]", "fit.epochs=1", "audit.progress=false", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip().splitlines()[-1] == str(sweep)
    document = json.loads((sweep / "sweep.json").read_text())
    assert sorted(r["key"] for r in document["rows"]) == ["dense|0|dense|0", "magnitude|0.5|prune|0", "magnitude|0.9|prune|0"]
    assert "50.0 %" in (sweep / "sweep.md").read_text() and "90.0 %" in (sweep / "sweep.md").read_text()


def test_wandb_is_opt_in_and_offline(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    run_audit(_cfg(tmp_path, "logger=wandb", "audit.methods=[random]", "audit.final_layer_policies=[prune]"))
    runs = list((tmp_path / "wandb").glob("offline-run-*/run-*.wandb"))
    assert len(runs) == 1 and runs[0].stat().st_size > 0
    assert len(json.loads((tmp_path / "sweep.json").read_text())["rows"]) == 2


LIVE_NAMES = """
import inspect, json
from prune_landscape import data, models, training
from prune_landscape.probes import PROBES
from prune_landscape.pruning import available_methods, get_pruner
print(json.dumps({
    "methods": {m: get_pruner(m).valid_options() for m in available_methods()},
    "probes": sorted(PROBES),
    "datasets": {k: sorted(v) for k, v in data._OPTIONS.items()},
    "models": {k: sorted(inspect.signature(f).parameters) for k, f in models.MODELS.items()},
    "losses": list(training.LOSSES),
}))
"""


def test_the_fast_checker_knows_exactly_the_built_in_names():
    """The CLI checks names without importing torch; its tables must equal the live registries (fresh process)."""
    from prune_landscape.integrations import config_check

    result = subprocess.run([sys.executable, "-c", LIVE_NAMES], capture_output=True, text=True, check=True,
                            env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])})
    live = json.loads(result.stdout.strip().splitlines()[-1])
    assert {m: list(o) for m, o in config_check.METHOD_OPTIONS.items()} == live["methods"]
    assert list(config_check.PROBE_NAMES) == live["probes"]
    assert {k: sorted(v) for k, v in config_check.DATASET_OPTIONS.items()} == live["datasets"]
    assert {k: sorted(v) for k, v in config_check.MODEL_OPTIONS.items()} == live["models"]
    assert list(config_check._LOSSES) == live["losses"]


def test_every_recipe_and_default_config_passes_the_checker():
    from prune_landscape.integrations.config_check import check_config

    for command in ("audit", "train"):
        check_config(compose(command, overrides=["audit.methods=[magnitude]", "audit.sparsities=[0.5]"]
                             if command == "audit" else []), command)
    for recipe in sorted(p.stem for p in (CONF_DIR / "experiment").glob("*.yaml")):
        command = recipe_command(recipe) or "audit"
        check_config(compose(command, overrides=[f"experiment={recipe}"]), command)


def test_train_settings_are_checked_before_any_folder(tmp_path, capsys):
    output = tmp_path / "train"
    with pytest.raises(UsageError, match=r"^module.optimizer: expected one of \['adam', 'adamw', 'sgd'\], got 'lion'$"):
        run_train(compose("train", overrides=[f"output_dir={output}", "module.optimizer=lion"]))
    with pytest.raises(UsageError, match=r"^probes.names: expected names from \[.*\], got 'hesian'$"):
        run_train(compose("train", overrides=[f"output_dir={output}", "probes.names=[hesian]"]))
    with pytest.raises(UsageError, match=r"^data.batch_size: expected a positive int, got 0$"):
        run_train(compose("train", overrides=[f"output_dir={output}", "data.batch_size=0"]))
    assert not output.exists()
    from hydra.core.global_hydra import GlobalHydra

    GlobalHydra.instance().clear()  # as in a fresh `prune-landscape` process (the fixture restores its own state)
    with pytest.raises(SystemExit) as exit_info:
        main(["train", f"hydra.run.dir={output}", "module.loss=hinge"])
    assert exit_info.value.code == 2 and not output.exists()
    assert capsys.readouterr().err.strip() == ("prune-landscape train: error: module.loss: expected one of "
                                               "['cross_entropy', 'mse'], got 'hinge'")


def test_the_cli_checks_arguments_without_importing_torch():
    """What keeps a CLI mistake under a second: the package, the CLI and the checker load no torch."""
    code = ("import sys, prune_landscape, prune_landscape.integrations.cli, prune_landscape.integrations.config_check; "
            "print(sorted(m for m in ('torch', 'pytorch_lightning', 'wandb', 'sklearn') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                            env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])})
    assert result.stdout.strip() == "[]"
