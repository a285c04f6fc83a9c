"""The ``prune-landscape`` console script: two Hydra apps, ``audit`` and ``train`` (configs in ``conf/``).

``prune-landscape audit experiment=demo`` runs a pruning-method audit and writes one report;
``prune-landscape train model=lenet pruner=imp`` trains with a pruning pipeline and the landscape audit
callback. The first argument picks the app (config ``conf/audit.yaml`` or ``conf/train.yaml``); everything
after it is Hydra's (overrides, ``--multirun``, ``--cfg job``, ``--help``). The last line printed is the
directory that holds the results.

Adapter module: it may import hydra, omegaconf, pytorch_lightning and wandb; the core never imports it.

Example:
    $ prune-landscape audit experiment=demo
    $ prune-landscape audit experiment=sparsity_sweep --multirun audit.sparsity=0.5,0.9
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import sys
import time
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from hydra.errors import HydraException
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from prune_landscape.integrations.config_check import ConfigError, check_config

# torch and the core load inside the commands, after the arguments are checked: a mistake is reported in
# well under a second, before Hydra makes any run directory.

__all__ = ["COMMANDS", "CONF_DIR", "dataset_options", "load_data", "main", "run_audit", "run_train"]

_PACKAGE = Path(__file__).resolve().parent


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

#: Keys of a data config that configure loaders, not the data set.
_LOADER_KEYS = ("_target_", "batch_size", "num_workers", "val_fraction", "seed")
_FILE_KEYS = ("root", "download")
_TORCHVISION = ("mnist", "fashion_mnist", "cifar10", "cifar100")
#: Errors that mean "the configuration is wrong": reported in one line, before any work starts.
_USER_ERRORS = (ValueError, TypeError, KeyError, FileNotFoundError, PermissionError, OmegaConfBaseException,
                HydraException)


def _message(error: BaseException) -> str:
    # Hydra wraps the target's own error ("unknown model ...; expected one of [...]"): show that one.
    cause = error.__cause__ if isinstance(error, HydraException) and error.__cause__ is not None else error
    return str(cause)


class UsageError(Exception):
    """A configuration problem found before any work: printed as one line, exit status 2."""


# ------------------------------------------------------------------------------------------ config
def dataset_options(data_cfg: Any) -> tuple[str, dict[str, Any]]:
    """``(name, options for load_dataset)`` from a data config (loader keys dropped).

    Example:
        >>> dataset_options({"_target_": "x", "name": "digits", "batch_size": 8, "channels": 1})
        ('digits', {'channels': 1})
    """
    raw = OmegaConf.to_container(data_cfg, resolve=True) if isinstance(data_cfg, DictConfig) else dict(data_cfg)
    options = {k: v for k, v in raw.items() if k not in _LOADER_KEYS}
    if "name" not in options:
        raise UsageError(f"the data config needs a `name`, got keys {sorted(raw)}")
    name = str(options.pop("name"))
    if name not in _TORCHVISION:
        options = {k: v for k, v in options.items() if k not in _FILE_KEYS}
    options = {k: v for k, v in options.items() if not (v is None and k in ("max_samples", "image_size", "channels"))}
    return name, options


def _data_info(field: str, *, _root_: DictConfig) -> int:
    """``${data_info:features|classes|channels|image_size}``: model sizes read from the data config."""
    from prune_landscape.data import dataset_info

    name, options = dataset_options(_root_.data)
    info = dataset_info(name, **options)
    shape = info.input_shape
    values = {
        "features": math.prod(shape),
        "channels": shape[0],
        "image_size": shape[-1],
        "classes": info.num_classes if info.num_classes is not None else int(options.get("outputs", 1)),
    }
    if field not in values:
        raise ValueError(f"data_info field must be one of {sorted(values)}, got {field!r}")
    return int(values[field])


OmegaConf.register_new_resolver("data_info", _data_info, replace=True)


def load_data(data_cfg: Any) -> tuple[Any, Any]:
    """(train, test) data for the audit: tensor pairs for in-memory sets, Datasets for torchvision's."""
    from prune_landscape.data import load_dataset

    name, options = dataset_options(data_cfg)
    splits = []
    for split in ("train", "test"):
        dataset = load_dataset(name, split, **options)
        tensors = getattr(dataset, "tensors", None)
        splits.append(tuple(tensors[:2]) if tensors is not None else dataset)
    return splits[0], splits[1]


def _fingerprint(cfg: DictConfig) -> str:
    """Everything a row depends on besides its own axes (method, sparsity, policy, seed)."""
    container = OmegaConf.to_container(cfg, resolve=True)
    audit = container.get("audit", {})
    shared = {"model": container.get("model"), "data": container.get("data"), "fit": container.get("fit"),
              "probes": container.get("probes"),
              "audit": {k: audit.get(k) for k in ("scope", "method_options", "n_samples", "dense_baseline")}}
    return hashlib.sha1(json.dumps(shared, sort_keys=True, default=str).encode()).hexdigest()[:10]


def _output_dir(cfg: DictConfig) -> Path:
    """``cfg.output_dir``, made and proven writable (a clear error before any work otherwise)."""
    try:
        configured = cfg.output_dir
    except OmegaConfBaseException as error:  # ${hydra:...} outside a Hydra run (e.g. hydra.compose)
        raise UsageError(f"output_dir cannot be resolved ({error}); set output_dir=<directory>") from None
    if not configured:
        raise UsageError("output_dir is empty; set output_dir=<directory>")
    from prune_landscape.experiments.sweep import check_writable

    return check_writable(str(configured))


# ------------------------------------------------------------------------------------------- audit
def _build_plan(cfg: DictConfig) -> Any:
    from prune_landscape.experiments.sweep import SweepPlan

    a = cfg.audit
    sparsities = [a.sparsity] if a.get("sparsity") is not None else list(a.sparsities)
    fit = OmegaConf.to_container(cfg.fit, resolve=True)
    epochs, lr = fit.pop("epochs"), fit.pop("lr")
    return SweepPlan(
        methods=tuple(a.methods), sparsities=tuple(sparsities), final_layers=tuple(a.final_layers),
        seeds=tuple(a.seeds), scope=a.scope,
        method_options=OmegaConf.to_container(a.method_options, resolve=True) or {},
        epochs=int(epochs), lr=float(lr), train_options=fit,
        probes=tuple(cfg.probes.names), n_samples=a.n_samples, dense_baseline=bool(a.dense_baseline),
    )


def _check_model(factory: Callable[[], Any], data: Any, *, loss: str = "cross_entropy") -> str:
    """One forward on two samples and the label range, before any work (see ``sweep.check_data``)."""
    from prune_landscape.experiments.sweep import check_data

    model = factory()
    try:
        check_data(model, data, loss=loss, name="data")
    except ValueError as error:
        raise UsageError(str(error)) from None
    return type(model).__name__


@contextlib.contextmanager
def _threads(cfg: DictConfig) -> Iterator[None]:
    """Apply ``torch_threads`` for the duration of a command (restored after, for in-process callers)."""
    import torch

    threads, previous = cfg.get("torch_threads"), torch.get_num_threads()
    if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 1):
        raise UsageError(f"torch_threads must be a positive int or null, got {threads!r}")
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


class _AuditJob:
    """Everything an audit needs, built and validated before any work starts (and before the output folder)."""

    def __init__(self, cfg: DictConfig):
        from hydra.utils import instantiate

        from prune_landscape.data import dataset_info

        self.cfg = cfg
        self.plan = _build_plan(cfg)
        self.train, self.test = load_data(cfg.data)
        name, options = dataset_options(cfg.data)
        self.info = dataset_info(name, **options)
        self.factory = lambda: instantiate(cfg.model)
        loss = str(self.plan.train_options.get("loss", "cross_entropy"))
        model_name = _check_model(self.factory, self.train, loss=loss)
        _check_model(self.factory, self.test, loss=loss)
        self.plan.check_model(self.factory())
        self.context = _fingerprint(cfg)
        self.meta = {
            "model": f"{cfg.model.get('name', model_name)} ({model_name})", "data": name,
            "train / test samples": f"{self.info.num_train} / {self.info.num_test}",
            "training": f"{self.plan.epochs} epochs, lr {self.plan.lr}", "scope": self.plan.scope,
            "probes": ", ".join(self.plan.probes) or "none", "config": self.context,
        }
        self.directory = _output_dir(cfg)  # only now: a wrong setting never leaves an empty folder
        _wandb_offline_if_unreachable(cfg)
        self.loggers = [instantiate(c) for c in (cfg.get("logger") or {}).values()] if cfg.get("logger") else []


def _is_wandb(logger: Any) -> bool:
    return type(logger).__name__.endswith("WandbLogger")


def _log_row(loggers: Sequence[Any], row: dict[str, Any], step: int) -> None:
    """Scalars of one row to the step-based loggers (CSV, TensorBoard); W&B gets one table at the end instead."""
    if row.get("status") == "failed":
        return
    prefix = f"{row['method']}/{row['final_layer_policy']}/s{row['sparsity']:g}/seed{row['seed']}"
    scalars = {f"{prefix}/{k}": float(v) for k, v in (row.get("metrics") or {}).items() if isinstance(v, (int, float))}
    for key in ("train_accuracy", "test_accuracy", "final_layer_density", "density"):
        if row.get(key) is not None:
            scalars[f"{prefix}/{key}"] = float(row[key])
    for logger in loggers:
        if not _is_wandb(logger):
            _guarded(logger, "log_metrics", logger.log_metrics, scalars, step=step)


def _guarded(logger: Any, action: str, function: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """A logger call whose failure becomes a warning: the local report is what must not be lost."""
    try:
        return function(*args, **kwargs)
    except Exception as error:
        warnings.warn(f"{type(logger).__name__} failed during {action} ({type(error).__name__}: {error}); the local "
                      f"report is written anyway", RuntimeWarning, stacklevel=2)
        return None


#: The raw per-row numbers logged as a W&B table (the summary table holds the formatted cells).
_NUMBERS = ("method", "sparsity", "final_layer_policy", "seed", "density", "final_layer_density", "final_layer_dense",
            "fan_in_min", "fan_in_median", "n", "dead_units", "collapsed_layers", "landscape", "existence",
            "train_accuracy", "test_accuracy", "train_loss", "test_loss")


def _cell_value(value: Any) -> Any:
    return ", ".join(value) if isinstance(value, list) else value


def _finish_loggers(loggers: Sequence[Any], paths: dict[str, Path], rows: list[dict[str, Any]], headline: list[str],
                    status: str = "success") -> None:
    """W&B: one summary table, one table of raw numbers and the report's comparative plots; then close every logger."""
    from prune_landscape.experiments.html import COLUMNS

    for logger in loggers:
        if _is_wandb(logger):
            _guarded(logger, "log_table", logger.log_table, "audit/summary", columns=[c.header for c in COLUMNS],
                     data=[[c.text(r) for c in COLUMNS] for r in rows])
            _guarded(logger, "log_table", logger.log_table, "audit/rows", columns=list(_NUMBERS),
                     data=[[_cell_value(r.get(k)) for k in _NUMBERS] for r in rows])
            plots = [p for k, p in paths.items() if k.startswith("plot/")]
            if plots:
                _guarded(logger, "log_image", logger.log_image, "audit/plots", images=[str(p) for p in plots],
                         caption=[p.stem for p in plots])

            def summary(logger: Any = logger) -> None:
                experiment = logger.experiment
                if hasattr(experiment, "summary"):
                    experiment.summary["headline"] = "\n".join(headline)

            _guarded(logger, "summary", summary)
        _guarded(logger, "save", logger.save)
        _guarded(logger, "finalize", logger.finalize, status)
    if any(_is_wandb(logger) for logger in loggers):
        import wandb

        _guarded(wandb, "finish", wandb.finish)  # one W&B run per job, also between the jobs of a multirun


def _wandb_offline_if_unreachable(cfg: DictConfig, timeout: float = 3.0) -> None:
    """With ``logger=wandb`` online, an unreachable server would stall start-up ~90 s: log offline instead."""
    if not any("wandb" in str(c.get("_target_", "")).lower() for c in (cfg.get("logger") or {}).values()):
        return
    import socket
    from urllib.parse import urlparse

    from prune_landscape.integrations.loggers import configure_wandb_mode

    if configure_wandb_mode() != "online":
        return
    url = urlparse(os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai"))
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        socket.create_connection((url.hostname or "api.wandb.ai", port), timeout=timeout).close()
    except OSError as error:
        os.environ["WANDB_MODE"] = "offline"
        warnings.warn(f"W&B server {url.hostname}:{port} is unreachable ({error}); logging offline instead (upload "
                      f"later with `wandb sync`)", RuntimeWarning, stacklevel=2)


def _failure_meta(rows: Sequence[dict[str, Any]]) -> dict[str, str]:
    from prune_landscape.experiments.sweep import failed_rows

    meta = {}
    failed = failed_rows(rows)
    if failed:
        meta["failed rows"] = "; ".join(f"{r['key']}: {r.get('error')}" for r in failed)
    probe_errors = [f"{r['key']} {probe}: {error}" for r in rows for probe, error in (r.get("probe_errors") or {}).items()]
    if probe_errors:
        meta["failed probes"] = "; ".join(probe_errors)
    return meta


def run_audit(cfg: DictConfig, *, hooks: Iterable[Callable[[dict[str, Any]], None]] = ()) -> Path:
    """Run the audit ``cfg`` describes; write the report after every row; return its directory.

    ``hooks`` run after each finished row (after the report is re-rendered). A row, probe, logger or hook
    that fails is recorded (in the row, the report and a warning) and the audit goes on. A KeyboardInterrupt
    or any other exception leaves a complete report of the finished rows, marked interrupted, and propagates.

    Raises:
        UsageError: a configuration problem (nothing has run yet, no output folder made).
    """
    try:
        check_config(cfg, "audit")
    except ConfigError as error:
        raise UsageError(str(error)) from None
    with _threads(cfg):
        return _run_audit(cfg, hooks)


def _run_audit(cfg: DictConfig, hooks: Iterable[Callable[[dict[str, Any]], None]]) -> Path:
    from prune_landscape.experiments.html import headline, render_report
    from prune_landscape.experiments.sweep import RowStore, finished_rows, run_sweep

    try:
        job = _AuditJob(cfg)
    except UsageError:
        raise
    except _USER_ERRORS as error:
        raise UsageError(_message(error)) from error
    store = RowStore(job.directory)
    title = str(cfg.get("title", "Pruning-method audit"))
    started = time.perf_counter()

    def render(interrupted: bool = False) -> tuple[dict[str, Path], list[dict[str, Any]]]:
        with store.lock():
            rows = store.rows()
            meta = {**job.meta, "elapsed": f"{time.perf_counter() - started:.0f} s", **_failure_meta(rows)}
            finished = finished_rows(rows)
            # a torn last line means a writer died mid-row: the report says the run did not finish
            paths = render_report(finished, job.directory, title=title, meta=meta, interrupted=interrupted or store.torn)
        return paths, finished

    steps = iter(range(10**9))
    callbacks = [lambda row: render(), lambda row: _log_row(job.loggers, row, next(steps)), *hooks]
    render()  # an (empty) report exists from the start, so the directory is never half-made
    try:
        run_sweep(job.plan, job.factory, job.train, job.test, store=store, on_row=callbacks, context=job.context,
                  progress=bool(cfg.audit.get("progress", True)), figure_dir=job.directory / "figures")
    except BaseException:  # Ctrl-C or anything unexpected: the finished rows stay readable, marked interrupted
        paths, rows = render(interrupted=True)
        _finish_loggers(job.loggers, paths, rows, headline(rows), status="failed")
        raise
    paths, rows = render()
    _finish_loggers(job.loggers, paths, rows, headline(rows))
    return job.directory


def _hydra_only(directory: Path) -> bool:
    """True when ``directory`` holds nothing but what Hydra writes before our code runs."""
    return directory.is_dir() and all(p.name == ".hydra" or (p.is_file() and p.suffix == ".log") for p in directory.iterdir())


def _remove_empty_run_dir(cfg: DictConfig) -> None:
    """A failed call leaves no folder behind: remove Hydra's run directory (and emptied parents) if unused."""
    import shutil

    try:
        directory = Path(str(cfg.output_dir)).absolute()
    except OmegaConfBaseException:
        return
    if not _hydra_only(directory):
        return
    shutil.rmtree(directory, ignore_errors=True)
    stop = Path.cwd().absolute()
    for parent in directory.parents:
        if parent == stop or stop not in parent.parents:
            break
        try:
            parent.rmdir()  # only succeeds when empty
        except OSError:
            break


def _audit_app(cfg: DictConfig) -> None:
    try:
        directory = run_audit(cfg)
    except UsageError as error:
        _remove_empty_run_dir(cfg)
        print(f"prune-landscape audit: error: {error}", file=sys.stderr)
        raise SystemExit(2) from None
    except KeyboardInterrupt:
        directory = Path(str(cfg.output_dir))
        print(f"interrupted: the finished rows are in {directory / 'report.html'}", file=sys.stderr)
        print(directory, flush=True)
        raise SystemExit(130) from None
    print((directory / "report.md").read_text().split("\n## Probes")[0].split("\n## Plots")[0])
    print(directory, flush=True)


# ------------------------------------------------------------------------------------------- train
def run_train(cfg: DictConfig) -> Path:
    """Train ``cfg.model`` on ``cfg.data`` with the Lightning Trainer, the pruner callback and LandscapeAudit.

    Returns the output directory (checkpoints, logs, ``audit/report.json``).

    Raises:
        UsageError: a configuration problem (nothing has run yet, no output folder made).
        KeyboardInterrupt: Ctrl-C during training (Lightning has shut down and the callbacks have written
            their reports through ``on_exception``).
    """
    try:
        check_config(cfg, "train")
    except ConfigError as error:
        raise UsageError(str(error)) from None
    with _threads(cfg):
        return _run_train(cfg)


def _run_train(cfg: DictConfig) -> Path:
    import signal

    import pytorch_lightning as pl
    from hydra.utils import instantiate

    from prune_landscape.experiments.sweep import fresh_model

    try:
        pl.seed_everything(int(cfg.seed), workers=True, verbose=False)
        datamodule = instantiate(cfg.data)
        model = fresh_model(lambda: instantiate(cfg.model), int(cfg.seed))
        datamodule.setup("fit")
        loss = str(cfg.module.get("loss", "cross_entropy"))
        _check_model(lambda: model, datamodule.train_set, loss=loss)
        module = instantiate(cfg.module, model=model)
        callbacks = [instantiate(cfg.pruner)] if cfg.get("pruner") and "_target_" in cfg.pruner else []
        audit_callback = instantiate(cfg.landscape_audit)
        directory = _output_dir(cfg)  # only after every check: a wrong setting never leaves an empty folder
        _wandb_offline_if_unreachable(cfg)
        loggers = [instantiate(c) for c in (cfg.get("logger") or {}).values()]
        trainer = instantiate(cfg.trainer, callbacks=[*callbacks, audit_callback], logger=loggers or False)
    except UsageError:
        raise
    except _USER_ERRORS as error:
        raise UsageError(_message(error)) from error
    try:
        trainer.fit(module, datamodule=datamodule)
    except SystemExit:
        # Lightning turns Ctrl-C into on_exception hooks (the audit report is written there) and SystemExit(1),
        # and leaves SIGINT ignored: give the handler back and report an interrupt, not a crash.
        signal.signal(signal.SIGINT, signal.default_int_handler)
        if trainer.interrupted:
            raise KeyboardInterrupt from None
        raise
    if cfg.get("test", True) and not trainer.interrupted:
        trainer.test(module, datamodule=datamodule, verbose=False)
    if any(_is_wandb(logger) for logger in loggers):
        import wandb

        _guarded(wandb, "finish", wandb.finish)
    report = getattr(audit_callback, "last_report", None)
    if report is not None:
        print(report)
    return directory


def _train_app(cfg: DictConfig) -> None:
    try:
        directory = run_train(cfg)
    except UsageError as error:
        _remove_empty_run_dir(cfg)
        print(f"prune-landscape train: error: {error}", file=sys.stderr)
        raise SystemExit(2) from None
    except KeyboardInterrupt:
        directory = Path(str(cfg.output_dir))
        print(f"interrupted: the audit report of the training so far is in {directory / 'audit'}", file=sys.stderr)
        print(directory, flush=True)
        raise SystemExit(130) from None
    print(directory, flush=True)


# -------------------------------------------------------------------------------------------- main
COMMANDS: dict[str, tuple[Callable[[DictConfig], None], str]] = {
    "audit": (_audit_app, "pruning-method audit: methods x sparsities x final-layer policies -> one report"),
    "train": (_train_app, "train with a pruning pipeline and the landscape-audit callback (Lightning)"),
}

USAGE = """usage: prune-landscape {{audit,train}} [HYDRA OVERRIDES...] [--multirun] [--cfg job] [--help]

commands:
""" + "\n".join(f"  {name:<7} {text}" for name, (_, text) in COMMANDS.items()) + """

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
    from hydra import compose, initialize_config_dir

    try:
        if "-m" in flags or "--multirun" in flags:
            from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
            from hydra.core.override_parser.overrides_parser import OverridesParser

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
    import hydra

    app = hydra.main(config_path=str(CONF_DIR), config_name=command, version_base="1.3")(COMMANDS[command][0])
    sys.argv = [f"prune-landscape-{command}", *hydra_argv(argv[1:])]
    app()


if __name__ == "__main__":
    main()
