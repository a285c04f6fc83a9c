"""The audit command's loggers: each finished row's numbers to the step loggers (CSV, TensorBoard), and at the
end one W&B summary table, a table of raw values and the sweep report's plots; W&B goes offline when unreachable.

What is logged is read from the row (:mod:`prune_landscape.experiments.row`): the step loggers get
:func:`~prune_landscape.experiments.row.row_metrics` (the audit report's ``metrics()`` plus the training
numbers), the W&B raw table :func:`~prune_landscape.experiments.row.row_table`, the W&B summary table the
report page's columns (:data:`prune_landscape.experiments.html.COLUMNS`). No key list is kept here.

Adapter module: every logger call is guarded, so a failing logger never costs the local report.
"""

from __future__ import annotations

import os
import socket
import sys
import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from omegaconf import DictConfig

from prune_landscape.experiments.html import COLUMNS
from prune_landscape.experiments.row import row_metrics, row_table
from prune_landscape.integrations.loggers import configure_wandb_mode

__all__ = ["finish_loggers", "finish_wandb_run", "log_row", "wandb_offline_if_unreachable"]


def _is_wandb(logger: Any) -> bool:
    return type(logger).__name__.endswith("WandbLogger")


def _guarded(logger: Any, action: str, function: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """A logger call whose failure becomes a warning: the local report is what must not be lost."""
    try:
        return function(*args, **kwargs)
    except Exception as error:
        warnings.warn(f"{type(logger).__name__} failed during {action} ({type(error).__name__}: {error}); the local "
                      f"report is written anyway", RuntimeWarning, stacklevel=2)
        return None


def finish_wandb_run() -> None:
    """End the W&B run a WandbLogger started (one run per job, also between the jobs of a multirun).

    wandb is read from ``sys.modules``, never imported: a WandbLogger that ran has imported it, and without one
    there is no run to finish (importing wandb would only cost a second).
    """
    wandb = sys.modules.get("wandb")
    if wandb is not None and hasattr(wandb, "finish"):
        _guarded(wandb, "finish", wandb.finish)


def log_row(loggers: Sequence[Any], row: Mapping[str, Any], step: int) -> None:
    """One finished row's numbers to the step-based loggers (CSV, TensorBoard), under the cell's prefix.

    W&B gets one table at the end instead (no one-point chart per number); a failed row logs nothing.
    """
    if row.get("status") == "failed":
        return
    prefix = f"{row['method']}/{row['final_layer_policy']}/s{row['sparsity']:g}/seed{row['seed']}"
    scalars = {f"{prefix}/{name}": value for name, value in row_metrics(row).items()}
    for logger in loggers:
        if not _is_wandb(logger):
            _guarded(logger, "log_metrics", logger.log_metrics, scalars, step=step)


def _wandb_tables(logger: Any, paths: Mapping[str, Path], rows: Sequence[Mapping[str, Any]], headline: Sequence[str]) -> None:
    """The summary table (the page's cells), the raw values, the plots and the headline, to one W&B logger."""
    _guarded(logger, "log_table", logger.log_table, "audit/summary", columns=[c.header for c in COLUMNS],
             data=[[c.text(r) for c in COLUMNS] for r in rows])
    columns, data = row_table(rows)
    _guarded(logger, "log_table", logger.log_table, "audit/rows", columns=columns, data=data)
    plots = [p for k, p in paths.items() if k.startswith("plot/")]
    if plots:
        _guarded(logger, "log_image", logger.log_image, "audit/plots", images=[str(p) for p in plots],
                 caption=[p.stem for p in plots])

    def summary() -> None:
        experiment = logger.experiment
        if hasattr(experiment, "summary"):
            experiment.summary["headline"] = "\n".join(headline)

    _guarded(logger, "summary", summary)


def finish_loggers(loggers: Sequence[Any], paths: Mapping[str, Path], rows: Sequence[Mapping[str, Any]],
                   headline: Sequence[str], status: str = "success") -> None:
    """W&B: one summary table, one table of raw values and the report's plots; then close every logger."""
    for logger in loggers:
        if _is_wandb(logger):
            _wandb_tables(logger, paths, rows, headline)
        _guarded(logger, "save", logger.save)
        _guarded(logger, "finalize", logger.finalize, status)
    if any(_is_wandb(logger) for logger in loggers):
        finish_wandb_run()


def wandb_offline_if_unreachable(cfg: DictConfig, timeout: float = 3.0) -> None:
    """With ``logger=wandb`` online, an unreachable server would stall start-up ~90 s: log offline instead.

    Example:
        >>> from omegaconf import OmegaConf
        >>> wandb_offline_if_unreachable(OmegaConf.create({"logger": None}))  # no W&B logger: nothing to do
    """
    if not any("wandb" in str(c.get("_target_", "")).lower() for c in (cfg.get("logger") or {}).values()):
        return
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
