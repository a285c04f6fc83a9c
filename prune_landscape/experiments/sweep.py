"""Pruning-method audits: prune one model with several methods, sparsities, final-layer policies and seeds.

Each *cell* (method x sparsity x final-layer policy x seed) starts from the same freshly initialised
network for its seed, is pruned, optionally trained briefly under its mask with the core trainer, and is
audited; the result is one plain-dict *row*. Rows go to a :class:`RowStore` (``rows.jsonl``, one line per
finished row, appended under a file lock) the moment they finish, so an interrupted sweep loses nothing
already done and a re-run in the same directory skips them. Several processes (a Hydra multirun, SLURM
array jobs) may share one store: the report is re-rendered from all rows.

Experiment module (the plan is in :mod:`~prune_landscape.experiments.plan`, the store in
:mod:`~prune_landscape.experiments.rowstore`): plain arguments in, plain rows out; no Hydra, Lightning or W&B.

Example:
    >>> from prune_landscape import models
    >>> plan = SweepPlan(methods=("magnitude",), sparsities=(0.9,), dense_baseline=False)
    >>> row = audit_cell(plan.cells()[0], plan, lambda: models.mlp([8, 16, 3]), (torch.randn(32, 8), torch.arange(32) % 3))
    >>> row["key"], row["final_layer_policy"], round(row["density"], 2)
    ('magnitude|0.9|prune|0', 'prune', 0.1)
"""

from __future__ import annotations

import os
import time
import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from prune_landscape.batching import DataLike, num_samples
from prune_landscape.datacheck import check_data
from prune_landscape.experiments.plan import DENSE, Cell, SweepPlan
from prune_landscape.experiments.rowstore import RowStore, _jsonable, finished_rows, safe_name
from prune_landscape.masks import MaskSet, make_pruning_permanent

__all__ = ["ProbeFailure", "audit_cell", "fresh_model", "run_sweep"]


def fresh_model(factory: Callable[[], nn.Module], seed: int) -> nn.Module:
    """Build a model and draw its initial weights from ``seed`` (its ``init_weights`` when it has one).

    Example:
        >>> from prune_landscape import models
        >>> a, b = (fresh_model(lambda: models.mlp([4, 3]), 7) for _ in range(2))
        >>> bool(torch.equal(a.fc1.weight, b.fc1.weight))
        True
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        model = factory()
    if hasattr(model, "init_weights"):
        model.init_weights(generator=torch.Generator().manual_seed(int(seed)))
    return model


def _figure(result: Any, path: Path) -> bool:
    figure_fn = getattr(result, "figure", None)
    figure = figure_fn() if callable(figure_fn) else None
    if figure is None:
        return False
    import matplotlib.pyplot as plt

    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=80)
    plt.close(figure)
    return True


@dataclass(frozen=True)
class ProbeFailure:
    """A probe that raised: kept in the report in place of its result, so the row and the run go on."""

    name: str
    error: str

    def to_dict(self) -> dict[str, str]:
        """A JSON-ready dict: ``{"error": "<type>: <message>"}``."""
        return {"error": self.error}

    def scalars(self) -> dict[str, float]:
        """No numbers: the probe gave none."""
        return {}

    def figure(self) -> None:
        """No figure."""
        return None


def _error_text(error: BaseException) -> str:
    return f"{type(error).__name__}: {' '.join(str(error).split())}"[:2000]


def _isolated_probe(name: str, probe: Callable[[nn.Module, DataLike], Any], label: str) -> Callable[[nn.Module, DataLike], Any]:
    """``probe`` that returns a :class:`ProbeFailure` (and warns) instead of raising."""

    def run(model: nn.Module, data: DataLike) -> Any:
        try:
            return probe(model, data)
        except Exception as error:  # one probe (e.g. a diverged model's Hessian) must not end the row
            warnings.warn(f"{label}: probe {name!r} failed ({_error_text(error)}); the row keeps its other results",
                          RuntimeWarning, stacklevel=2)
            return ProbeFailure(name, _error_text(error))

    run.__name__ = name
    return run


def audit_cell(cell: Cell, plan: SweepPlan, factory: Callable[[], nn.Module], train_data: DataLike,
               test_data: DataLike | None = None, *, figure_dir: str | os.PathLike | None = None,
               context: str = "") -> dict[str, Any]:
    """Prune, train and audit one cell; return its row (plain, JSON-ready).

    Args:
        cell: what to run.
        plan: the shared settings (training, probes, options).
        factory: builds the untrained model (its init is redrawn from ``cell.seed``).
        train_data: data for pruning scores, training and the audit.
        test_data: held-out data for the test accuracy (optional).
        figure_dir: where probe figures are saved as PNG (None: not saved); rows hold paths relative to
            its parent directory.
        context: a fingerprint of everything else (model, data, ...) stored with the row.
    """
    from prune_landscape.audit import audit
    from prune_landscape.pruning import prune
    from prune_landscape.training import evaluate, train

    started = time.perf_counter()
    model = fresh_model(factory, cell.seed)
    if cell.method == DENSE:
        masks = MaskSet.dense(model)
    else:
        options = dict(plan.method_options.get(cell.method, {}))
        masks = prune(model, cell.method, cell.sparsity, train_data, final_layer=cell.final_layer,
                      scope=plan.scope, seed=cell.seed, **options)
    masks.apply_to(model)
    pruned = time.perf_counter()
    train_result = None
    if plan.epochs > 0:
        train_result = train(model, train_data, epochs=plan.epochs, lr=plan.lr, masks=masks, seed=cell.seed,
                             **dict(plan.train_options))
    trained = time.perf_counter()
    loss_name = plan.train_options.get("loss", "cross_entropy")
    train_loss, train_accuracy = evaluate(model, train_data, loss=loss_name)
    test_loss, test_accuracy = evaluate(model, test_data, loss=loss_name) if test_data is not None else (None, None)
    make_pruning_permanent(model)
    from prune_landscape.probes import PROBES

    probes_run = [_isolated_probe(name, PROBES[name], cell.key) for name in plan.probes]
    report = audit(model, train_data, n_samples=plan.n_samples, probes=probes_run, masks=masks,
                   weight_decay=float(plan.train_options.get("weight_decay", 0.0)))
    structure = report.structure
    available = num_samples(train_data)
    n = plan.n_samples if available is None else min(available, plan.n_samples or available)
    figures: dict[str, str] = {}
    probes: dict[str, dict[str, float]] = {}
    probe_errors: dict[str, str] = {}
    for name, result in report.probes.items():
        if isinstance(result, ProbeFailure):
            probe_errors[name] = result.error
            continue
        probes[name] = {k: float(v) for k, v in result.scalars().items()}
        if figure_dir is not None:
            # names come from users (registered methods, probe names): one safe component, inside figure_dir
            path = Path(figure_dir) / safe_name(f"{cell.key}_{name}.png".replace("|", "_"))
            try:
                if _figure(result, path):
                    figures[name] = str(path.relative_to(Path(figure_dir).parent))
            except Exception as error:  # a figure is a nicety: a failed one is noted, never fatal
                probe_errors[f"{name}/figure"] = _error_text(error)
                warnings.warn(f"{cell.key}: figure of probe {name!r} failed ({_error_text(error)})", RuntimeWarning,
                              stacklevel=2)
    row = {
        "key": cell.key,
        "method": cell.method,
        "sparsity": cell.sparsity,
        "final_layer_policy": cell.final_layer,
        "seed": cell.seed,
        "density": masks.density,
        "final_layer": structure.final_layer,
        "final_layer_density": structure.final_layer_density,
        "final_layer_dense": structure.final_layer_dense,
        "fan_in_min": structure.fan_in_min,
        "fan_in_median": structure.fan_in_median,
        "fan_in_max": structure.fan_in_max,
        "last_hidden_width": structure.last_hidden_width,
        "n": n,
        "dead_units": structure.total_dead_units,
        "collapsed_layers": list(structure.collapsed_layers),
        "connected": structure.connected,
        "landscape": report.landscape.verdict.name,
        "landscape_rules": [getattr(rule, "id", str(rule)) for rule in getattr(report.landscape, "rules", ())],
        "existence": report.existence.verdict.name,
        "existence_rules": [getattr(rule, "id", str(rule)) for rule in getattr(report.existence, "rules", ())],
        **_verdict_fields(report),
        "train_loss": train_loss,
        "train_accuracy": train_accuracy,
        "test_loss": test_loss,
        "test_accuracy": test_accuracy,
        "epoch_losses": list(train_result.epoch_losses) if train_result else [],
        "layer_densities": {layer.name: layer.density for layer in structure.layers},
        "probes": probes,
        "figures": figures,
        "probe_errors": probe_errors,
        "metrics": report.metrics(),
        "audit": report.to_dict(),
        "seconds": {"prune": pruned - started, "train": trained - pruned, "audit": time.perf_counter() - trained},
        "context": context,
    }
    return _jsonable(row)


def _verdict_fields(report: Any) -> dict[str, Any]:
    """The mask verdict, head price, baseline and remedy as flat row fields (what the report pages read)."""
    verdict, baseline, remedy = report.mask_verdict, report.baseline, report.remedy
    return {
        "mask_verdict": verdict.level.name,
        "mask_verdict_code": int(verdict.level),
        "mask_verdict_rules": list(verdict.rules),
        "mask_verdict_explanation": verdict.explanation,
        "mask_verdict_summary": verdict.summary,
        "head_price": verdict.price_value,
        "head_price_relative": verdict.relative_price,
        "head_price_loss": None if verdict.price is None else verdict.price.loss,
        "last_hidden_units": report.structure.last_hidden_units,
        "baseline": {"landscape": baseline.landscape.verdict.name, "landscape_rules": list(baseline.landscape.rules),
                     "existence": baseline.existence.verdict.name, "existence_rules": list(baseline.existence.rules),
                     "last_hidden_width": baseline.last_hidden_width, "text": baseline.text},
        "remedy": None if remedy is None else remedy.to_dict(),
    }


def _failed_row(cell: Cell, error: BaseException, context: str) -> dict[str, Any]:
    import traceback

    return _jsonable({
        "key": cell.key, "method": cell.method, "sparsity": cell.sparsity, "final_layer_policy": cell.final_layer,
        "seed": cell.seed, "status": "failed", "error": _error_text(error),
        "traceback": "".join(traceback.format_exception(type(error), error, error.__traceback__, limit=-3)),
        "context": context,
    })


def run_sweep(plan: SweepPlan, factory: Callable[[], nn.Module], train_data: DataLike, test_data: DataLike | None = None,
              *, store: RowStore, on_row: Iterable[Callable[[dict[str, Any]], None]] = (), context: str = "",
              progress: bool = True, figure_dir: str | os.PathLike | None = None) -> list[dict[str, Any]]:
    """Run every cell of ``plan`` not already in ``store`` (same key and context); return the new rows.

    Each finished row is appended to ``store`` first, then handed to every ``on_row`` callback (e.g.
    re-render the report, log to W&B). A cell that raises becomes a row with ``status="failed"`` and its
    ``error`` (with a warning) and the sweep goes on; a re-run retries it. A probe that raises leaves its
    error in the row's ``probe_errors``. A KeyboardInterrupt propagates; every row finished before it is
    already in the store.

    Example:
        >>> # run_sweep(plan, lambda: models.mlp([64, 32, 10]), digits("train"), digits("test"),
        >>> #           store=RowStore("out"), on_row=[lambda row: print(row["key"])])
    """
    store.repair()  # a torn last line from a killed run: its row is run again, not glued to the next one
    done = {row["key"] for row in finished_rows(store.rows()) if row.get("context", "") == context}
    todo = [cell for cell in plan.cells() if cell.key not in done]  # failed rows are retried
    callbacks: Sequence[Callable[[dict[str, Any]], None]] = tuple(on_row)
    if todo:  # data the model cannot take fails every row: say so once, before any work
        check_data(factory(), train_data, loss=str(plan.train_options.get("loss", "cross_entropy")), name="train data")
        if test_data is not None:
            check_data(factory(), test_data, loss=str(plan.train_options.get("loss", "cross_entropy")), name="test data")
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(todo), desc="audit", unit="row", dynamic_ncols=True)
    finished = []
    try:
        for cell in todo:
            if bar is not None:
                bar.set_postfix_str(cell.key)
            try:
                row = audit_cell(cell, plan, factory, train_data, test_data, figure_dir=figure_dir, context=context)
            except Exception as error:  # one failing cell is recorded and the sweep goes on (Ctrl-C still stops it)
                row = _failed_row(cell, error, context)
                warnings.warn(f"row {cell.key} failed ({row['error']}); it is recorded as failed in the report and the "
                              f"sweep goes on (a re-run retries it)", RuntimeWarning, stacklevel=2)
            store.append(row)
            finished.append(row)
            if bar is not None:
                bar.update(1)
            for callback in callbacks:
                try:
                    callback(row)
                except Exception as error:  # a failing logger or hook must not end the sweep; the row is stored
                    warnings.warn(f"an on_row callback failed on row {cell.key} ({_error_text(error)}); the row is "
                                  f"saved in {store.path} and the sweep goes on", RuntimeWarning, stacklevel=2)
    finally:
        if bar is not None:
            bar.close()
    return finished
