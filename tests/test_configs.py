"""Every config and recipe composes; every key is commented; every recipe smoke-runs at tiny sizes.

The torchvision recipes (ntk_sap_resnet20_cifar10: CIFAR-10, imp_lenet_mnist: MNIST) are composed as
written and then run with a digits override (no data files are downloaded here).
"""

from __future__ import annotations

import json
import re
import warnings
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.utils import get_method
from omegaconf import OmegaConf

from prune_landscape.integrations.cli import CONF_DIR, dataset_options, recipe_command, run_audit, run_train
from prune_landscape.data import dataset_info

GROUPS = ("model", "data", "probes", "logger", "launcher", "trainer", "pruner")
RECIPES = sorted(p.stem for p in (CONF_DIR / "experiment").glob("*.yaml"))
REPO = CONF_DIR.parent


@pytest.fixture(scope="module", autouse=True)
def hydra_config_dir():
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        yield


def _options(group):
    return sorted(p.stem for p in (CONF_DIR / group).glob("*.yaml"))


def test_required_recipes_exist_and_live_in_recipes():
    assert (CONF_DIR / "experiment").resolve() == (REPO / "recipes").resolve()
    assert {"demo", "ntk_sap_resnet20_cifar10", "imp_lenet_mnist", "final_layer_ab", "sparsity_sweep",
            "sparsity_sweep_slurm"} <= set(RECIPES)
    for recipe in RECIPES:
        text = (REPO / "recipes" / f"{recipe}.yaml").read_text()
        assert text.startswith("# @package _global_\n"), recipe
        assert recipe_command(recipe) in ("audit", "train"), recipe


@pytest.mark.parametrize("group", GROUPS)
def test_every_group_option_composes_in_its_command(group):
    command = "train" if group in ("trainer", "pruner") else "audit"
    for option in _options(group):
        cfg = compose(command, overrides=[f"{group}={option}", "output_dir=/tmp/unused"], return_hydra_config=True)
        if group == "launcher":
            expected = {"local": "BasicLauncher", "slurm": "SlurmLauncher"}[option]
            assert cfg.hydra.launcher._target_.endswith(expected)
            continue
        node = cfg[group]
        resolved = OmegaConf.to_container(node, resolve=True) if group not in ("logger",) else OmegaConf.to_container(node)
        targets = [resolved.get("_target_")] if "_target_" in resolved else [v.get("_target_") for v in resolved.values() if isinstance(v, dict)]
        for target in filter(None, targets):
            assert callable(get_method(target)), target


@pytest.mark.parametrize("option", _options("data"))
def test_data_configs_pass_only_options_the_loader_takes(option):
    cfg = compose("audit", overrides=[f"data={option}"])
    name, options = dataset_options(cfg.data)
    assert name == option
    info = dataset_info(name, **options)  # raises TypeError on any option load_dataset would reject
    model = OmegaConf.to_container(cfg.model, resolve=True)
    assert model["widths"][0] == int(__import__("math").prod(info.input_shape))


def test_base_audit_config_marks_what_is_mandatory():
    assert sorted(OmegaConf.missing_keys(compose("audit", overrides=["output_dir=x"]))) == ["audit.methods", "audit.sparsities"]
    cfg = compose("audit", overrides=["experiment=sparsity_sweep_slurm"], return_hydra_config=True)
    assert cfg.hydra.launcher.timeout_min == 30 and cfg.hydra.launcher.mem_gb == 8  # the recipe's, over conf/launcher/slurm
    for recipe in RECIPES:
        cfg = compose(recipe_command(recipe), overrides=[f"experiment={recipe}", "output_dir=x"])
        assert not OmegaConf.missing_keys(cfg), recipe


def test_every_key_has_a_comment():
    key = re.compile(r"^\s*(- )?[\w./${}:-]+:( |$)")
    uncommented = []
    for path in sorted(CONF_DIR.rglob("*.yaml")) + sorted((REPO / "recipes").glob("*.yaml")):
        for number, line in enumerate(path.read_text().splitlines(), 1):
            stripped = line.strip()
            if not stripped or stripped.startswith("#") or not key.match(line):
                continue
            if stripped.endswith(":") and stripped[:-1] in ("defaults", "hydra", "job", "run", "sweep", "launcher",
                                                            "sweeper", "params", "audit", "fit", "model", "data",
                                                            "module", "trainer", "pruner", "schedule", "method_options",
                                                            "landscape_audit", "wandb", "csv"):
                continue  # a section header: its keys carry the comments
            if "#" not in line:
                uncommented.append(f"{path.relative_to(REPO)}:{number}: {stripped}")
    assert uncommented == []


TINY_AUDIT = {
    "demo": ["audit.sparsities=[0.9]", "audit.method_options.ntk_sap.iterations=2", "audit.method_options.ntk_sap.repeats=1", "audit.method_options.synflow.iterations=2",
             "data.max_samples=120", "model.widths=[64,64,16,10]", "fit.epochs=1"],
    "final_layer_ab": ["audit.sparsities=[0.8]", "audit.seeds=[0]", "audit.method_options.synflow.iterations=2",
                       "data.n=64", "data.n_test=32", "data.d=16", "model.widths=[16,12,4]", "fit.epochs=1"],
    "sparsity_sweep": ["audit.sparsity=0.8", "audit.methods=[magnitude,synflow]", "audit.method_options.synflow.iterations=2",
                       "data.max_samples=80", "model.widths=[64,8,10]", "fit.epochs=1"],
    "sparsity_sweep_slurm": ["audit.sparsity=0.8", "audit.methods=[random]", "audit.method_options={}",
                             "data.max_samples=80", "model.widths=[64,8,10]", "fit.epochs=1"],
}


@pytest.mark.parametrize("recipe", sorted(TINY_AUDIT))
def test_audit_recipes_smoke_run(recipe, tmp_path):
    cfg = compose("audit", overrides=[f"experiment={recipe}", f"output_dir={tmp_path}", "audit.progress=false", "torch_threads=1",
                                      *TINY_AUDIT[recipe]])
    directory = run_audit(cfg)
    document = json.loads((directory / "sweep.json").read_text())
    plan_rows = 1 + len(cfg.audit.methods) * len(cfg.audit.final_layer_policies) * len(cfg.audit.seeds)
    assert len(document["rows"]) == plan_rows
    assert all(0.0 <= r["test_accuracy"] <= 1.0 for r in document["rows"])
    assert (directory / "sweep.html").is_file() and (directory / "sweep.md").is_file()


TINY_TRAIN = {
    "imp_lenet_mnist": ["data=digits", "data.max_samples=64", "pruner.schedule.rounds=1", "pruner.epochs_per_round=1",
                        "trainer.max_epochs=2", "probes=none"],
    "ntk_sap_resnet20_cifar10": ["data=digits", "~data.augment", "data.num_workers=0", "data.channels=3", "data.max_samples=32", "data.batch_size=16",
                                 "pruner.iterations=1", "pruner.repeats=1", "+pruner.prune_samples=16",
                                 "trainer=cpu", "trainer.precision=32-true", "trainer.max_epochs=1", "probes=none"],
}


@pytest.mark.parametrize("recipe", sorted(TINY_TRAIN))
def test_train_recipes_compose_as_written_and_smoke_run_on_digits(recipe, tmp_path):
    written = compose("train", overrides=[f"experiment={recipe}"])
    assert written.data.name in ("mnist", "cifar10")
    cfg = compose("train", overrides=[f"experiment={recipe}", f"output_dir={tmp_path}", "trainer.enable_progress_bar=false",
                                      "trainer.enable_checkpointing=false", "torch_threads=1", *TINY_TRAIN[recipe]])
    directory = run_train(cfg)
    report = json.loads((directory / "audit" / "report.json").read_text())
    assert report  # the audit callback wrote its report
    if recipe == "imp_lenet_mnist":  # one IMP round at 20 %, classifier kept dense
        structure = report.get("structure", report)
        assert structure["final_layer"]["density"] == 1.0


def _pruner_cfg(**pruner):
    return OmegaConf.create({"pruner": {"_target_": "prune_landscape.integrations.callbacks.PruneAtInit", **pruner}})


def test_the_pruner_policy_key_is_final_layer_policy_and_the_old_key_warns_naming_it():
    from prune_landscape.integrations.config_check import ConfigError, check_config

    check_config(_pruner_cfg(method="snip", sparsity=0.9, final_layer_policy="min_density=0.3", scope="erk"), "train")
    with pytest.warns(FutureWarning, match=r"pruner.final_layer is deprecated; use pruner.final_layer_policy"):
        check_config(_pruner_cfg(final_layer="dense"), "train")
    cases = [
        (_pruner_cfg(final_layer_policy="sparse"), "pruner.final_layer_policy: expected 'prune', 'dense' or a min density"),
        (_pruner_cfg(final_layer="dense", final_layer_policy="dense"), "pruner.final_layer: expected no value: give "
                                                                       "pruner.final_layer_policy only"),
        (_pruner_cfg(scope="local-ish"), "pruner.scope: expected one of ['global', 'layerwise', 'erk'], got 'local-ish'"),
        (_pruner_cfg(sparsity=1.0), "pruner.sparsity: expected a number in [0, 1), got 1.0"),
    ]
    for cfg, message in cases:
        with pytest.raises(ConfigError) as caught, warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            check_config(cfg, "train")
        assert str(caught.value).startswith(message), str(caught.value)


def test_shipped_pruner_configs_use_final_layer_policy():
    for path in sorted((CONF_DIR / "pruner").glob("*.yaml")) + sorted((REPO / "recipes").glob("*.yaml")):
        text = path.read_text()
        assert not re.search(r"^\s*final_layer:", text, re.MULTILINE), path
    for option in _options("pruner"):
        node = compose("train", overrides=[f"pruner={option}", "output_dir=x"]).pruner
        if "_target_" in node:
            assert "final_layer_policy" in node, option
