"""The callback's local report files: the full audit, or what can be said without one, plus the run's story.

Lightning adapter (does file I/O). ``report.json``/``report.md`` come from
:func:`prune_landscape.report.save_report` when an audit ran; when none could (no network chosen, or the
structural pass failed on this model), :func:`partial_report` writes what the masks alone tell: every
tensor's density and the final layer taken as the last prunable weight in parameter order. Either way
:func:`annotate` adds a ``run`` section: the network chosen and why, whether the run was interrupted, and
every failure that was recorded instead of raised (audits, probes, logger calls).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from prune_landscape.integrations.loggers import safe_call, wandb_loggers
from prune_landscape.masks import MaskSet
from prune_landscape.report import SCHEMA_VERSION

__all__ = ["annotate", "partial_metrics", "partial_report", "report_directory"]


def report_directory(trainer: Any, report_dir: Path | None) -> Path:
    """``report_dir``; else a first WandbLogger's run directory; else ``trainer.log_dir``."""
    if report_dir is not None:
        return Path(report_dir)
    loggers = list(trainer.loggers)
    if loggers and wandb_loggers(loggers[:1]):
        run_dir = safe_call(loggers[0], "experiment.dir", lambda: loggers[0].experiment.dir)
        if isinstance(run_dir, str) and run_dir:
            return Path(run_dir)
    return Path(trainer.log_dir or trainer.default_root_dir)


def _final_by_order(masks: MaskSet) -> str:
    # Weights only: a bias after the classifier's weight is not the classifier.
    names = [name for name in masks if name.endswith("weight")] or list(masks)
    return names[-1]


def partial_metrics(masks: MaskSet) -> dict[str, float]:
    """The scalars the masks alone give (final layer = last prunable weight in parameter order)."""
    if not len(masks):
        return {"density": 1.0, "partial": 1.0}
    final = masks[_final_by_order(masks)]
    return {
        "density": float(masks.density),
        "final_layer/density": float(final.float().mean()),
        "final_layer/dense": float(bool(final.all())),
        "partial": 1.0,
    }


def partial_report(masks: MaskSet, reason: str, directory: Path) -> dict[str, Path]:
    """Write report.json/report.md from the masks alone; returns ``{"json": path, "markdown": path}``."""
    layers = [
        {"name": name, "kept": int(mask.sum()), "total": mask.numel(), "density": float(mask.float().mean())}
        for name, mask in masks.items()
    ]
    final = next((layer for layer in reversed(layers) if layer["name"] == _final_by_order(masks)), None) if layers else None
    content = {
        "schema_version": SCHEMA_VERSION,
        "status": "partial",
        "reason": reason,
        "final_layer": None if final is None else {**final, "dense": final["kept"] == final["total"], "found_by": "parameter order"},
        "density": masks.density if len(masks) else 1.0,
        "kept": masks.num_kept if len(masks) else 0,
        "total": masks.num_total if len(masks) else 0,
        "layers": layers,
    }
    lines = [
        "# Pruning landscape audit (partial)",
        "",
        f"No full audit: {reason}.",
        "",
        f"- density: {content['density']:.4g} ({content['kept']} of {content['total']} weights kept)",
    ]
    if final is not None:
        lines.append(
            f"- final layer (last prunable weight in parameter order): {final['name']}, density {final['density']:.4g} "
            f"({final['kept']} of {final['total']})"
        )
    lines += ["", "## Layers", "", "| tensor | kept | total | density |", "|---|---|---|---|"]
    lines += [f"| {layer['name']} | {layer['kept']} | {layer['total']} | {layer['density']:.4g} |" for layer in layers]
    directory.mkdir(parents=True, exist_ok=True)
    paths = {"json": directory / "report.json", "markdown": directory / "report.md"}
    paths["json"].write_text(json.dumps(content, indent=2) + "\n")
    paths["markdown"].write_text("\n".join(lines) + "\n")
    return paths


def annotate(paths: dict[str, Path], run: dict[str, Any]) -> None:
    """Add the ``run`` section to report.json and report.md (an interruption is flagged at the top).

    ``run`` holds ``network`` (the choice), ``interrupted`` (None or the reason) and ``failures`` (a list
    of ``{"what", "error", ...}``).
    """
    document = json.loads(paths["json"].read_text())
    document["run"] = run
    paths["json"].write_text(json.dumps(document, indent=2, default=str) + "\n")
    lines = paths["markdown"].read_text().splitlines()
    if run.get("interrupted"):
        banner = f"> **Interrupted**: {run['interrupted']}. This report holds the last audit made before the run stopped."
        lines[1:1] = ["", banner]
    network = run.get("network") or {}
    lines += ["", "## Run", ""]
    if network:
        target = "the LightningModule itself" if network.get("name") == "" else f"`{network.get('name')}`"
        lines.append(f"- network: {target} (rule: {network.get('rule')}; {network.get('reason')})")
        if network.get("fix"):
            lines.append(f"- to choose it: {network['fix']}")
    lines.append(f"- interrupted: {run.get('interrupted') or 'no'}")
    for failure in run.get("failures", ()):
        extra = f" (x{failure['count']})" if failure.get("count", 1) > 1 else ""
        lines.append(f"- failed: {failure['what']}{extra}: {failure['error']}")
    paths["markdown"].write_text("\n".join(lines) + "\n")
