"""Pruning-method audits: prune one model with several methods, sparsities, final-layer policies and seeds.

Each *cell* (method x sparsity x final-layer policy x seed) starts from the same freshly initialised
network for its seed, is pruned, optionally trained briefly under its mask with the core trainer, and is
audited with :func:`prune_landscape.audit.audit`, the same call the Lightning callback makes; the audit report
and the training result become one plain-dict *row* (:func:`~prune_landscape.experiments.row.row_of`). Rows go to a :class:`RowStore` (``rows.jsonl``, one line per
finished row, appended under a file lock) the moment they finish, so an interrupted sweep loses nothing
already done and a re-run in the same directory skips them. Several processes (a Hydra multirun, SLURM
array jobs) may share one store: the sweep report (``sweep.json``/``.md``/``.html``) is re-rendered from all rows.

Why the core trainer (:func:`prune_landscape.training.train`) and not Lightning: a sweep is dozens of small
cells, each trained for a few epochs from its own seed on in-memory tensors. A Lightning Trainer per cell
adds start-up, logger folders and callback plumbing that would outweigh the training itself, and the
trainer adds nothing a cell needs (one device, no checkpoints). What must be the same in both pipelines is the
audit, and it is: both hand the trained network and its masks to :func:`prune_landscape.audit.audit`.

Experiment module (the plan is in :mod:`~prune_landscape.experiments.plan`, the row in
:mod:`~prune_landscape.experiments.row`, the store in :mod:`~prune_landscape.experiments.rowstore`): plain
arguments in, plain rows out; no Hydra, Lightning or W&B.

Example:
    >>> from prune_landscape import models
    >>> plan = SweepPlan(methods=("magnitude",), sparsities=(0.9,), dense_baseline=False)
    >>> row = audit_cell(plan.cells()[0], plan, lambda: models.mlp([8, 16, 3]), (torch.randn(32, 8), torch.arange(32) % 3))
    >>> row["key"], row["final_layer_policy"], round(row["density"], 2)
    ('magnitude|0.9|prune|0', 'prune', 0.1)
"""

from __future__ import annotations

import os
import sys
import time
import warnings
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from prune_landscape.audit import audit
from prune_landscape.batching import DataLike
from prune_landscape.datacheck import check_data
from prune_landscape.experiments.plan import DENSE, Cell, SweepPlan
from prune_landscape.experiments.row import ProbeOutputs, Training, error_text, failed_row, row_of
from prune_landscape.experiments.rowstore import RowStore, finished_rows, safe_name
from prune_landscape.masks import MaskSet, make_pruning_permanent
from prune_landscape.probes import PROBES
from prune_landscape.pruning import prune
from prune_landscape.pruning.reinit import redraw_initial_weights
from prune_landscape.report import AuditReport, ProbeFailure  # ProbeFailure re-exported: its old home
from prune_landscape.training import evaluate, train

__all__ = ["ProbeFailure", "audit_cell", "audit_trained", "fresh_model", "run_sweep"]


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
    if hasattr(model, "init_weights"):  # a model without one keeps the draw made under the seeded RNG above
        redraw_initial_weights(model, int(seed))
    return model


def _isolated_probe(name: str, probe: Callable[[nn.Module, DataLike], Any], label: str) -> Callable[[nn.Module, DataLike], Any]:
    """``probe`` that returns a :class:`ProbeFailure` (and warns) instead of raising."""

    def run(model: nn.Module, data: DataLike) -> Any:
        try:
            return probe(model, data)
        except Exception as error:  # one probe (e.g. a diverged model's Hessian) must not end the row
            warnings.warn(f"{label}: probe {name!r} failed ({error_text(error)}); the row keeps its other results",
                          RuntimeWarning, stacklevel=2)
            return ProbeFailure(name, error_text(error), as_metric=False)

    run.__name__ = name
    return run


def _cell_masks(cell: Cell, plan: SweepPlan, model: nn.Module, data: DataLike) -> MaskSet:
    """The cell's masks: every weight for the dense reference, else ``prune`` with the plan's options."""
    if cell.method == DENSE:
        return MaskSet.dense(model)
    options = dict(plan.method_options.get(cell.method, {}))
    return prune(model, cell.method, cell.sparsity, data, final_layer_policy=cell.final_layer_policy, scope=plan.scope,
                 seed=cell.seed, **options)


def _train_cell(model: nn.Module, masks: MaskSet, cell: Cell, plan: SweepPlan, train_data: DataLike,
                test_data: DataLike | None) -> Training:
    """Train under the masks for ``plan.epochs`` (none for 0), then evaluate on both data sets."""
    epoch_losses: tuple[float, ...] = ()
    if plan.epochs > 0:
        result = train(model, train_data, epochs=plan.epochs, lr=plan.lr, masks=masks, seed=cell.seed,
                       **dict(plan.train_options))
        epoch_losses = tuple(result.epoch_losses)
    train_loss, train_accuracy = evaluate(model, train_data, loss=plan.loss)
    test_loss, test_accuracy = evaluate(model, test_data, loss=plan.loss) if test_data is not None else (None, None)
    return Training(train_loss, train_accuracy, test_loss, test_accuracy, epoch_losses)


def audit_trained(model: nn.Module, masks: MaskSet, data: DataLike, plan: SweepPlan, label: str = "") -> AuditReport:
    """The sweep's audit of a trained cell: the prune hooks made permanent, then :func:`prune_landscape.audit.audit`
    with the plan's probes (each one that raises becomes a :class:`ProbeFailure`), ``n_samples`` and weight decay.

    The Lightning callback (:class:`~prune_landscape.integrations.callbacks.LandscapeAudit`) makes the same
    ``audit`` call on its copy of the trained network.
    """
    make_pruning_permanent(model)
    probes = [_isolated_probe(name, PROBES[name], label) for name in plan.probes]
    return audit(model, data, n_samples=plan.n_samples, probes=probes, masks=masks, weight_decay=plan.weight_decay)


def _save_figure(result: Any, path: Path) -> bool:
    """Save a probe result's figure as PNG; False when it has none."""
    figure_fn = getattr(result, "figure", None)
    figure = figure_fn() if callable(figure_fn) else None
    if figure is None:
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        figure.savefig(path, dpi=80)
    finally:
        pyplot = sys.modules.get("matplotlib.pyplot")  # the probes draw without pyplot; close what pyplot holds
        if pyplot is not None and getattr(figure, "number", None) in pyplot.get_fignums():
            pyplot.close(figure)
    return True


def _probe_outputs(report: AuditReport, key: str, figure_dir: str | os.PathLike | None) -> ProbeOutputs:
    """Each probe's scalars, its figure saved under ``figure_dir`` (paths relative to its parent), and errors."""
    scalars: dict[str, dict[str, float]] = {}
    figures: dict[str, str] = {}
    errors: dict[str, str] = {}
    for name, result in report.probes.items():
        if isinstance(result, ProbeFailure):
            errors[name] = result.error
            continue
        scalars[name] = {k: float(v) for k, v in result.scalars().items()}
        if figure_dir is None:
            continue
        # names come from users (registered methods, probe names): one safe component, inside figure_dir
        path = Path(figure_dir) / safe_name(f"{key}_{name}.png".replace("|", "_"))
        try:
            if _save_figure(result, path):
                figures[name] = str(path.relative_to(Path(figure_dir).parent))
        except Exception as error:  # a figure is a nicety: a failed one is noted, never fatal
            errors[f"{name}/figure"] = error_text(error)
            warnings.warn(f"{key}: figure of probe {name!r} failed ({error_text(error)})", RuntimeWarning, stacklevel=2)
    return ProbeOutputs(scalars, figures, errors)


def audit_cell(cell: Cell, plan: SweepPlan, factory: Callable[[], nn.Module], train_data: DataLike,
               test_data: DataLike | None = None, *, figure_dir: str | os.PathLike | None = None,
               context: str = "") -> dict[str, Any]:
    """Prune, train and audit one cell; return its row (plain, JSON-ready; see :func:`~.row.row_of`).

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
    started = time.perf_counter()
    model = fresh_model(factory, cell.seed)
    masks = _cell_masks(cell, plan, model, train_data)
    masks.apply_to(model)
    pruned = time.perf_counter()
    training = _train_cell(model, masks, cell, plan, train_data, test_data)
    trained = time.perf_counter()
    report = audit_trained(model, masks, train_data, plan, label=cell.key)
    probes = _probe_outputs(report, cell.key, figure_dir)
    seconds = {"prune": pruned - started, "train": trained - pruned, "audit": time.perf_counter() - trained}
    return row_of(cell, report, training, probes=probes, seconds=seconds, context=context)


def _check_data_once(plan: SweepPlan, factory: Callable[[], nn.Module], train_data: DataLike,
                     test_data: DataLike | None) -> None:
    """Data the model cannot take fails every row: say so once, before any work."""
    check_data(factory(), train_data, loss=plan.loss, name="train data")
    if test_data is not None:
        check_data(factory(), test_data, loss=plan.loss, name="test data")


def _notify(callbacks: Sequence[Callable[[dict[str, Any]], None]], row: dict[str, Any], store: RowStore) -> None:
    for callback in callbacks:
        try:
            callback(row)
        except Exception as error:  # a failing logger or hook must not end the sweep; the row is stored
            warnings.warn(f"an on_row callback failed on row {row['key']} ({error_text(error)}); the row is saved in "
                          f"{store.path} and the sweep goes on", RuntimeWarning, stacklevel=3)


def run_sweep(plan: SweepPlan, factory: Callable[[], nn.Module], train_data: DataLike, test_data: DataLike | None = None,
              *, store: RowStore, on_row: Iterable[Callable[[dict[str, Any]], None]] = (), context: str = "",
              progress: bool = True) -> list[dict[str, Any]]:
    """Run every cell of ``plan`` not already in ``store`` (same key and context); return the new rows.

    Each finished row is appended to ``store`` first, then handed to every ``on_row`` callback (e.g.
    re-render the report, log to W&B). Probe figures are saved in ``store.figure_dir``. A cell that raises
    becomes a row with ``status="failed"`` and its ``error`` (with a warning) and the sweep goes on; a re-run
    retries it. A probe that raises leaves its error in the row's ``probe_errors``. A KeyboardInterrupt
    propagates; every row finished before it is already in the store.

    Example:
        >>> # run_sweep(plan, lambda: models.mlp([64, 32, 10]), digits("train"), digits("test"),
        >>> #           store=RowStore("out"), on_row=[lambda row: print(row["key"])])
    """
    store.repair()  # a torn last line from a killed run: its row is run again, not glued to the next one
    done = {row["key"] for row in finished_rows(store.rows()) if row.get("context", "") == context}
    todo = [cell for cell in plan.cells() if cell.key not in done]  # failed rows are retried
    callbacks = tuple(on_row)
    if todo:
        _check_data_once(plan, factory, train_data, test_data)
    finished = []
    with tqdm(total=len(todo), desc="audit", unit="row", dynamic_ncols=True, disable=not progress) as bar:
        for cell in todo:
            bar.set_postfix_str(cell.key)
            try:
                row = audit_cell(cell, plan, factory, train_data, test_data, figure_dir=store.figure_dir, context=context)
            except Exception as error:  # one failing cell is recorded and the sweep goes on (Ctrl-C still stops it)
                row = failed_row(cell, error, context)
                warnings.warn(f"row {cell.key} failed ({row['error']}); it is recorded as failed in the report and the "
                              f"sweep goes on (a re-run retries it)", RuntimeWarning, stacklevel=2)
            store.append(row)
            finished.append(row)
            bar.update(1)
            _notify(callbacks, row, store)
    return finished
