"""``prune-landscape audit``: build and check the sweep a config describes, run it, re-render the report after
every row, log it (see :mod:`~prune_landscape.integrations.cli_loggers`).

Adapter module (Hydra/OmegaConf): the sweep itself is :mod:`prune_landscape.experiments.sweep`.
"""

from __future__ import annotations

import hashlib
import json
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from prune_landscape.integrations.cli_config import (
    _USER_ERRORS,
    UsageError,
    _check_model,
    _message,
    _output_dir,
    _remove_empty_run_dir,
    _threads,
    dataset_options,
    load_data,
)
from prune_landscape.integrations.cli_loggers import _finish_loggers, _log_row, _wandb_offline_if_unreachable
from prune_landscape.integrations.config_check import ConfigError, check_config

__all__ = ["run_audit"]


def _fingerprint(cfg: DictConfig) -> str:
    """Everything a row depends on besides its own axes (method, sparsity, policy, seed)."""
    container = OmegaConf.to_container(cfg, resolve=True)
    audit = container.get("audit", {})
    shared = {"model": container.get("model"), "data": container.get("data"), "fit": container.get("fit"),
              "probes": container.get("probes"),
              "audit": {k: audit.get(k) for k in ("scope", "method_options", "n_samples", "dense_baseline")}}
    return hashlib.sha1(json.dumps(shared, sort_keys=True, default=str).encode()).hexdigest()[:10]



def _build_plan(cfg: DictConfig) -> Any:
    from prune_landscape.experiments.plan import SweepPlan

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



def _failure_meta(rows: Sequence[dict[str, Any]]) -> dict[str, str]:
    from prune_landscape.experiments.rowstore import failed_rows

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
    from prune_landscape.experiments.rowstore import RowStore, finished_rows
    from prune_landscape.experiments.sweep import run_sweep

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

