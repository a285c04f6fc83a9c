"""A built wheel ships conf/ and recipes/ inside the package; the CLI finds its configs in the right order."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from prune_landscape.integrations import cli

REPO = Path(__file__).resolve().parent.parent
PACKAGED = "prune_landscape/_conf/"


def _expected_configs() -> dict[str, Path]:
    """Wheel member -> source file: conf/ without its experiment symlink, plus recipes/ as experiment/."""
    conf = {f"{PACKAGED}{p.relative_to(REPO / 'conf').as_posix()}": p
            for p in (REPO / "conf").rglob("*.yaml") if p.relative_to(REPO / "conf").parts[0] != "experiment"}
    recipes = {f"{PACKAGED}experiment/{p.name}": p for p in (REPO / "recipes").glob("*.yaml")}
    return {**conf, **recipes}


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> tuple[Path, Path]:
    """(the wheel built from this checkout, the directory it is unzipped into)."""
    out = tmp_path_factory.mktemp("wheel")
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", str(REPO), "--no-deps", "--no-build-isolation",
                            "--no-index", "--disable-pip-version-check", "-q", "-w", str(out)], capture_output=True, text=True)
    assert build.returncode == 0, build.stderr
    (built,) = out.glob("prune_landscape-*.whl")
    unzipped = tmp_path_factory.mktemp("unzipped")
    with zipfile.ZipFile(built) as archive:
        archive.extractall(unzipped)
    return built, unzipped


def _outside_repo_env(pythonpath: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "PRUNE_LANDSCAPE_CONF"}
    return {**env, "PYTHONPATH": str(pythonpath), "HYDRA_FULL_ERROR": "1"}


def test_wheel_ships_every_config_and_recipe_unchanged(wheel):
    built, _ = wheel
    expected = _expected_configs()
    assert len([k for k in expected if "/experiment/" in k]) >= 6  # the recipes really were found
    with zipfile.ZipFile(built) as archive:
        shipped = {name for name in archive.namelist() if name.startswith(PACKAGED)}
        assert shipped == set(expected)
        for name, source in expected.items():
            assert archive.read(name) == source.read_bytes(), name


def test_demo_composes_from_the_unzipped_wheel_outside_the_repo(wheel, tmp_path):
    _, unzipped = wheel
    env = _outside_repo_env(unzipped)
    where = subprocess.run([sys.executable, "-c", "import prune_landscape.integrations.cli as c; print(c.__file__); print(c.CONF_DIR)"],
                           cwd=tmp_path, env=env, capture_output=True, text=True, check=True)
    assert where.stdout.split() == [str(unzipped / "prune_landscape" / "integrations" / "cli.py"), str(unzipped / PACKAGED.rstrip("/"))]
    composed = subprocess.run([sys.executable, "-m", "prune_landscape.integrations.cli", "audit", "experiment=demo", "--cfg", "job"],
                              cwd=tmp_path, env=env, capture_output=True, text=True)
    assert composed.returncode == 0, composed.stderr
    assert "title: 'Demo audit" in composed.stdout and "- ntk_sap" in composed.stdout


# ------------------------------------------------------------------ resolution order (nothing is built)
def _layout(tmp_path: Path, *, checkout: bool, packaged: bool) -> Path:
    """A package directory with, optionally, a checkout's ../conf and a wheel's _conf; returns the package."""
    package = tmp_path / "site" / "prune_landscape"
    package.mkdir(parents=True)
    for present, directory in ((checkout, package.parent / "conf"), (packaged, package / "_conf")):
        if present:
            directory.mkdir()
            (directory / "audit.yaml").write_text("# a config\n")
    return package


def test_env_var_wins_over_checkout_and_wheel(tmp_path):
    package = _layout(tmp_path, checkout=True, packaged=True)
    chosen = tmp_path / "mine"
    chosen.mkdir()
    assert cli._find_conf_dir({"PRUNE_LANDSCAPE_CONF": str(chosen)}, package) == chosen


def test_env_var_naming_no_directory_is_an_error_not_a_fallback(tmp_path):
    package = _layout(tmp_path, checkout=True, packaged=True)
    with pytest.raises(FileNotFoundError, match=r"PRUNE_LANDSCAPE_CONF=.*missing is not a directory"):
        cli._find_conf_dir({"PRUNE_LANDSCAPE_CONF": str(tmp_path / "missing")}, package)


def test_checkout_conf_wins_over_the_packaged_copy(tmp_path):
    package = _layout(tmp_path, checkout=True, packaged=True)
    assert cli._find_conf_dir({"PRUNE_LANDSCAPE_CONF": ""}, package) == package.parent / "conf"


def test_packaged_copy_when_no_checkout_or_a_foreign_conf_dir(tmp_path):
    package = _layout(tmp_path, checkout=False, packaged=True)
    assert cli._find_conf_dir({}, package) == package / "_conf"
    (package.parent / "conf").mkdir()  # site-packages/conf of some other distribution: no audit.yaml
    assert cli._find_conf_dir({}, package) == package / "_conf"


def test_no_configs_anywhere_names_every_place_looked_in(tmp_path):
    package = _layout(tmp_path, checkout=False, packaged=False)
    with pytest.raises(FileNotFoundError) as error:
        cli._find_conf_dir({}, package)
    assert str(package.parent / "conf") in str(error.value) and str(package / "_conf") in str(error.value)


def test_main_reports_missing_configs_in_one_line(monkeypatch, capsys):
    monkeypatch.setattr(cli, "_CONF_ERROR", "no prune-landscape configs found; looked for audit.yaml in /a and /b")
    with pytest.raises(SystemExit) as exit_:
        cli.main(["audit", "experiment=demo"])
    assert exit_.value.code == 2
    assert capsys.readouterr().err == "prune-landscape: error: no prune-landscape configs found; looked for audit.yaml in /a and /b\n"


def test_this_checkout_resolves_its_top_level_conf(monkeypatch):
    monkeypatch.delenv("PRUNE_LANDSCAPE_CONF", raising=False)
    assert cli._find_conf_dir() == REPO / "conf"
