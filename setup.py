"""Build hook only (metadata lives in pyproject.toml): put the Hydra configs inside the built package.

The top-level ``conf/`` and ``recipes/`` are the single source of truth, but a wheel only ships what is under
the package, so ``build_py`` copies them to ``prune_landscape/_conf/`` (recipes as ``_conf/experiment/``)
in the build directory, never in the source tree. An editable install skips the copy: the CLI reads the
checkout's ``conf/`` directly, so edits take effect without reinstalling.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent
PACKAGED = Path("prune_landscape", "_conf")  # relative to build_lib; the CLI's fallback config directory


class build_py_with_conf(build_py):
    def run(self) -> None:
        super().run()
        if getattr(self, "editable_mode", False):
            return
        conf, recipes = ROOT / "conf", ROOT / "recipes"
        for source in (conf, recipes):
            if not source.is_dir():
                raise FileNotFoundError(f"cannot package the configs: expected the directory {source}")
        target = Path(self.build_lib) / PACKAGED
        shutil.rmtree(target, ignore_errors=True)  # a reused build/ must not keep recipes deleted since
        # conf/experiment is a symlink to ../recipes (a plain text file on checkouts without symlinks):
        # skip it and copy recipes/ itself, so the wheel holds real files either way.
        shutil.copytree(conf, target, ignore=lambda d, names: ["experiment"] if Path(d) == conf else [])
        shutil.copytree(recipes, target / "experiment")


setup(cmdclass={"build_py": build_py_with_conf})
