"""AuditReport: the audit's result as frozen data, with JSON, Markdown, console and logger views.

The headline comes first: the mask verdict (BROKEN / RISKY / CAUTION / SAFE, attributable to the mask
alone, with the rule or measurement that decided it), final layer DENSE or SPARSE with its per-output
fan-in against n, the landscape verdict with its rule, the existence verdict, dead units, collapsed
layers, the remedy with its exact cost in weights, and the architecture's baseline (the same network with
every weight kept). I/O lives in :func:`save_report`, never on the frozen type.

One report type: ``report.json`` always holds one audit, in the schema below (:meth:`AuditReport.to_dict`),
whether :func:`save_report`, the Lightning callback or ``prune-landscape train`` wrote it. A sweep
(``prune-landscape audit``) writes ``sweep.json`` / ``sweep.md`` / ``sweep.html`` instead: each of its rows is one
of these reports plus its training result (:func:`prune_landscape.experiments.row.row_of`, which keeps the
whole ``to_dict()`` under ``audit`` and :meth:`AuditReport.metrics` under ``metrics``).

Stable ``to_dict()`` keys (``SCHEMA_VERSION`` 1): ``final_layer.{name, dense, density, kept, total,
fan_in.{min, median, max}, fan_in_per_output, last_hidden_units, last_hidden_width}``,
``landscape.{verdict, code, rules, provenance, explanation, findings}``, ``existence.{verdict, code, rules,
provenance, explanation, certificate, findings}``, ``info``, ``remedy`` (null when the final layer is
dense), ``dead_units`` (layer -> count), ``dead_units_total``, ``collapsed_layers``, ``layers``, ``density``,
``kept``, ``total``, ``n``, ``scope``, ``facts``, ``notes``, ``probes``, ``schema_version``; added in the
same schema: ``mask_verdict.{level, code, rules, price, relative_price, explanation, summary, reasons}``,
``baseline.{landscape, existence, last_hidden_width, n, text}``, ``remedy.{pipeline, setting, settings,
extra_weights, fraction_of_budget, feasible, min_density}``, ``head_price`` (the final-layer gap behind the
price, or null), ``headline`` (the lines every view shows) and ``status``: ``"complete"``. When no audit
could run (the Lightning callback could not choose the network, or the structural pass failed), the
callback writes the same schema with ``status: "partial"``, a ``reason``, and only the keys the masks alone
give: ``final_layer.{name, dense, density, kept, total}`` (plus ``found_by``), ``density``, ``kept``,
``total`` and ``layers``. Mask levels (``mask_verdict.code`` and the
``mask_verdict/code`` metric): 0 SAFE, 1 CAUTION, 2 RISKY, 3 BROKEN.
Verdict codes (``code`` and the ``*/verdict_code`` metrics) are the Enum values: landscape 0
NO_SPURIOUS_LOCAL_MIN, 1 NO_SPURIOUS_VALLEY, 2 NO_SUBOPTIMAL_BASIN, 3 RISKY, 4 UNKNOWN; existence 0
OPTIMUM_EXISTS, 1 OPTIMUM_EXISTS_WITH_WEIGHT_DECAY, 2 OPTIMUM_MAY_NOT_EXIST, 3 UNKNOWN.

Example:
    >>> from prune_landscape import models
    >>> from prune_landscape.audit import audit
    >>> report = audit(models.mlp([4, 8, 1], activation="linear"), n_samples=16)
    >>> report.landscape.verdict.name, report.metrics()["final_layer/dense"], report.mask_verdict.level.name
    ('NO_SPURIOUS_LOCAL_MIN', 1.0, 'SAFE')
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prune_landscape.remedy import Remedy
from prune_landscape.structure import Structure
from prune_landscape.theory.classify import Verdict
from prune_landscape.theory.facts import NetworkFacts
from prune_landscape.theory.findings import Finding
from prune_landscape.verdict import Baseline, MaskVerdict

__all__ = ["SCHEMA_VERSION", "AuditReport", "ProbeFailure", "Remedy", "save_report"]  # Remedy re-exported from remedy.py

SCHEMA_VERSION = 1

RELATIVE_SIGNAL = (
    "NL-4 fires for every real classifier (n is far above any last-hidden width), dense final layer or not. "
    "The useful signal is relative: sparse vs dense final layer, the minimum per-output fan-in before and "
    "after pruning, dead units, collapsed layers, and non-closedness certificates. The mask verdict reads "
    "exactly that against the same network with every weight kept (the baseline)."
)


def _verdict_line(label: str, verdict: Verdict) -> str:
    rules = ", ".join(f"{f.rule} [{f.provenance.value}]" for f in verdict.deciding if f.rule in verdict.rules)
    return f"{label}: {verdict.verdict.name} by {rules or 'DEFAULT'} - {verdict.explanation}"


@dataclass(frozen=True)
class ProbeFailure:
    """A probe that raised, kept in :attr:`AuditReport.probes` in place of its result so the audit goes on.

    The one failure value of both pipelines (the sweep's rows and the Lightning callback's report).

    Attributes:
        name: the probe's name.
        error: ``"<type>: <message>"``.
        as_metric: whether the failure is one of the report's numbers: ``scalars()`` gives ``failed = 1``
            and ``to_dict()`` adds ``"failed": True``. The callback logs it, so a dashboard shows the failed
            probe; a sweep row keeps its failures in ``probe_errors`` instead (False), so that its metrics
            hold only measured numbers.

    Example:
        >>> ProbeFailure("hessian", "RuntimeError: diverged").to_dict()
        {'failed': True, 'error': 'RuntimeError: diverged'}
        >>> ProbeFailure("hessian", "RuntimeError: diverged", as_metric=False).scalars()
        {}
    """

    name: str
    error: str
    as_metric: bool = True

    def scalars(self) -> dict[str, float]:
        """``{"failed": 1.0}`` when :attr:`as_metric`, else nothing: the probe gave no numbers."""
        return {"failed": 1.0} if self.as_metric else {}

    def figure(self) -> None:
        """No figure."""
        return None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict: the error (with ``"failed": True`` first when :attr:`as_metric`)."""
        return {"failed": True, "error": self.error} if self.as_metric else {"error": self.error}


@dataclass(frozen=True)
class AuditReport:
    """The audit of one pruned network (see :func:`prune_landscape.audit.audit`).

    Attributes:
        structure: the :class:`~prune_landscape.structure.Structure` (layers, final layer, dead units).
        facts: the :class:`~prune_landscape.theory.facts.NetworkFacts` the rules read.
        landscape, existence: the two :class:`~prune_landscape.theory.classify.Verdict` axes.
        info: informational findings (NL-5).
        remedy: the dense-final-layer remedy, or None when the final layer is dense.
        probes: probe name -> result (each with ``to_dict()``, ``scalars()``, ``figure()``).
        baseline: the theorem axes of the same architecture with every weight kept (None when the report
            was built without one).
        mask_verdict: the graded verdict on the mask alone (None when built without a baseline).
    """

    structure: Structure
    facts: NetworkFacts
    landscape: Verdict
    existence: Verdict
    info: tuple[Finding, ...] = ()
    remedy: Remedy | None = None
    probes: Mapping[str, Any] = field(default_factory=dict)
    baseline: Baseline | None = None
    mask_verdict: MaskVerdict | None = None

    # -- views ------------------------------------------------------------------------------------------
    @property
    def n(self) -> int | None:
        return self.facts.n

    @property
    def notes(self) -> tuple[str, ...]:
        notes = []
        if "NL-4" in self.landscape.rules:
            notes.append(RELATIVE_SIGNAL)
        if "scope" in self.facts.notes:
            notes.append(self.facts.notes["scope"])
        if self.landscape.recalled or self.existence.recalled:
            notes.append("A RECALLED rule is believed from its paper but was not checked against the full text.")
        for key in ("n", "activation", "data", "distinct_restricted_inputs"):
            if key in self.facts.notes:
                notes.append(self.facts.notes[key])
        if self.existence.verdict.name != "UNKNOWN":
            notes.append("Existence verdicts are for the squared loss; with cross-entropy, separable data has no "
                         "minimiser even for a dense model.")
        return tuple(notes)

    def headline(self) -> list[str]:
        """The lines the user sees first (the same lines in ``str()``, ``to_markdown()`` and ``to_dict()``)."""
        s = self.structure
        n = "n unknown" if self.n is None else f"n = {self.n:,}"
        dense = "DENSE" if s.final_layer_dense else "SPARSE"
        dead = ", ".join(f"{name}: {count}" for name, count in s.dead_units.items() if count) or "none"
        lines = []
        if self.mask_verdict is not None:
            lines.append(f"mask verdict: {self.mask_verdict.summary}")
        lines += [
            f"final layer {s.final_layer}: {dense} (density {s.final_layer_density:.3f}), per-output fan-in "
            f"min/median/max {s.fan_in_min}/{s.fan_in_median:g}/{s.fan_in_max} vs {n} "
            f"({s.last_hidden_width} effective last-hidden units of {s.last_hidden_units})",
            _verdict_line("landscape", self.landscape) + self._as_baseline(self.landscape, "landscape"),
            _verdict_line("existence", self.existence) + self._as_baseline(self.existence, "existence"),
            f"dead units: {s.total_dead_units} ({dead}); collapsed layers: {', '.join(s.collapsed_layers) or 'none'}",
        ]
        if self.existence.certificate is not None:
            lines.append(f"non-closedness: {self.existence.certificate} (weight decay restores existence)")
        if self.remedy is not None:
            lines.append(f"remedy: {self.remedy.text}; one setting away: {self.remedy.setting}")
        else:
            lines.append("remedy: none needed, the final layer is dense")
        if self.baseline is not None:
            lines.append(f"architecture baseline (same network, every weight kept, {n}): {self.baseline.text}")
        return lines

    def _as_baseline(self, verdict: Verdict, axis: str) -> str:
        if self.baseline is None:
            return ""
        base = getattr(self.baseline, axis)
        same = base.verdict == verdict.verdict and base.rules == verdict.rules
        return " (the architecture's baseline: not the mask's doing)" if same else ""

    def table(self) -> str:
        """The per-layer table."""
        width = max(len(layer.name) for layer in self.structure.layers)
        header = f"{'layer':<{width}}  {'kind':<6} {'shape':<16} {'kept':>10} {'total':>10} {'density':>8} {'alive':>11}"
        rows = [header, "-" * len(header)]
        for layer in self.structure.layers:
            flag = "  COLLAPSED" if layer.collapsed else ""
            rows.append(f"{layer.name:<{width}}  {layer.kind:<6} {'x'.join(map(str, layer.shape)):<16} {layer.kept:>10,} "
                        f"{layer.total:>10,} {layer.density:>8.4f} {f'{layer.alive_units}/{layer.units}':>11}{flag}")
        return "\n".join(rows)

    def __str__(self) -> str:
        parts = ["\n".join(self.headline())]
        if self.notes:
            parts.append("\n".join(f"note: {note}" for note in self.notes))
        parts.append(self.table())
        for name, result in self.probes.items():
            scalars = _scalars(result)
            parts.append(f"probe {name}: " + ", ".join(f"{k} = {v:.4g}" for k, v in scalars.items()))
        return "\n\n".join(parts)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict with the stable keys listed in the module docstring."""
        s = self.structure
        return {
            "schema_version": SCHEMA_VERSION,
            "status": "complete",
            "final_layer": {
                "name": s.final_layer, "dense": s.final_layer_dense, "density": s.final_layer_density,
                "kept": s.final.kept, "total": s.final.total,
                "fan_in": {"min": s.fan_in_min, "median": s.fan_in_median, "max": s.fan_in_max},
                "fan_in_per_output": list(s.fan_in), "last_hidden_units": s.last_hidden_units,
                "last_hidden_width": s.last_hidden_width,
            },
            "landscape": self.landscape.to_dict(),
            "existence": self.existence.to_dict(),
            "info": [f.to_dict() for f in self.info],
            "remedy": None if self.remedy is None else self.remedy.to_dict(),
            "dead_units": dict(s.dead_units),
            "dead_units_total": s.total_dead_units,
            "collapsed_layers": list(s.collapsed_layers),
            "layers": [layer.to_dict() for layer in s.layers],
            "density": s.density, "kept": s.num_kept, "total": s.num_total,
            "n": self.n,
            "scope": self.facts.scope,
            "facts": self.facts.to_dict(),
            "notes": list(self.notes),
            "probes": {name: _probe_dict(result) for name, result in self.probes.items()},
            "mask_verdict": None if self.mask_verdict is None else self.mask_verdict.to_dict(),
            "baseline": None if self.baseline is None else self.baseline.to_dict(),
            "head_price": None if self.mask_verdict is None or self.mask_verdict.price is None
            else _probe_dict(self.mask_verdict.price),
            "headline": self.headline(),
        }

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent, default=_json_default)

    def to_markdown(self) -> str:
        """A Markdown report: headline, notes, the verdicts with their rules and facts, the layer table, probes."""
        lines = ["# Pruning landscape audit", "", *[f"- {line}" for line in self.headline()], ""]
        if self.notes:
            lines += ["## Notes", "", *[f"- {note}" for note in self.notes], ""]
        for title, verdict in (("Landscape", self.landscape), ("Existence", self.existence)):
            lines += [f"## {title}: {verdict.verdict.name}{self._as_baseline(verdict, title.lower())}", ""]
            for finding in verdict.findings:
                mark = "**" if finding.rule in verdict.rules else ""
                lines.append(f"- {mark}{finding.rule}{mark} [{finding.provenance.value}] -> "
                             f"{finding.verdict.name if finding.verdict else 'info'}: {finding.explanation} "
                             f"(basis: {finding.basis})")
                facts = ", ".join(f"{k} = {v}" for k, v in finding.facts if v is not None)
                lines.append(f"  - facts: {facts}")
            lines.append("")
        if self.mask_verdict is not None:
            lines += [f"## Mask verdict: {self.mask_verdict.level.name}", ""]
            lines += [f"- {'**' if r.level == self.mask_verdict.level else ''}{r.rule}"
                      f"{'**' if r.level == self.mask_verdict.level else ''} ({r.level.name}): {r.text}"
                      for r in self.mask_verdict.reasons]
            lines.append("")
        if self.remedy is not None:
            lines += ["## Remedy", "", f"- {self.remedy.text}", *[f"- {name}: `{setting}`" for name, setting
                                                                in self.remedy.settings.items()], ""]
        if self.info:
            lines += ["## Information", "", *[f"- {f}" for f in self.info], ""]
        lines += ["## Layers", "", "```", self.table(), "```", ""]
        if self.probes:
            lines += ["## Probes", ""]
            for name, result in self.probes.items():
                lines.append(f"- {name}: " + ", ".join(f"{k} = {v:.6g}" for k, v in _scalars(result).items()))
            lines.append("")
        return "\n".join(lines)

    def metrics(self) -> dict[str, float]:
        """Flat scalars for loggers (``probe/<name>/<key>`` for probe scalars)."""
        s = self.structure
        out = {
            "final_layer/density": float(s.final_layer_density),
            "final_layer/dense": float(s.final_layer_dense),
            "final_layer/fan_in_min": float(s.fan_in_min),
            "final_layer/fan_in_median": float(s.fan_in_median),
            "final_layer/fan_in_max": float(s.fan_in_max),
            "final_layer/last_hidden_width": float(s.last_hidden_width),
            "density": float(s.density),
            "dead_units": float(s.total_dead_units),
            "collapsed_layers": float(len(s.collapsed_layers)),
            "landscape/verdict_code": float(self.landscape.verdict.value),
            "existence/verdict_code": float(self.existence.verdict.value),
            "remedy/extra_weights": float(self.remedy.extra_weights if self.remedy else 0),
            "remedy/fraction_of_budget": float(self.remedy.fraction_of_budget if self.remedy else 0.0),
        }
        if self.mask_verdict is not None:
            out["mask_verdict/code"] = float(int(self.mask_verdict.level))
            for key, value in (("price", self.mask_verdict.price_value), ("relative_price", self.mask_verdict.relative_price)):
                if value is not None and math.isfinite(value):
                    out[f"mask_verdict/{key}"] = float(value)
        if self.baseline is not None:
            out["baseline/landscape_code"] = float(self.baseline.landscape.verdict.value)
            out["baseline/existence_code"] = float(self.baseline.existence.verdict.value)
        if self.remedy is not None:
            out["remedy/feasible"] = float(self.remedy.feasible)
        if self.n is not None:
            out["n"] = float(self.n)
            out["final_layer/fan_in_min_over_n"] = s.fan_in_min / self.n
        if self.facts.closedness is not None:
            out["closedness/code"] = float(["CLOSED", "NOT_CLOSED", "UNKNOWN"].index(self.facts.closedness.status.name))
        for name, result in self.probes.items():
            for key, value in _scalars(result).items():
                out[f"probe/{name}/{key}"] = value
        return out


def _scalars(result: Any) -> dict[str, float]:
    if hasattr(result, "scalars"):
        return {str(k): float(v) for k, v in result.scalars().items() if _finite_number(v)}
    return {}


def _finite_number(value: Any) -> bool:
    try:
        return math.isfinite(float(value))
    except (TypeError, ValueError):
        return False


def _probe_dict(result: Any) -> Any:
    return result.to_dict() if hasattr(result, "to_dict") else repr(result)


def _json_default(value: Any) -> Any:
    if hasattr(value, "tolist"):
        return value.tolist()
    if hasattr(value, "name"):
        return value.name
    return str(value)


def save_report(report: AuditReport, directory: str | Path) -> dict[str, Path]:
    """Write one audit's ``report.json`` (:meth:`AuditReport.to_dict`) and ``report.md`` into ``directory``.

    The directory is created if missing.

    Returns:
        ``{"json": path, "markdown": path}``.

    Example:
        >>> import tempfile
        >>> from prune_landscape import models
        >>> from prune_landscape.audit import audit
        >>> sorted(save_report(audit(models.mlp([3, 4, 2])), tempfile.mkdtemp()))
        ['json', 'markdown']
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    paths = {"json": directory / "report.json", "markdown": directory / "report.md"}
    paths["json"].write_text(report.to_json() + "\n")
    paths["markdown"].write_text(report.to_markdown())
    return paths
