"""``prune-landscape audit``: build and check the sweep a config describes, run it, re-render the sweep report
(``sweep.html``, ``sweep.md``, ``sweep.json``) after every row, log it (see
:mod:`~prune_landscape.integrations.cli_loggers`).

Adapter module (Hydra/OmegaConf): the sweep itself is :mod:`prune_landscape.experiments.sweep`. It loads torch and
the experiments; :mod:`~prune_landscape.integrations.cli` imports it only once the arguments are checked.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from prune_landscape.data import dataset_info
from prune_landscape.experiments import html  # called as html.render_report: the fault tests spy on it
from prune_landscape.experiments.headline import headline
from prune_landscape.experiments.plan import SweepPlan
from prune_landscape.experiments.rowstore import RowStore, failed_rows, finished_rows
from prune_landscape.experiments.sweep import run_sweep
from prune_landscape.integrations.cli_config import (
    _check_model,
    _output_dir,
    checked_command,
    command_exit_codes,
    dataset_options,
    load_data,
    usage_errors,
)
from prune_landscape.integrations.cli_loggers import finish_loggers, log_row, wandb_offline_if_unreachable
from prune_landscape.integrations.config_check import audit_policies

__all__ = ["app", "build_plan", "run_audit"]

Row = dict[str, Any]


def _fingerprint(cfg: DictConfig) -> str:
    """Everything a row depends on besides its own axes (method, sparsity, policy, seed)."""
    container = OmegaConf.to_container(cfg, resolve=True)
    audit = container.get("audit", {})
    shared = {"model": container.get("model"), "data": container.get("data"), "fit": container.get("fit"),
              "probes": container.get("probes"),
              "audit": {k: audit.get(k) for k in ("scope", "method_options", "n_samples", "dense_baseline")}}
    return hashlib.sha1(json.dumps(shared, sort_keys=True, default=str).encode()).hexdigest()[:10]


def build_plan(cfg: DictConfig) -> SweepPlan:
    """The :class:`SweepPlan` an ``audit`` config describes (``audit.final_layers`` read as the deprecated key)."""
    a = cfg.audit
    sparsities = [a.sparsity] if a.get("sparsity") is not None else list(a.sparsities)
    fit = OmegaConf.to_container(cfg.fit, resolve=True)
    epochs, lr = fit.pop("epochs"), fit.pop("lr")
    return SweepPlan(
        methods=tuple(a.methods), sparsities=tuple(sparsities), final_layer_policies=tuple(audit_policies(a)[1]),
        seeds=tuple(a.seeds), scope=a.scope,
        method_options=OmegaConf.to_container(a.method_options, resolve=True) or {},
        epochs=int(epochs), lr=float(lr), train_options=fit,
        probes=tuple(cfg.probes.names), n_samples=a.n_samples, dense_baseline=bool(a.dense_baseline),
    )


def _failure_meta(rows: Sequence[Row]) -> dict[str, str]:
    meta = {}
    failed = failed_rows(rows)
    if failed:
        meta["failed rows"] = "; ".join(f"{r['key']}: {r.get('error')}" for r in failed)
    probe_errors = [f"{r['key']} {probe}: {error}" for r in rows for probe, error in (r.get("probe_errors") or {}).items()]
    if probe_errors:
        meta["failed probes"] = "; ".join(probe_errors)
    return meta


class _AuditJob:
    """Everything an audit needs, built and validated before any work starts (and before the output folder)."""

    def __init__(self, cfg: DictConfig):
        self.cfg = cfg
        self.plan = build_plan(cfg)
        self.train, self.test = load_data(cfg.data)
        name, options = dataset_options(cfg.data)
        info = dataset_info(name, **options)
        self.factory = lambda: instantiate(cfg.model)
        model_name = _check_model(self.factory, self.train, loss=self.plan.loss)
        _check_model(self.factory, self.test, loss=self.plan.loss)
        self.plan.check_model(self.factory())
        self.context = _fingerprint(cfg)
        self.meta = {
            "model": f"{cfg.model.get('name', model_name)} ({model_name})", "data": name,
            "train / test samples": f"{info.num_train} / {info.num_test}",
            "training": f"{self.plan.epochs} epochs, lr {self.plan.lr}", "scope": self.plan.scope,
            "probes": ", ".join(self.plan.probes) or "none", "config": self.context,
        }
        self.directory = _output_dir(cfg)  # only now: a wrong setting never leaves an empty folder
        wandb_offline_if_unreachable(cfg)
        self.loggers = [instantiate(c) for c in (cfg.get("logger") or {}).values()] if cfg.get("logger") else []
        self.store = RowStore(self.directory)
        self.title = str(cfg.get("title", "Pruning-method audit"))
        self.started = time.perf_counter()

    def render(self, interrupted: bool = False) -> tuple[dict[str, Path], list[Row]]:
        """Re-render the sweep report from every finished row in the store; return its paths and those rows."""
        with self.store.lock():
            rows = self.store.rows()
            meta = {**self.meta, "elapsed": f"{time.perf_counter() - self.started:.0f} s", **_failure_meta(rows)}
            finished = finished_rows(rows)
            # a torn last line means a writer died mid-row: the report says the run did not finish
            paths = html.render_report(finished, self.directory, title=self.title, meta=meta,
                                       interrupted=interrupted or self.store.torn)
        return paths, finished

    def finish(self, interrupted: bool = False) -> None:
        """The last render, then the loggers' tables and plots (marked failed when interrupted)."""
        paths, rows = self.render(interrupted=interrupted)
        finish_loggers(self.loggers, paths, rows, headline(rows), status="failed" if interrupted else "success")


def run_audit(cfg: DictConfig, *, hooks: Iterable[Callable[[Row], None]] = ()) -> Path:
    """Run the audit ``cfg`` describes; write the sweep report after every row; return its directory.

    ``hooks`` run after each finished row (after the report is re-rendered). A row, probe, logger or hook
    that fails is recorded (in the row, the report and a warning) and the audit goes on. A KeyboardInterrupt
    or any other exception leaves a complete report of the finished rows, marked interrupted, and propagates.

    Raises:
        UsageError: a configuration problem (nothing has run yet, no output folder made).
    """
    with checked_command(cfg, "audit"):
        return _run_audit(cfg, hooks)


def _job(cfg: DictConfig) -> _AuditJob:
    with usage_errors():
        return _AuditJob(cfg)


def _run_audit(cfg: DictConfig, hooks: Iterable[Callable[[Row], None]]) -> Path:
    job = _job(cfg)
    steps = itertools.count()
    callbacks = [lambda row: job.render(), lambda row: log_row(job.loggers, row, next(steps)), *hooks]
    job.render()  # an (empty) report exists from the start, so the directory is never half-made
    try:
        run_sweep(job.plan, job.factory, job.train, job.test, store=job.store, on_row=callbacks, context=job.context,
                  progress=bool(cfg.audit.get("progress", True)))
    except BaseException:  # Ctrl-C or anything unexpected: the finished rows stay readable, marked interrupted
        job.finish(interrupted=True)
        raise
    job.finish()
    return job.directory


def _summary(markdown: str) -> str:
    """What the console shows of ``sweep.md``: the headline and the tables, not the probes and the plot links."""
    return markdown.split("\n## Probes")[0].split("\n## Plots")[0]


def app(cfg: DictConfig) -> None:
    """The Hydra task of ``prune-landscape audit``: run, print the report's summary, print the directory last.

    Exit status 2 for a configuration problem (one line on stderr, no folder left), 130 for Ctrl-C.
    """
    with command_exit_codes(cfg, "audit", lambda directory: f"interrupted: the finished rows are in {directory / 'sweep.html'}"):
        directory = run_audit(cfg)
    print(_summary((directory / "sweep.md").read_text()))
    print(directory, flush=True)
