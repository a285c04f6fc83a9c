"""The audit command's loggers: each finished row's scalars to the step loggers (CSV, TensorBoard), and at the
end one W&B summary table, a table of raw numbers and the report's plots; W&B goes offline when unreachable.

Adapter module: every logger call is guarded, so a failing logger never costs the local report.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from omegaconf import DictConfig


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

