"""Nothing outside ``integrations/`` imports lightning, hydra, omegaconf or wandb (DESIGN.md: adapters call the core).

Imported for real in a fresh interpreter: every module of the package except the ``integrations/`` folder
(the adapter tier, found from the folder, not a list) and the deprecated aliases of moved adapters
(``prune_landscape.callbacks``, ``prune_landscape.cli`` and co.: modules that call ``prune_landscape._moved.alias``).
"""

import subprocess
import sys

SCRIPT = """
import importlib, pkgutil, sys
from pathlib import Path
import prune_landscape
skipped, imported = [], []
def is_alias(info):  # a deprecated alias forwards to integrations/: reading it would import the adapters
    path = Path(info.module_finder.path, info.name.rpartition(".")[2] + ".py")
    return not info.ispkg and path.is_file() and "from prune_landscape._moved import alias" in path.read_text()
def walk(path, prefix):  # like pkgutil.walk_packages, but never imports the adapter tier to walk it
    for info in pkgutil.iter_modules(path, prefix):
        if info.name == "prune_landscape.integrations" or is_alias(info):
            skipped.append(info.name)
            continue
        module = importlib.import_module(info.name)
        imported.append(info.name)
        if info.ispkg:
            walk(module.__path__, info.name + ".")
walk(prune_landscape.__path__, "prune_landscape.")
banned = [m for m in ("lightning", "pytorch_lightning", "hydra", "omegaconf", "wandb") if m in sys.modules]
print(",".join(sorted(skipped)), ",".join(imported), ",".join(banned))
"""


def test_modules_outside_integrations_import_no_framework():
    result = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, check=True)
    fields = (result.stdout.rstrip("\n").split(" ") + ["", ""])[:3]  # the banned field is empty when all is well
    skipped, imported, banned = (field.split(",") if field else [] for field in fields)
    assert skipped == ["prune_landscape.callbacks", "prune_landscape.cli", "prune_landscape.datamodules",
                       "prune_landscape.integrations", "prune_landscape.lit", "prune_landscape.loggers"]
    assert {"prune_landscape.masks", "prune_landscape.structure", "prune_landscape.experiments.sweep",
            "prune_landscape.experiments.html", "prune_landscape.training"} <= set(imported)
    assert banned == [], f"modules outside integrations/ imported {banned}"


ALIASES = """
import warnings
warnings.simplefilter("always")
with warnings.catch_warnings(record=True) as caught:
    from prune_landscape.callbacks import LandscapeAudit
    from prune_landscape.callbacks import PruneAtInit  # a second import of the same alias: no second warning
    import prune_landscape.lit, prune_landscape.loggers, prune_landscape.datamodules
    import prune_landscape as pl
    pl.lit  # the lazy attribute of the old name is the same alias module
    from prune_landscape.cli import main  # what console scripts installed before the move run: no warning
from prune_landscape.integrations import callbacks, cli, datamodules, lit, loggers
same = [LandscapeAudit is callbacks.LandscapeAudit, PruneAtInit is callbacks.PruneAtInit,
        prune_landscape.lit.LitClassifier is lit.LitClassifier,
        prune_landscape.loggers.SafeWandbLogger is loggers.SafeWandbLogger,
        prune_landscape.datamodules.DataModule is datamodules.DataModule,
        prune_landscape.loggers._DummyExperiment is loggers._DummyExperiment,  # private names forward too
        main is cli.main]
print(same)
for w in caught:
    print(w.category.__name__, w.filename, w.message)
"""


def test_the_old_adapter_paths_are_aliases_that_warn_once():
    result = subprocess.run([sys.executable, "-c", ALIASES], capture_output=True, text=True, check=True)
    lines = result.stdout.strip().splitlines()
    assert lines[0] == "[True, True, True, True, True, True, True]"
    expected = [f"DeprecationWarning sys prune_landscape.{name} moved to prune_landscape.integrations.{name}; "
                f"import from prune_landscape.integrations.{name} instead (prune_landscape.{name} is a deprecated "
                f"alias and will be removed)" for name in ("callbacks", "lit", "loggers", "datamodules")]
    assert lines[1:] == expected  # one each, at the importing line (-c code has no file: "sys"), not importlib
