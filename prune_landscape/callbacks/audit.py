"""LandscapeAudit: watch the masks of any pruning pipeline during training and audit each one.

Lightning adapter (may import pytorch_lightning). The callback only schedules, gathers inputs, calls the
core and logs: the decisions live in :func:`prune_landscape.audit.audit`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch

from prune_landscape.batching import DataLike
from prune_landscape.callbacks._support import (
    current_masks,
    example_batch,
    install_mask_restore_hook,
    mask_version_key,
    resolve_train_data,
)
from prune_landscape.loggers import (
    guard_logger,
    log_scalars,
    wandb_log_figures,
    wandb_log_file_artifact,
    wandb_log_table,
    wandb_loggers,
    wandb_update_summary,
)
from prune_landscape.masks import MaskSet
from prune_landscape.modelcopy import plain_copy

__all__ = ["AuditRecord", "LandscapeAudit"]


@dataclass(frozen=True)
class AuditRecord:
    """One audit the callback ran: when, why, on which masks, and the scalars it logged."""

    trigger: str
    epoch: int
    step: int
    fingerprint: str
    density: float
    inferred: bool
    with_probes: bool
    metrics: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class LandscapeAudit(pl.Callback):
    """Audit the pruning masks whenever they change, with probes on a schedule; log and write the report.

    Works with any pruning pipeline: this package's callbacks, Lightning's ``ModelPruning`` (before or
    after it in the callback list, ``make_pruning_permanent`` or not), or masks attached by hand with
    ``torch.nn.utils.prune``; a permanently pruned model is read from its exact zeros.

    Args:
        probes: names from ``prune_landscape.probes.PROBES`` (or callables) run on the probe schedule.
        data: data for the probes (a DataLike); default: the fit's train dataloader.
        n_samples: the number of training samples n the audit uses from ``data`` (None: all of it).
        final_with_data: at the end of fit, audit once more with ``data`` so the data-dependent rules
            (n, whitening, rank condition) decide the final report.
        weight_decay: the training objective's L2 coefficient, for the audit's theory rules.
        probe_every_n_epochs: run the probes every N epochs (None: only at the end).
        probe_at_end: run the probes once at the end of fit.
        structure_every_n_epochs: re-run the structural audit every N epochs even without a mask change.
        check_every_n_steps: how often to look for new masks between epochs (a cheap buffer-version check).
        example_input: an input batch for the structural pass; default: the first training batch.
        report_dir: where report.json/report.md/mask.safetensors go; default ``trainer.log_dir``.
        prefix: prefix of every logged key.
        log_mask_artifact: with a WandbLogger, log the final mask as an artifact of type ``"mask"``.
        guard_loggers: make every attached logger fault tolerant (a failure warns, training continues).

    Attributes:
        records: every :class:`AuditRecord`, oldest first; ``last_report`` and ``last_masks`` hold the
            latest audit's report and masks; ``report_paths`` the files written at the end.

    Example:
        >>> import pytorch_lightning as pl
        >>> from prune_landscape.callbacks import LandscapeAudit
        >>> trainer = pl.Trainer(max_epochs=1, callbacks=[LandscapeAudit()], logger=False)
    """

    def __init__(
        self,
        probes: Sequence[str | Callable[..., Any]] = (),
        *,
        data: DataLike | None = None,
        n_samples: int | None = None,
        final_with_data: bool = True,
        weight_decay: float = 0.0,
        probe_every_n_epochs: int | None = None,
        probe_at_end: bool = True,
        structure_every_n_epochs: int | None = None,
        check_every_n_steps: int = 1,
        example_input: torch.Tensor | None = None,
        report_dir: str | Path | None = None,
        prefix: str = "audit/",
        log_mask_artifact: bool = True,
        guard_loggers: bool = True,
    ) -> None:
        for name, value in (("probe_every_n_epochs", probe_every_n_epochs), ("structure_every_n_epochs", structure_every_n_epochs)):
            if value is not None and (isinstance(value, bool) or int(value) != value or value < 1):
                raise ValueError(f"{name} must be a positive integer or None, got {value!r}")
        if isinstance(check_every_n_steps, bool) or int(check_every_n_steps) != check_every_n_steps or check_every_n_steps < 1:
            raise ValueError(f"check_every_n_steps must be a positive integer, got {check_every_n_steps!r}")
        if n_samples is not None and n_samples < 1:
            raise ValueError(f"n_samples must be a positive integer or None, got {n_samples!r}")
        self._validate_probes(probes)
        self.probes = tuple(probes)
        self.data = data
        self.n_samples = n_samples
        self.final_with_data = bool(final_with_data)
        self.weight_decay = float(weight_decay)
        self.probe_every_n_epochs = probe_every_n_epochs
        self.probe_at_end = bool(probe_at_end)
        self.structure_every_n_epochs = structure_every_n_epochs
        self.check_every_n_steps = int(check_every_n_steps)
        self.example_input = example_input
        self.report_dir = None if report_dir is None else Path(report_dir)
        self.prefix = prefix
        self.log_mask_artifact = bool(log_mask_artifact)
        self.guard_loggers = bool(guard_loggers)

        self.records: list[AuditRecord] = []
        self.last_report: Any = None
        self.last_masks: MaskSet | None = None
        self.report_paths: dict[str, Path] = {}
        self._fingerprint: str | None = None
        self._version_key: tuple | None = None

    @staticmethod
    def _validate_probes(probes: Sequence[Any]) -> None:
        if isinstance(probes, str):
            raise ValueError(f"probes must be a sequence of names or callables, got the string {probes!r}")
        names = [p for p in probes if not callable(p)]
        if not names:
            return
        from prune_landscape.probes import PROBES

        unknown = [p for p in names if p not in PROBES]
        if unknown:
            raise ValueError(f"unknown probes {unknown}; expected callables or names in {sorted(PROBES)}")

    # -- hooks: three-line guards; the work is in _check / _audit / _finish -------------------------------
    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if self.guard_loggers:
            for logger in trainer.loggers:
                guard_logger(logger)
        install_mask_restore_hook(pl_module)

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._check(trainer, pl_module, "train_start")

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int) -> None:
        if trainer.global_step % self.check_every_n_steps == 0:
            key = mask_version_key(pl_module)
            if key != self._version_key:
                self._check(trainer, pl_module, "step")

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._check(trainer, pl_module, "epoch_start")

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        epochs_done = trainer.current_epoch + 1
        probes_due = bool(self.probes) and self.probe_every_n_epochs is not None and epochs_done % self.probe_every_n_epochs == 0
        forced = self.structure_every_n_epochs is not None and epochs_done % self.structure_every_n_epochs == 0
        self._check(trainer, pl_module, "epoch_end", force=forced or probes_due, with_probes=probes_due)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # Runs before a ModelPruning listed after this callback removes its masks; one listed before has
        # already made them permanent, and current_masks reads the same bits from the zeros.
        with_probes = bool(self.probes) and self.probe_at_end
        with_data = with_probes or self.final_with_data
        self._check(trainer, pl_module, "train_end", force=with_data, with_probes=with_probes, with_data=with_data)
        self._finish(trainer)

    # -- state ---------------------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {"fingerprint": self._fingerprint, "records": [record.to_dict() for record in self.records]}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._fingerprint = state_dict.get("fingerprint")
        self.records = [AuditRecord(**record) for record in state_dict.get("records", [])]

    # -- the work --------------------------------------------------------------------------------------------
    def _check(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        trigger: str,
        *,
        force: bool = False,
        with_probes: bool = False,
        with_data: bool = False,
    ) -> None:
        """Audit when the masks changed since the last audit (or when forced); log the scalars."""
        self._version_key = mask_version_key(pl_module)
        masks = current_masks(pl_module)
        fingerprint = masks.fingerprint()
        if fingerprint == self._fingerprint and not force and self.last_masks is not None:
            return
        self._fingerprint = fingerprint
        self.last_masks = masks
        if not trainer.is_global_zero:
            return  # masks are identical on every rank; one rank audits, logs and writes
        report = self._audit(trainer, pl_module, masks, with_probes=with_probes, with_data=with_data or with_probes)
        metrics = {self.prefix + key: float(value) for key, value in report.metrics().items()}
        metrics.setdefault(self.prefix + "density", masks.density)
        self.last_report = report
        self.records.append(
            AuditRecord(trigger, trainer.current_epoch, trainer.global_step, fingerprint, masks.density, masks.inferred, with_probes, metrics)
        )
        log_scalars(trainer.loggers, metrics, trainer.global_step, flush=trigger == "train_end")

    def _audit(self, trainer: pl.Trainer, pl_module: pl.LightningModule, masks: MaskSet, *, with_probes: bool, with_data: bool) -> Any:
        from prune_landscape.audit import audit

        example = self.example_input
        if example is None:
            example = example_batch(resolve_train_data(trainer, None))
        data = resolve_train_data(trainer, self.data) if with_data else None
        # The audit runs on a detached copy: the training model, its hooks and its graph stay untouched.
        return audit(
            plain_copy(pl_module),
            data,
            n_samples=self.n_samples if data is not None else None,
            weight_decay=self.weight_decay,
            probes=self.probes if with_probes else (),
            masks=masks,
            example_input=example,
        )

    def _finish(self, trainer: pl.Trainer) -> None:
        """Write the report (and the mask) to the run directory; W&B extras when a WandbLogger is attached."""
        directory = self.report_dir if self.report_dir is not None else Path(trainer.log_dir or trainer.default_root_dir)
        if not trainer.is_global_zero or self.last_report is None or self.last_masks is None:
            return
        from prune_landscape.report import save_report

        self.report_paths = dict(save_report(self.last_report, directory))
        self.report_paths["mask"] = self.last_masks.save(Path(directory) / "mask.safetensors")
        for logger in wandb_loggers(trainer.loggers):
            self._log_wandb_extras(logger, trainer.global_step)

    def _log_wandb_extras(self, logger: Any, step: int) -> None:
        report, masks = self.last_report, self.last_masks
        columns = ["layer", "kind", "shape", "kept", "total", "density", "alive_units", "units"]
        rows = [
            [layer.name, layer.kind, "x".join(map(str, layer.shape)), layer.kept, layer.total, layer.density, layer.alive_units, layer.units]
            for layer in report.structure.layers
        ]
        wandb_log_table(logger, self.prefix + "mask_table", columns, rows)
        wandb_update_summary(logger, _summary(report, self.prefix))
        figures = {}
        for name, result in getattr(report, "probes", {}).items():
            figure = result.figure() if hasattr(result, "figure") else None
            if figure is not None:
                figures[f"{self.prefix}probe/{name}"] = figure
        wandb_log_figures(logger, figures)
        if self.log_mask_artifact:
            version = str(getattr(logger, "version", None) or "run")
            wandb_log_file_artifact(
                logger,
                self.report_paths["mask"],
                name=f"mask-{version}",
                artifact_type="mask",
                metadata={"density": masks.density, "fingerprint": masks.fingerprint(), "inferred": masks.inferred},
            )


def _summary(report: Any, prefix: str) -> dict[str, Any]:
    """The run-summary entries: the final scalars, the verdicts and the rules behind them."""
    summary: dict[str, Any] = {prefix + key: float(value) for key, value in report.metrics().items()}
    for part in ("landscape", "existence"):
        section = getattr(report, part, None)
        if section is None:
            continue
        verdict = getattr(section, "verdict", None)
        summary[f"{prefix}{part}/verdict"] = getattr(verdict, "name", str(verdict))
        summary[f"{prefix}{part}/rules"] = [str(rule) for rule in getattr(section, "rules", ())]
        if getattr(section, "explanation", None):
            summary[f"{prefix}{part}/explanation"] = str(section.explanation)
    return summary
