"""The ``prune-landscape`` console script: two Hydra apps, ``audit`` and ``train`` (configs in ``conf/``).

``prune-landscape audit experiment=demo`` runs a pruning-method audit and writes one report;
``prune-landscape train model=lenet pruner=imp`` trains with a pruning pipeline and the landscape audit
callback. The first argument picks the app (config ``conf/audit.yaml`` or ``conf/train.yaml``); everything
after it is Hydra's (overrides, ``--multirun``, ``--cfg job``, ``--help``). The last line printed is the
directory that holds the results.

Adapter module: it may import hydra, omegaconf, pytorch_lightning and wandb; the core never imports it. This
file is the entry point (argument checks, recipe and directory checks, dispatch); the commands live in
``cli_audit.py`` and ``cli_train.py``, their shared helpers in ``cli_config.py``, the loggers in ``cli_loggers.py``.

Example:
    $ prune-landscape audit experiment=demo
    $ prune-landscape audit experiment=sparsity_sweep --multirun audit.sparsity=0.5,0.9
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

import hydra
from hydra import compose, initialize_config_dir
from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.override_parser.overrides_parser import OverridesParser

from prune_landscape.integrations.cli_config import UsageError, dataset_options, load_data
from prune_landscape.integrations.config_check import ConfigError, check_config

__all__ = ["COMMANDS", "CONF_DIR", "UsageError", "dataset_options", "load_data", "main", "run_audit", "run_train"]

_PACKAGE = Path(__file__).resolve().parent.parent  # the prune_landscape package (this file is in integrations/)


def _find_conf_dir(environ: Mapping[str, str] | None = None, package: Path = _PACKAGE) -> Path:
    """The Hydra config directory: ``$PRUNE_LANDSCAPE_CONF``, else the source checkout's ``conf/`` (so edits
    take effect in an editable install), else the copy a wheel ships in ``prune_landscape/_conf/``.

    Raises:
        FileNotFoundError: naming every place looked in.
    """
    environ = os.environ if environ is None else environ
    if environ.get("PRUNE_LANDSCAPE_CONF"):
        # absolute: Hydra would read a relative config_path relative to this file, not the working directory
        chosen = Path(environ["PRUNE_LANDSCAPE_CONF"]).expanduser().absolute()
        if not chosen.is_dir():  # an explicit choice is never silently replaced by another directory
            raise FileNotFoundError(f"PRUNE_LANDSCAPE_CONF={chosen} is not a directory; expected a Hydra config "
                                    f"directory holding audit.yaml and train.yaml")
        return chosen
    # audit.yaml marks ours: an installed package's parent is site-packages, where a foreign `conf/` may live.
    candidates = (package.parent / "conf", package / "_conf")
    for candidate in candidates:
        if (candidate / "audit.yaml").is_file():
            return candidate
    raise FileNotFoundError(f"no prune-landscape configs found; looked for audit.yaml in {candidates[0]} (source "
                            f"checkout) and {candidates[1]} (installed wheel); set PRUNE_LANDSCAPE_CONF to a "
                            f"config directory or reinstall the package")


try:
    #: The Hydra config directory (see ``_find_conf_dir``).
    CONF_DIR = _find_conf_dir()
    _CONF_ERROR = ""
except FileNotFoundError as _error:  # importing the module must work without configs: main() reports it
    CONF_DIR, _CONF_ERROR = _PACKAGE / "_conf", str(_error)


# -------------------------------------------------------------------------------------------- main
#: Command -> what it does (its Hydra task is ``app`` in ``cli_<command>.py``).
COMMANDS: dict[str, str] = {
    "audit": "pruning-method audit: methods x sparsities x final-layer policies -> one sweep report",
    "train": "train with a pruning pipeline and the landscape-audit callback (Lightning)",
}


def command_module(command: str) -> ModuleType:
    """The module of ``command`` (``cli_audit`` or ``cli_train``), imported on first use.

    Deferred on purpose, and the only deferred import of the CLI (it breaks no cycle): the commands import
    torch, Lightning and the experiments (seconds), while a mistyped argument must be reported in well under
    a second, before any of that loads (``tests/test_cli.py::test_the_cli_checks_arguments_without_importing_torch``).
    """
    if command == "audit":
        from prune_landscape.integrations import cli_audit

        return cli_audit
    if command == "train":
        from prune_landscape.integrations import cli_train

        return cli_train
    raise ValueError(f"unknown command {command!r}; expected one of {sorted(COMMANDS)}")


def __getattr__(name: str) -> Any:
    """``run_audit`` and ``run_train``, re-exported from their command modules on first use (see above)."""
    if name in ("run_audit", "run_train"):
        return getattr(command_module(name.removeprefix("run_")), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


USAGE = """usage: prune-landscape {{audit,train}} [HYDRA OVERRIDES...] [--multirun] [--cfg job] [--help]

commands:
""" + "\n".join(f"  {name:<7} {text}" for name, text in COMMANDS.items()) + """

examples:
  prune-landscape audit experiment=demo
  prune-landscape audit experiment=demo audit.methods=[snip,synflow] audit.sparsities=[0.8]
  prune-landscape audit experiment=sparsity_sweep --multirun audit.sparsity=0.5,0.9
  prune-landscape train experiment=imp_lenet_mnist
configs: {conf}   recipes (experiment=...): {recipes}
"""


_VALUE_FLAGS = ("-c", "--cfg", "-p", "--package", "-cp", "--config-path", "-cn", "--config-name", "-cd", "--config-dir",
                "--experimental-rerun", "--info")


def hydra_argv(args: Sequence[str]) -> list[str]:
    """Hydra's flags first, then the overrides: argparse rejects ``a=1 --multirun b=2``, users write it.

    Example:
        >>> hydra_argv(["experiment=demo", "--multirun", "audit.sparsity=0.5,0.9", "--cfg", "job"])
        ['--multirun', '--cfg', 'job', 'experiment=demo', 'audit.sparsity=0.5,0.9']
    """
    flags: list[str] = []
    overrides: list[str] = []
    index = 0
    while index < len(args):
        token = args[index]
        if token.startswith("-") and "=" not in token.split("=")[0][2:] and not token.startswith("~"):
            flags.append(token)
            has_value = index + 1 < len(args) and "=" not in args[index + 1] and not args[index + 1].startswith("-")
            if token in _VALUE_FLAGS and has_value:
                flags.append(args[index + 1])
                index += 1
        else:
            overrides.append(token)
        index += 1
    return flags + overrides


def recipe_command(name: str) -> str | None:
    """The command a recipe is written for (its ``# command: audit|train`` line), None if it has none."""
    path = CONF_DIR / "experiment" / f"{name}.yaml"
    if not path.is_file():
        return None
    for line in path.read_text().splitlines():
        if line.startswith("# command:"):
            return line.split(":", 1)[1].strip()
    return None


def _check_run_directory(overrides: Sequence[str]) -> None:
    """Hydra creates its run directory before our code runs: check it first, for a one-line error."""
    chosen = [o.split("=", 1)[1] for o in overrides if o.startswith(("hydra.run.dir=", "hydra.sweep.dir="))]
    for directory in chosen or ["."]:
        if "${" in directory:
            continue  # resolved by Hydra later
        problem = _unwritable(Path(directory).expanduser())
        if problem:
            print(f"prune-landscape: error: output directory {directory!r} is not writable ({problem}); choose another "
                  f"one (e.g. hydra.run.dir=... or output_dir=...)", file=sys.stderr)
            raise SystemExit(2)


def _unwritable(path: Path) -> str:
    """Why ``path`` could not be made or written ("" when it can), checked without creating anything."""
    for candidate in (path, *path.absolute().parents):
        if candidate.exists():
            if not candidate.is_dir():
                return f"{candidate} is a file, not a directory"
            if not os.access(candidate, os.W_OK | os.X_OK):
                return f"no write permission in {candidate}"
            return ""
    return "no existing parent directory"


def _check_recipe(command: str, overrides: Sequence[str]) -> None:
    recipes = sorted(p.stem for p in (CONF_DIR / "experiment").glob("*.yaml"))
    for override in overrides:
        if not override.startswith(("experiment=", "+experiment=")):
            continue
        for name in override.split("=", 1)[1].split(","):  # a multirun may list several
            if name not in recipes:
                print(f"prune-landscape: error: unknown recipe {name!r}; expected one of {recipes}", file=sys.stderr)
                raise SystemExit(2)
            wanted = recipe_command(name)
            if wanted is not None and wanted != command:
                print(f"prune-landscape: error: recipe {name!r} is for `prune-landscape {wanted}`, not "
                      f"`prune-landscape {command}`", file=sys.stderr)
                raise SystemExit(2)


#: Hydra flags that print instead of running: nothing to check.
_INFO_FLAGS = ("-h", "--help", "--hydra-help", "-c", "--cfg", "-i", "--info", "--resolve", "-sc", "--shell-completion",
               "--version", "-p", "--package")
#: At most this many multirun jobs are checked up front (each job checks its own config anyway).
_MAX_PRECHECKED_JOBS = 64


def _precheck(command: str, args: Sequence[str]) -> None:
    """Compose the config (every multirun job's, up to a limit) and check it, before Hydra makes a directory.

    A composition error is left to Hydra, which reports it before making any directory as well.
    """
    ordered = hydra_argv(args)
    flags = [a for a in ordered if a.startswith("-")]
    if any(flag in _INFO_FLAGS or flag.startswith(("-cp", "--config-path", "-cn", "--config-name", "-cd",
                                                    "--config-dir", "--experimental")) for flag in flags):
        return
    overrides = ordered[len(flags):] if not any(f in _VALUE_FLAGS for f in flags) else [a for a in args if "=" in a and not a.startswith("-")]
    try:
        if "-m" in flags or "--multirun" in flags:
            parsed = OverridesParser.create().parse_overrides([o for o in overrides if not o.startswith("hydra.")])
            batches = BasicSweeper.split_arguments(parsed, None)
            jobs = [job for batch in batches for job in batch][:_MAX_PRECHECKED_JOBS]
        else:
            jobs = [[o for o in overrides if not o.startswith("hydra.")]]
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3", job_name=command):
            configs = [compose(command, overrides=list(job)) for job in jobs]
    except Exception:  # noqa: BLE001 - Hydra's own run reports composition errors (before making any directory)
        return
    for cfg in configs:
        try:
            check_config(cfg, command)
        except ConfigError as error:
            print(f"prune-landscape {command}: error: {error}", file=sys.stderr)
            raise SystemExit(2) from None


def main(argv: Sequence[str] | None = None) -> None:
    """Dispatch ``prune-landscape <command> ...`` to the command's Hydra app."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(USAGE.format(conf=CONF_DIR, recipes=CONF_DIR / "experiment"))
        raise SystemExit(0 if argv else 2)
    command = argv[0]
    if command not in COMMANDS:
        print(f"prune-landscape: error: unknown command {command!r}; expected one of {sorted(COMMANDS)}\n", file=sys.stderr)
        print(USAGE.format(conf=CONF_DIR, recipes=CONF_DIR / "experiment"), file=sys.stderr)
        raise SystemExit(2)
    if _CONF_ERROR:
        print(f"prune-landscape: error: {_CONF_ERROR}", file=sys.stderr)
        raise SystemExit(2)
    if not (CONF_DIR / f"{command}.yaml").is_file():
        print(f"prune-landscape: error: config {CONF_DIR / (command + '.yaml')} not found; set PRUNE_LANDSCAPE_CONF "
              f"to a config directory holding {command}.yaml", file=sys.stderr)
        raise SystemExit(2)
    _check_recipe(command, argv[1:])
    _check_run_directory(argv[1:])
    _precheck(command, argv[1:])
    app = hydra.main(config_path=str(CONF_DIR), config_name=command, version_base="1.3")(command_module(command).app)
    sys.argv = [f"prune-landscape-{command}", *hydra_argv(argv[1:])]
    app()


if __name__ == "__main__":
    main()
