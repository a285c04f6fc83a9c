"""What LandscapeAudit sends to a WandbLogger at the end of fit, beyond the scalars every logger gets.

Lightning adapter. Every call goes through the guarded helpers of :mod:`prune_landscape.integrations.loggers`: a failure
is recorded and warned, and the next call still goes through.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from prune_landscape.integrations.callbacks._reportfiles import partial_metrics
from prune_landscape.integrations.loggers import wandb_log_figures, wandb_log_file_artifact, wandb_log_table, wandb_update_summary
from prune_landscape.masks import MaskSet

__all__ = ["log_wandb_extras", "summary_entries"]


def log_wandb_extras(
    logger: Any,
    report: Any,
    masks: MaskSet,
    *,
    prefix: str,
    summary_extra: Mapping[str, Any],
    mask_path: Path | None,
    on_failure: Callable[[str, BaseException], None],
) -> None:
    """The per-layer mask table, the summary (verdicts, rules, network), the probe figures, the mask artifact.

    Without a report (no network chosen, or the audit failed) the table and summary hold what the masks
    alone tell. ``mask_path`` None: no artifact. ``on_failure`` records a probe whose figure cannot be drawn.
    """
    if report is not None:
        document = report.to_dict()  # the report's one flattening: the table and the summary read it
        columns = ["layer", "kind", "shape", "kept", "total", "density", "alive_units", "units"]
        rows = [
            [layer["name"], layer["kind"], "x".join(map(str, layer["shape"])), *(layer[key] for key in columns[3:])]
            for layer in document["layers"]
        ]
        wandb_log_table(logger, prefix + "mask_table", columns, rows)
        wandb_update_summary(logger, {**summary_entries(report, prefix, document), **summary_extra})
        figures = {}
        for name, result in getattr(report, "probes", {}).items():
            if not hasattr(result, "figure"):
                continue
            try:
                figure = result.figure()
            except Exception as error:  # one probe's drawing must not cost the others or the artifact
                on_failure(f"figure of probe {name}", error)
                continue
            if figure is not None:
                figures[f"{prefix}probe/{name}"] = figure
        wandb_log_figures(logger, figures)
    else:
        columns = ["layer", "kept", "total", "density"]
        rows = [[name, int(mask.sum()), mask.numel(), float(mask.float().mean())] for name, mask in masks.items()]
        wandb_log_table(logger, prefix + "mask_table", columns, rows)
        wandb_update_summary(logger, {**{prefix + k: v for k, v in partial_metrics(masks).items()}, **summary_extra})
    if mask_path is not None:
        version = str(getattr(logger, "version", None) or "run")
        wandb_log_file_artifact(
            logger,
            mask_path,
            name=f"mask-{version}",
            artifact_type="mask",
            metadata={"density": masks.density, "fingerprint": masks.fingerprint(), "inferred": masks.inferred},
        )


def summary_entries(report: Any, prefix: str, document: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The run-summary entries, read from the report's own views: ``metrics()`` (every scalar) and
    ``to_dict()`` (each verdict's name, deciding rules and explanation; the headline).

    Nothing here reads the report's parts directly, so the summary holds what ``report.json`` holds.
    ``document``: ``report.to_dict()`` when the caller already has it.
    """
    summary: dict[str, Any] = {prefix + key: float(value) for key, value in report.metrics().items()}
    document = report.to_dict() if document is None else document
    for part in ("mask_verdict", "landscape", "existence"):
        section = document.get(part)
        if not section:
            continue
        # The theorem axes name their verdict "verdict"; the mask verdict names its grade "level".
        summary[f"{prefix}{part}/verdict"] = section.get("verdict", section.get("level"))
        summary[f"{prefix}{part}/rules"] = [str(rule) for rule in section.get("rules", ())]
        if section.get("explanation"):
            summary[f"{prefix}{part}/explanation"] = str(section["explanation"])
    summary[prefix + "headline"] = "\n".join(document["headline"])
    return summary
