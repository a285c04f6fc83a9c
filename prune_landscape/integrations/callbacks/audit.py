"""LandscapeAudit: watch the masks of any pruning pipeline during training and audit each one.

Lightning adapter (may import pytorch_lightning; works in ``lightning.pytorch`` Trainers too). The callback
only schedules, gathers inputs, calls the core and logs: the decisions live in
:func:`prune_landscape.audit.audit`. It never ends a run: a failing audit, probe or logger call is
recorded (in the report's ``run`` section and one warning) and training goes on; the local report is
written at the end of fit, and also when fit stops on an exception or Ctrl-C (marked interrupted).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from prune_landscape.audit import audit
from prune_landscape.batching import DataLike, require_data
from prune_landscape.checks import check_nonnegative_number, check_positive_int
from prune_landscape.integrations.callbacks._batches import adapt_data, first_raw_batch
from prune_landscape.integrations.callbacks._network import NetworkChoice, NetworkSpec, check_network_spec, choose_network
from prune_landscape.integrations.callbacks._probes import ProbeFailure, check_probes, guarded_probes
from prune_landscape.integrations.callbacks._reportfiles import annotate, partial_metrics, partial_report, report_directory
from prune_landscape.integrations.callbacks._support import resolve_train_data
from prune_landscape.integrations.callbacks._wandb import log_wandb_extras
from prune_landscape.integrations.callbacks.options import AuditReporting, AuditSchedule, ModelIO, apply_legacy_keywords, as_group
from prune_landscape.integrations.loggers import guard_logger, log_scalars, logger_failures, wandb_loggers
from prune_landscape.masks import MaskSet, current_masks, install_mask_restore_hook, mask_version_key
from prune_landscape.modelcopy import plain_copy
from prune_landscape.report import save_report

__all__ = ["AuditRecord", "LandscapeAudit", "ProbeFailure"]


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
    ``torch.nn.utils.prune``; a permanently pruned model is read from its exact zeros. Works with any
    LightningModule, with or without ``forward``: the network audited is ``network`` if given, else
    chosen by the rules of :mod:`prune_landscape.integrations.callbacks._network` (``forward`` when it runs on a
    batch's inputs and reaches every pruned weight; else the single child holding every pruned weight).
    The choice is printed once and written into the report. When no network can be chosen, one warning
    names the argument to pass and the report holds what the masks alone tell (densities; the final
    layer by parameter order). The user's network is never changed: every audit runs on a detached copy.

    Args:
        probes: names from ``prune_landscape.probes.PROBES`` (or callables) run on the probe schedule. A
            probe that raises (e.g. the Hessian of a diverged model) is recorded as failed, not raised.
        network: the network to audit: a submodule name (``"student"``; ``""`` for the LightningModule
            itself) or a callable ``pl_module -> nn.Module``. Default: the automatic choice above.
        data: data for the probes (a DataLike); default: the fit's train dataloader.
        n_samples: the number of training samples n the audit uses from ``data`` (None: all of it).
        weight_decay: the training objective's L2 coefficient, for the audit's theory rules.
        schedule: when to audit and probe: an :class:`AuditSchedule` (or a mapping of its fields).
        model_io: how to feed the network and read its output: a :class:`ModelIO` (batch hooks, example
            input, output transform; or a mapping of its fields).
        reporting: where results go: an :class:`AuditReporting` (report directory, key prefix, W&B mask
            artifact, logger guarding; or a mapping of its fields).
        **legacy: the flat keywords these groups replaced (``probe_every_n_epochs=``, ``report_dir=``, ...);
            each still works and warns (DeprecationWarning) with the new spelling.

    Raises:
        ValueError: at construction, for any argument of the wrong type or range; in ``setup``, for a
            ``network`` name that is not a submodule.

    Attributes:
        records: every :class:`AuditRecord`, oldest first; ``last_report`` and ``last_masks`` hold the
            latest audit's report and masks; ``report_paths`` the files written; ``choice`` the
            :class:`NetworkChoice`; ``failures`` what failed and was recorded instead of raised.

    Example:
        >>> import lightning.pytorch as L
        >>> from prune_landscape.integrations.callbacks import AuditSchedule, LandscapeAudit
        >>> audit = LandscapeAudit(network="net", schedule=AuditSchedule(structure_every_n_epochs=1))
        >>> trainer = L.Trainer(max_epochs=1, callbacks=[audit], logger=False)
    """

    def __init__(
        self,
        probes: Sequence[str | Callable[..., Any]] = (),
        *,
        network: NetworkSpec = None,
        data: DataLike | None = None,
        n_samples: int | None = None,
        weight_decay: float = 0.0,
        schedule: AuditSchedule | Mapping[str, Any] | None = None,
        model_io: ModelIO | Mapping[str, Any] | None = None,
        reporting: AuditReporting | Mapping[str, Any] | None = None,
        **legacy: Any,
    ) -> None:
        self.probes = check_probes(probes)
        check_network_spec(network)
        if data is not None and not isinstance(data, (DataLoader, Dataset)):
            require_data(data, "LandscapeAudit(data=...)")
        groups = {
            "schedule": as_group(AuditSchedule, schedule, "schedule"),
            "model_io": as_group(ModelIO, model_io, "model_io"),
            "reporting": as_group(AuditReporting, reporting, "reporting"),
        }
        if legacy:
            groups = apply_legacy_keywords(groups, legacy, "LandscapeAudit")
        self.schedule: AuditSchedule = groups["schedule"]
        self.model_io: ModelIO = groups["model_io"]
        self.reporting: AuditReporting = groups["reporting"]
        self.network = network
        self.data = data
        self.n_samples = check_positive_int("n_samples", n_samples, optional=True)
        self.weight_decay = check_nonnegative_number("weight_decay", weight_decay)

        self.records: list[AuditRecord] = []
        self.last_report: Any = None
        self.last_masks: MaskSet | None = None
        self.report_paths: dict[str, Path] = {}
        self.choice: NetworkChoice | None = None
        self.failures: dict[str, dict[str, Any]] = {}
        self._fingerprint: str | None = None
        self._version_key: tuple | None = None
        self._raw_batch: Any = None
        self._announced = False
        self._finished = False
        self._started = False  # a fit that fails before training (a setup error) leaves no report behind
        self._choice_fingerprint: str | None = None

    # -- hooks: three-line guards; the work is in _check / _audit / _finish -------------------------------
    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if self.reporting.guard_loggers:
            for logger in trainer.loggers:
                guard_logger(logger)
        install_mask_restore_hook(pl_module)
        if stage == "fit":
            self._finished, self._raw_batch, self._announced, self._started = False, None, False, False
            # An explicit network is checked now, before any training (a wrong name raises here).
            self.choice = choose_network(pl_module, self.network, None) if self.network is not None else None

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._started = True
        self._safely("audit at train start", self._check, trainer, pl_module, "train_start")

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int) -> None:
        if self.schedule.check_due(trainer.global_step) and mask_version_key(pl_module) != self._version_key:
            self._safely("audit after a mask change", self._check, trainer, pl_module, "step")

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._safely("audit at epoch start", self._check, trainer, pl_module, "epoch_start")

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        epochs_done = trainer.current_epoch + 1
        probes_due = self.schedule.probes_due(epochs_done, bool(self.probes))
        forced = self.schedule.structure_due(epochs_done)
        self._safely("audit at epoch end", self._check, trainer, pl_module, "epoch_end", force=forced or probes_due, with_probes=probes_due)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # Runs before a ModelPruning listed after this callback removes its masks; one listed before has
        # already made them permanent, and current_masks reads the same bits from the zeros.
        with_probes = bool(self.probes) and self.schedule.probe_at_end
        with_data = with_probes or self.schedule.final_with_data
        self._safely("final audit", self._check, trainer, pl_module, "train_end", force=with_data, with_probes=with_probes, with_data=with_data)
        self._safely("writing the report", self._finish, trainer, pl_module)

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        if not self._started:
            return  # e.g. a wrong argument found in setup: no training happened, nothing to report
        reason = f"{type(exception).__name__}" + (f": {exception}" if str(exception) else "")
        self._safely("writing the report after an exception", self._finish, trainer, pl_module, interrupted=reason)

    # -- state ---------------------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {"fingerprint": self._fingerprint, "records": [record.to_dict() for record in self.records]}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._fingerprint = state_dict.get("fingerprint")
        self.records = [AuditRecord(**record) for record in state_dict.get("records", [])]

    # -- fault isolation -----------------------------------------------------------------------------------
    def _record_failure(self, what: str, error: BaseException | str) -> None:
        """Remember a failure for the report; the first of each kind warns."""
        text = error if isinstance(error, str) else f"{type(error).__name__}: {error}"
        if what in self.failures:
            self.failures[what]["count"] += 1
            return
        self.failures[what] = {"what": what, "error": text, "count": 1}
        warnings.warn(f"LandscapeAudit: {what} failed ({text}); training continues and the failure is in the report", RuntimeWarning, stacklevel=3)

    def _safely(self, what: str, function: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        try:
            return function(*args, **kwargs)
        except Exception as error:  # the callback must never be the reason a run dies
            self._record_failure(what, error)
            return None

    # -- the work --------------------------------------------------------------------------------------------
    def _inputs(self, trainer: pl.Trainer) -> Any:
        """The network's inputs from the first training batch (cached), through the batch_to_inputs hook."""
        if self.model_io.example_input is not None:
            return self.model_io.example_input
        if self._raw_batch is None:
            self._raw_batch = first_raw_batch(resolve_train_data(trainer, self.data))
        if self._raw_batch is None:
            return None
        inputs = self._safely("batch_to_inputs on the first batch", self.model_io.to_inputs, self._raw_batch)
        # Two samples are enough for a trial forward and the structural pass (shapes only).
        return inputs[:2] if isinstance(inputs, torch.Tensor) and inputs.ndim > 0 else inputs

    def _network(self, trainer: pl.Trainer, pl_module: pl.LightningModule, trigger: str) -> NetworkChoice:
        """The network choice: made once, retried while undecided before anything is pruned; announced once."""
        if self.choice is None or (not self.choice.decided and self.choice.provisional):
            # A provisional choice is retried only when the masks changed (each try copies the module).
            fingerprint = current_masks(pl_module).fingerprint()
            if self.choice is None or fingerprint != self._choice_fingerprint:
                self.choice = choose_network(pl_module, self.network, self._inputs(trainer))
                self._choice_fingerprint = fingerprint
        choice = self.choice
        if not self._announced and trainer.is_global_zero and (choice.decided or not choice.provisional or trigger == "train_end"):
            self._announced = True
            if choice.decided:
                print(f"LandscapeAudit: {choice.describe()}", flush=True)
            else:
                warnings.warn(
                    f"LandscapeAudit cannot choose the network to audit: {choice.reason}. {choice.fix}. Until then the "
                    "report holds the mask densities and the final layer by parameter order; training continues.",
                    UserWarning,
                    stacklevel=2,
                )
        return choice

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
        choice = self._network(trainer, pl_module, trigger)
        network = choice.module if choice.decided else pl_module
        masks = current_masks(network)
        fingerprint = masks.fingerprint()
        if fingerprint == self._fingerprint and not force and self.last_masks is not None:
            return
        self._fingerprint = fingerprint
        self.last_masks = masks
        if not trainer.is_global_zero:
            return  # masks are identical on every rank; one rank audits, logs and writes
        report = None
        if choice.decided:
            report = self._safely("audit", self._audit, trainer, network, masks, with_probes=with_probes, with_data=with_data or with_probes)
        self.last_report = report
        scalars = report.metrics() if report is not None else partial_metrics(masks)
        prefix = self.reporting.prefix
        metrics = {prefix + key: float(value) for key, value in scalars.items()}
        metrics.setdefault(prefix + "density", masks.density)
        self.records.append(
            AuditRecord(trigger, trainer.current_epoch, trainer.global_step, fingerprint, masks.density, masks.inferred, with_probes, metrics)
        )
        log_scalars(trainer.loggers, metrics, trainer.global_step, flush=trigger == "train_end")

    def _audit_data(self, trainer: pl.Trainer) -> Any:
        """The training data as (inputs, targets) batches for the core, or None (recorded) when it has no targets."""
        data = resolve_train_data(trainer, self.data)
        if data is None:
            return None
        if isinstance(data, DataLoader):
            if self._raw_batch is None:
                self._raw_batch = first_raw_batch(data)
            targets = self._safely("batch_to_targets on the first batch", self.model_io.to_targets, self._raw_batch)
            if not isinstance(targets, torch.Tensor):
                self._record_failure(
                    "reading targets", "the batches hold no tensor targets; the data-dependent rules and the probes are "
                    "skipped (pass model_io=ModelIO(batch_to_targets=lambda batch: ...))",
                )
                return None
        return adapt_data(data, self.model_io.to_inputs, self.model_io.to_targets)

    def _audit(self, trainer: pl.Trainer, network: nn.Module, masks: MaskSet, *, with_probes: bool, with_data: bool) -> Any:
        inputs = self._inputs(trainer)
        example = inputs if isinstance(inputs, (torch.Tensor, tuple, list, Mapping)) else None
        data = self._audit_data(trainer) if with_data else None
        probes = guarded_probes(self.probes, self._record_failure) if with_probes and data is not None else []
        if with_probes and data is None and self.probes:
            self._record_failure("probes", "no (inputs, targets) data to run them on")
        # The audit runs on a detached copy: the training model, its hooks and its graph stay untouched;
        # the forked RNG keeps the run's shuffles and dropout draws what they would be without the callback.
        devices = [torch.cuda.current_device()] if torch.cuda.is_available() and torch.cuda.is_initialized() else []
        with torch.random.fork_rng(devices=devices):
            return audit(
                plain_copy(network),
                data,
                n_samples=self.n_samples if data is not None else None,
                weight_decay=self.weight_decay,
                probes=probes,
                masks=masks,
                example_input=example,
                output_transform=self.model_io.output_transform,
            )

    def _finish(self, trainer: pl.Trainer, pl_module: pl.LightningModule, interrupted: str | None = None) -> None:
        """Write the report (and the mask) to the run directory; W&B extras when a WandbLogger is attached."""
        if self._finished or not trainer.is_global_zero:
            return
        self._finished = True  # written once: an exception after a finished report does not rewrite it
        choice = self.choice
        masks = self.last_masks
        if masks is None:  # stopped before the first audit: read the masks as they are
            masks = current_masks(choice.module if choice is not None and choice.decided else pl_module)
        directory = report_directory(trainer, self.reporting.report_dir)
        if self.last_report is not None:
            paths = dict(save_report(self.last_report, directory))
        else:
            if choice is not None and not choice.decided:
                reason = f"{choice.reason}; {choice.fix}"
            elif "audit" in self.failures:
                reason = f"the audit failed ({self.failures['audit']['error']})"
            else:
                reason = "the run stopped before the first audit"
            paths = partial_report(masks, reason, directory)
        paths["mask"] = masks.save(Path(directory) / "mask.safetensors")
        self.report_paths = paths
        prefix = self.reporting.prefix
        extra: dict[str, Any] = {f"{prefix}network": None if choice is None else choice.to_dict()}
        if interrupted:
            extra[f"{prefix}interrupted"] = interrupted
        for logger in wandb_loggers(trainer.loggers):
            log_wandb_extras(
                logger, self.last_report, masks, prefix=prefix, summary_extra=extra,
                mask_path=paths["mask"] if self.reporting.log_mask_artifact else None, on_failure=self._record_failure,
            )
        failures = list(self.failures.values())
        for logger in trainer.loggers:
            failures += [{"what": f"logger {f.logger}.{f.action}", "error": f.error, "count": f.count} for f in logger_failures(logger)]
        annotate(paths, {"network": None if choice is None else choice.to_dict(), "interrupted": interrupted, "failures": failures})
