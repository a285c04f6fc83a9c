"""The core never imports lightning, hydra, omegaconf or wandb (DESIGN.md: adapters call the core)."""

import subprocess
import sys

ADAPTERS = {"prune_landscape.callbacks", "prune_landscape.loggers", "prune_landscape.lit", "prune_landscape.cli", "prune_landscape.datamodules"}

SCRIPT = """
import importlib, pkgutil, sys
import prune_landscape
adapters = set(sys.argv[1].split(","))
imported = []
def walk(path, prefix):  # like pkgutil.walk_packages, but never imports an adapter package to walk it
    for info in pkgutil.iter_modules(path, prefix):
        if info.name in adapters:
            continue
        module = importlib.import_module(info.name)
        imported.append(info.name)
        if info.ispkg:
            walk(module.__path__, info.name + ".")
walk(prune_landscape.__path__, "prune_landscape.")
banned = [m for m in ("lightning", "pytorch_lightning", "hydra", "omegaconf", "wandb") if m in sys.modules]
print(len(imported), ",".join(banned))
"""


def test_core_modules_import_no_framework():
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT, ",".join(sorted(ADAPTERS))], capture_output=True, text=True, check=True
    )
    count, banned = result.stdout.strip().split(" ") if " " in result.stdout.strip() else (result.stdout.strip(), "")
    assert int(count) >= 4  # masks, structure, models, batching at least
    assert banned == "", f"core imported {banned}"
