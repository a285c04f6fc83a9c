"""LandscapeAudit: watch the masks of any pruning pipeline during training and audit each one.

Lightning adapter (may import pytorch_lightning; works in ``lightning.pytorch`` Trainers too). The callback
only schedules, gathers inputs, calls the core and logs: the decisions live in
:func:`prune_landscape.audit.audit`. It never ends a run: a failing audit, probe or logger call is
recorded (in the report's ``run`` section and one warning) and training goes on; the local report is
written at the end of fit, and also when fit stops on an exception or Ctrl-C (marked interrupted).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from prune_landscape.batching import DataLike, require_data
from prune_landscape.integrations.callbacks._batches import (
    BatchToInputs,
    BatchToTargets,
    adapt_data,
    default_batch_to_inputs,
    default_batch_to_targets,
    first_raw_batch,
)
from prune_landscape.integrations.callbacks._checks import (
    check_bool,
    check_callable,
    check_nonnegative_number,
    check_path,
    check_positive_int,
    check_str,
)
from prune_landscape.integrations.callbacks._network import NetworkChoice, NetworkSpec, check_network_spec, choose_network
from prune_landscape.integrations.callbacks._reportfiles import annotate, partial_metrics, partial_report
from prune_landscape.integrations.callbacks._support import current_masks, install_mask_restore_hook, mask_version_key, resolve_train_data
from prune_landscape.integrations.callbacks._wandb import log_wandb_extras
from prune_landscape.integrations.loggers import guard_logger, log_scalars, logger_failures, safe_call, wandb_loggers
from prune_landscape.masks import MaskSet
from prune_landscape.modelcopy import plain_copy

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


@dataclass(frozen=True)
class ProbeFailure:
    """The result a probe that raised leaves in the report (its scalar ``failed`` = 1 is logged)."""

    name: str
    error: str

    def scalars(self) -> dict[str, float]:
        return {"failed": 1.0}

    def figure(self) -> None:
        return None

    def to_dict(self) -> dict[str, Any]:
        return {"failed": True, "error": self.error}


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
    layer by parameter order).

    Args:
        probes: names from ``prune_landscape.probes.PROBES`` (or callables) run on the probe schedule. A
            probe that raises (e.g. the Hessian of a diverged model) is recorded as failed, not raised.
        network: the network to audit: a submodule name (``"student"``; ``""`` for the LightningModule
            itself) or a callable ``pl_module -> nn.Module``. Default: the automatic choice above.
        batch_to_inputs: ``batch -> inputs`` of the network (default :func:`default_batch_to_inputs`: a
            tensor, a tuple's first item, or a dict's ``inputs``/``x``/``input_ids``/... entry).
        batch_to_targets: ``batch -> targets`` (default :func:`default_batch_to_targets`); without targets
            the data-dependent rules and the probes are skipped (recorded).
        data: data for the probes (a DataLike); default: the fit's train dataloader.
        n_samples: the number of training samples n the audit uses from ``data`` (None: all of it).
        final_with_data: at the end of fit, audit once more with ``data`` so the data-dependent rules
            (n, whitening, rank condition) decide the final report.
        weight_decay: the training objective's L2 coefficient, for the audit's theory rules.
        probe_every_n_epochs: run the probes every N epochs (None: only at the end).
        probe_at_end: run the probes once at the end of fit.
        structure_every_n_epochs: re-run the structural audit every N epochs even without a mask change.
        check_every_n_steps: how often to look for new masks between epochs (a cheap buffer-version check).
        example_input: the network's inputs for the structural pass; default: from the first training batch.
        report_dir: where report.json/report.md/mask.safetensors go. Default: the run's own directory (a
            WandbLogger listed first: its run's ``files/`` folder; otherwise ``trainer.log_dir``).
        prefix: prefix of every logged key.
        log_mask_artifact: with a WandbLogger, log the final mask as an artifact of type ``"mask"``.
        guard_loggers: make every attached logger fault tolerant (a failing call is recorded and warned;
            the logger stays on and later calls go through).

    Raises:
        ValueError: at construction, for any argument of the wrong type or range; in ``setup``, for a
            ``network`` name that is not a submodule.

    Attributes:
        records: every :class:`AuditRecord`, oldest first; ``last_report`` and ``last_masks`` hold the
            latest audit's report and masks; ``report_paths`` the files written; ``choice`` the
            :class:`NetworkChoice`; ``failures`` what failed and was recorded instead of raised.

    Example:
        >>> import lightning.pytorch as L
        >>> from prune_landscape.integrations.callbacks import LandscapeAudit
        >>> trainer = L.Trainer(max_epochs=1, callbacks=[LandscapeAudit(network="net")], logger=False)
    """

    def __init__(
        self,
        probes: Sequence[str | Callable[..., Any]] = (),
        *,
        network: NetworkSpec = None,
        batch_to_inputs: BatchToInputs | None = None,
        batch_to_targets: BatchToTargets | None = None,
        data: DataLike | None = None,
        n_samples: int | None = None,
        final_with_data: bool = True,
        weight_decay: float = 0.0,
        probe_every_n_epochs: int | None = None,
        probe_at_end: bool = True,
        structure_every_n_epochs: int | None = None,
        check_every_n_steps: int = 1,
        example_input: Any = None,
        report_dir: str | Path | None = None,
        prefix: str = "audit/",
        log_mask_artifact: bool = True,
        guard_loggers: bool = True,
    ) -> None:
        self._validate_probes(probes)
        check_network_spec(network)
        if data is not None and not isinstance(data, (DataLoader, Dataset)):
            require_data(data, "LandscapeAudit(data=...)")
        if example_input is not None and not isinstance(example_input, (torch.Tensor, tuple, list, dict)):
            raise ValueError(f"example_input must be a tensor, a tuple or a dict of inputs, got {type(example_input).__name__}")
        check_path("report_dir", report_dir)
        self.probes = tuple(probes)
        self.network = network
        self.batch_to_inputs = check_callable("batch_to_inputs", batch_to_inputs) or default_batch_to_inputs
        self.batch_to_targets = check_callable("batch_to_targets", batch_to_targets) or default_batch_to_targets
        self.data = data
        self.n_samples = check_positive_int("n_samples", n_samples, allow_none=True)
        self.final_with_data = check_bool("final_with_data", final_with_data)
        self.weight_decay = check_nonnegative_number("weight_decay", weight_decay)
        self.probe_every_n_epochs = check_positive_int("probe_every_n_epochs", probe_every_n_epochs, allow_none=True)
        self.probe_at_end = check_bool("probe_at_end", probe_at_end)
        self.structure_every_n_epochs = check_positive_int("structure_every_n_epochs", structure_every_n_epochs, allow_none=True)
        self.check_every_n_steps = check_positive_int("check_every_n_steps", check_every_n_steps)
        self.example_input = example_input
        self.report_dir = None if report_dir is None else Path(report_dir)
        self.prefix = check_str("prefix", prefix)
        self.log_mask_artifact = check_bool("log_mask_artifact", log_mask_artifact)
        self.guard_loggers = check_bool("guard_loggers", guard_loggers)

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

    @staticmethod
    def _validate_probes(probes: Sequence[Any]) -> None:
        if isinstance(probes, str):
            raise ValueError(f"probes must be a sequence of names or callables, got the string {probes!r}")
        if not isinstance(probes, Sequence):
            raise ValueError(f"probes must be a sequence of names or callables, got {type(probes).__name__}")
        names = [p for p in probes if not callable(p)]
        if not names:
            return
        from prune_landscape.probes import PROBES

        unknown = [p for p in names if not isinstance(p, str) or p not in PROBES]
        if unknown:
            raise ValueError(f"unknown probes {unknown}; expected callables or names in {sorted(PROBES)}")

    # -- hooks: three-line guards; the work is in _check / _audit / _finish -------------------------------
    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if self.guard_loggers:
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
        if trainer.global_step % self.check_every_n_steps == 0 and mask_version_key(pl_module) != self._version_key:
            self._safely("audit after a mask change", self._check, trainer, pl_module, "step")

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._safely("audit at epoch start", self._check, trainer, pl_module, "epoch_start")

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        epochs_done = trainer.current_epoch + 1
        probes_due = bool(self.probes) and self.probe_every_n_epochs is not None and epochs_done % self.probe_every_n_epochs == 0
        forced = self.structure_every_n_epochs is not None and epochs_done % self.structure_every_n_epochs == 0
        self._safely("audit at epoch end", self._check, trainer, pl_module, "epoch_end", force=forced or probes_due, with_probes=probes_due)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # Runs before a ModelPruning listed after this callback removes its masks; one listed before has
        # already made them permanent, and current_masks reads the same bits from the zeros.
        with_probes = bool(self.probes) and self.probe_at_end
        with_data = with_probes or self.final_with_data
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
        if self.example_input is not None:
            return self.example_input
        if self._raw_batch is None:
            self._raw_batch = first_raw_batch(resolve_train_data(trainer, self.data))
        if self._raw_batch is None:
            return None
        inputs = self._safely("batch_to_inputs on the first batch", self.batch_to_inputs, self._raw_batch)
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
        metrics = {self.prefix + key: float(value) for key, value in scalars.items()}
        metrics.setdefault(self.prefix + "density", masks.density)
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
            targets = self._safely("batch_to_targets on the first batch", self.batch_to_targets, self._raw_batch)
            if not isinstance(targets, torch.Tensor):
                self._record_failure(
                    "reading targets", "the batches hold no tensor targets; the data-dependent rules and the probes are "
                    "skipped (pass batch_to_targets=lambda batch: ...)",
                )
                return None
        return adapt_data(data, self.batch_to_inputs, self.batch_to_targets)

    def _probe_callables(self) -> list[Callable[..., Any]]:
        """The probes, each wrapped so that one that raises leaves a ProbeFailure instead of ending the audit."""
        from prune_landscape.probes import PROBES

        wrapped = []
        for probe in self.probes:
            name = probe if isinstance(probe, str) else getattr(probe, "__name__", type(probe).__name__)
            function = PROBES[probe] if isinstance(probe, str) else probe

            def run(model: nn.Module, data: Any, __name: str = name, __function: Callable[..., Any] = function) -> Any:
                try:
                    return __function(model, data)
                except Exception as error:  # a probe failing (NaN weights, ARPACK) must not lose the audit
                    self._record_failure(f"probe {__name}", error)
                    return ProbeFailure(__name, f"{type(error).__name__}: {error}")

            run.__name__ = name
            wrapped.append(run)
        return wrapped

    def _audit(self, trainer: pl.Trainer, network: nn.Module, masks: MaskSet, *, with_probes: bool, with_data: bool) -> Any:
        from prune_landscape.audit import audit

        inputs = self._inputs(trainer)
        example = inputs if isinstance(inputs, (torch.Tensor, tuple, list)) else None
        data = self._audit_data(trainer) if with_data else None
        probes = self._probe_callables() if with_probes and data is not None else []
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
            )

    def _report_directory(self, trainer: pl.Trainer) -> Path:
        """``report_dir``; else a first WandbLogger's run directory; else ``trainer.log_dir``."""
        if self.report_dir is not None:
            return self.report_dir
        loggers = list(trainer.loggers)
        if loggers and wandb_loggers(loggers[:1]):
            run_dir = safe_call(loggers[0], "experiment.dir", lambda: loggers[0].experiment.dir)
            if isinstance(run_dir, str) and run_dir:
                return Path(run_dir)
        return Path(trainer.log_dir or trainer.default_root_dir)

    def _finish(self, trainer: pl.Trainer, pl_module: pl.LightningModule, interrupted: str | None = None) -> None:
        """Write the report (and the mask) to the run directory; W&B extras when a WandbLogger is attached."""
        if self._finished or not trainer.is_global_zero:
            return
        self._finished = True  # written once: an exception after a finished report does not rewrite it
        choice = self.choice
        masks = self.last_masks
        if masks is None:  # stopped before the first audit: read the masks as they are
            masks = current_masks(choice.module if choice is not None and choice.decided else pl_module)
        directory = self._report_directory(trainer)
        from prune_landscape.report import save_report

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
        extra: dict[str, Any] = {f"{self.prefix}network": None if choice is None else choice.to_dict()}
        if interrupted:
            extra[f"{self.prefix}interrupted"] = interrupted
        for logger in wandb_loggers(trainer.loggers):
            log_wandb_extras(
                logger, self.last_report, masks, prefix=self.prefix, summary_extra=extra,
                mask_path=paths["mask"] if self.log_mask_artifact else None, on_failure=self._record_failure,
            )
        failures = list(self.failures.values())
        for logger in trainer.loggers:
            failures += [{"what": f"logger {f.logger}.{f.action}", "error": f.error, "count": f.count} for f in logger_failures(logger)]
        annotate(paths, {"network": None if choice is None else choice.to_dict(), "interrupted": interrupted, "failures": failures})
