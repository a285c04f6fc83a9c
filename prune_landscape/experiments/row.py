"""How a sweep row is written: one audited cell -> one flat, JSON-ready dict, and every flat view of it.

A row wraps one :class:`~prune_landscape.report.AuditReport` (its whole ``to_dict()`` under ``"audit"``, its
``metrics()`` under ``"metrics"``) plus the cell's :class:`Training` result. :func:`row_of` is the only place
that chooses a row's fields; everything else reads them:

- the JSON row (``rows.jsonl`` and ``sweep.json``): :func:`row_of` itself (:func:`failed_row` for a cell that
  raised);
- the step loggers (CSV, TensorBoard): :func:`row_metrics`, the report's ``metrics()`` plus the training numbers;
- the W&B table of raw numbers: :func:`row_table`, the row's top-level scalar fields;
- the report pages and the console: :mod:`~prune_landscape.experiments.headline` and
  :mod:`~prune_landscape.experiments.html` format the same fields.

Experiment module: plain values in, plain dicts out; no Hydra, Lightning or W&B.

Example:
    >>> row_metrics({"metrics": {"density": 0.1}, "train_accuracy": 0.9, "test_accuracy": None})
    {'density': 0.1, 'train_accuracy': 0.9}
"""

from __future__ import annotations

import traceback
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from prune_landscape.experiments.plan import Cell
from prune_landscape.experiments.rowstore import jsonable
from prune_landscape.report import AuditReport

__all__ = ["ProbeOutputs", "Training", "error_text", "failed_row", "row_metrics", "row_of", "row_table"]


def error_text(error: BaseException) -> str:
    """``"<type>: <message>"`` on one line, at most 2,000 characters (what a row keeps of an error)."""
    return f"{type(error).__name__}: {' '.join(str(error).split())}"[:2000]


@dataclass(frozen=True)
class Training:
    """The training result of one cell: losses and accuracies after training (accuracy None for regression).

    Attributes:
        train_loss, train_accuracy: on the training data, in eval mode.
        test_loss, test_accuracy: on the held-out data (None without it).
        epoch_losses: mean training loss of each epoch (empty when the cell was not trained).
    """

    train_loss: float | None = None
    train_accuracy: float | None = None
    test_loss: float | None = None
    test_accuracy: float | None = None
    epoch_losses: tuple[float, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """The row's training fields, in row order."""
        return {"train_loss": self.train_loss, "train_accuracy": self.train_accuracy, "test_loss": self.test_loss,
                "test_accuracy": self.test_accuracy, "epoch_losses": list(self.epoch_losses)}


@dataclass(frozen=True)
class ProbeOutputs:
    """What became of the probes: their scalars, the figure files saved and the errors (a probe or a figure).

    Attributes:
        scalars: probe name -> its scalars (probes that raised are left out: their error is in ``errors``).
        figures: probe name -> the figure's path, relative to the sweep's directory.
        errors: probe name (``<name>/figure`` for a figure) -> ``"<type>: <message>"``.
    """

    scalars: Mapping[str, Mapping[str, float]] = field(default_factory=dict)
    figures: Mapping[str, str] = field(default_factory=dict)
    errors: Mapping[str, str] = field(default_factory=dict)


def _cell_fields(cell: Cell) -> dict[str, Any]:
    return {"key": cell.key, "method": cell.method, "sparsity": cell.sparsity, "final_layer_policy": cell.final_layer_policy,
            "seed": cell.seed}


def _structure_fields(report: AuditReport) -> dict[str, Any]:
    """The final layer, fan-ins, dead units and the two theorem axes, as flat fields."""
    s = report.structure
    return {
        "density": s.density, "final_layer": s.final_layer, "final_layer_density": s.final_layer_density,
        "final_layer_dense": s.final_layer_dense, "fan_in_min": s.fan_in_min, "fan_in_median": s.fan_in_median,
        "fan_in_max": s.fan_in_max, "last_hidden_width": s.last_hidden_width, "n": report.n,
        "dead_units": s.total_dead_units, "collapsed_layers": list(s.collapsed_layers), "connected": s.connected,
        "landscape": report.landscape.verdict.name, "landscape_rules": list(report.landscape.rules),
        "existence": report.existence.verdict.name, "existence_rules": list(report.existence.rules),
    }


def _verdict_fields(report: AuditReport) -> dict[str, Any]:
    """The mask verdict, head price, baseline and remedy as flat fields (what the report pages read)."""
    verdict, baseline, remedy = report.mask_verdict, report.baseline, report.remedy
    if verdict is None or baseline is None:
        raise ValueError("a sweep row needs an audit with a baseline and a mask verdict (prune_landscape.audit.audit "
                         "makes both); got a report without them")
    return {
        "mask_verdict": verdict.level.name, "mask_verdict_code": int(verdict.level),
        "mask_verdict_rules": list(verdict.rules), "mask_verdict_explanation": verdict.explanation,
        "mask_verdict_summary": verdict.summary, "head_price": verdict.price_value,
        "head_price_relative": verdict.relative_price,
        "head_price_loss": None if verdict.price is None else verdict.price.loss,
        "last_hidden_units": report.structure.last_hidden_units,
        "baseline": {"landscape": baseline.landscape.verdict.name, "landscape_rules": list(baseline.landscape.rules),
                     "existence": baseline.existence.verdict.name, "existence_rules": list(baseline.existence.rules),
                     "last_hidden_width": baseline.last_hidden_width, "text": baseline.text},
        "remedy": None if remedy is None else remedy.to_dict(),
    }


def row_of(cell: Cell, report: AuditReport, training: Training, *, probes: ProbeOutputs = ProbeOutputs(),
           seconds: Mapping[str, float] | None = None, context: str = "") -> dict[str, Any]:
    """The row of one audited cell: its fields, the report's flat fields, the training result, the whole report.

    Args:
        cell: the cell the row is for (its key, method, sparsity, final-layer policy and seed).
        report: the cell's audit (from :func:`prune_landscape.audit.audit`, with a baseline and a mask verdict).
        training: the cell's training result.
        probes: what became of the probes (scalars, figure paths, errors).
        seconds: time spent per stage (``prune``, ``train``, ``audit``).
        context: a fingerprint of everything else (model, data, ...) stored with the row.

    Returns:
        A JSON-ready dict (NaN and infinity become None).
    """
    row = {
        **_cell_fields(cell),
        **_structure_fields(report),
        **_verdict_fields(report),
        **training.to_dict(),
        "layer_densities": {layer.name: layer.density for layer in report.structure.layers},
        "probes": {name: dict(values) for name, values in probes.scalars.items()},
        "figures": dict(probes.figures),
        "probe_errors": dict(probes.errors),
        "metrics": report.metrics(),
        "audit": report.to_dict(),
        "seconds": dict(seconds or {}),
        "context": context,
    }
    return jsonable(row)


def failed_row(cell: Cell, error: BaseException, context: str = "") -> dict[str, Any]:
    """The row of a cell that raised: its fields, ``status="failed"``, the error and the traceback's end."""
    return jsonable({
        **_cell_fields(cell), "status": "failed", "error": error_text(error),
        "traceback": "".join(traceback.format_exception(type(error), error, error.__traceback__, limit=-3)),
        "context": context,
    })


def row_metrics(row: Mapping[str, Any]) -> dict[str, float]:
    """A finished row's numbers for step loggers: the report's ``metrics()`` plus the training result's numbers.

    Example:
        >>> row_metrics({"metrics": {"density": 0.1}, "train_loss": 0.5, "test_loss": None})
        {'density': 0.1, 'train_loss': 0.5}
    """
    numbers = {str(k): float(v) for k, v in (row.get("metrics") or {}).items() if _is_number(v)}
    for name in ("train_loss", "train_accuracy", "test_loss", "test_accuracy"):
        if _is_number(row.get(name)):
            numbers[name] = float(row[name])
    return numbers


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _is_flat(value: Any) -> bool:
    scalar = (str, int, float, bool, type(None))
    return isinstance(value, scalar) or (isinstance(value, list) and all(isinstance(v, scalar) for v in value))


def row_table(rows: Sequence[Mapping[str, Any]]) -> tuple[list[str], list[list[Any]]]:
    """The rows as one table of raw values: every top-level field that is a scalar (or a list of scalars) in
    every row, in row order; lists are joined with ``", "``.

    Example:
        >>> row_table([{"key": "a", "n": 3, "layers": ["x", "y"], "audit": {}}])
        (['key', 'n', 'layers'], [['a', 3, 'x, y']])
    """
    if not rows:
        return [], []
    columns = [name for name in rows[0] if all(_is_flat(row.get(name)) for row in rows)]
    data = [[", ".join(map(str, row.get(c))) if isinstance(row.get(c), list) else row.get(c) for c in columns]
            for row in rows]
    return columns, data
