"""``prune-landscape train``: the Lightning Trainer with the configured pruner callback, LandscapeAudit and
loggers; Ctrl-C ends it with the audit report of the training so far.

Adapter module (Hydra, Lightning, W&B). It loads torch and Lightning; :mod:`~prune_landscape.integrations.cli`
imports it only once the arguments are checked.
"""

from __future__ import annotations

import signal
from pathlib import Path

import pytorch_lightning as pl
from hydra.utils import instantiate
from omegaconf import DictConfig

from prune_landscape.experiments.sweep import fresh_model

from prune_landscape.integrations.cli_config import (
    _check_model,
    _output_dir,
    checked_command,
    command_exit_codes,
    usage_errors,
)
from prune_landscape.integrations.cli_loggers import _is_wandb, finish_wandb_run, wandb_offline_if_unreachable

__all__ = ["app", "run_train"]


def run_train(cfg: DictConfig) -> Path:
    """Train ``cfg.model`` on ``cfg.data`` with the Lightning Trainer, the pruner callback and LandscapeAudit.

    Returns the output directory (checkpoints, logs, ``audit/report.json``).

    Raises:
        UsageError: a configuration problem (nothing has run yet, no output folder made).
        KeyboardInterrupt: Ctrl-C during training (Lightning has shut down and the callbacks have written
            their reports through ``on_exception``).
    """
    with checked_command(cfg, "train"):
        return _run_train(cfg)


def _run_train(cfg: DictConfig) -> Path:
    with usage_errors():
        pl.seed_everything(int(cfg.seed), workers=True, verbose=False)
        datamodule = instantiate(cfg.data)
        model = fresh_model(lambda: instantiate(cfg.model), int(cfg.seed))
        datamodule.setup("fit")
        loss = str(cfg.module.get("loss", "cross_entropy"))
        _check_model(lambda: model, datamodule.train_set, loss=loss)
        module = instantiate(cfg.module, model=model)
        callbacks = [instantiate(cfg.pruner)] if cfg.get("pruner") and "_target_" in cfg.pruner else []
        audit_callback = instantiate(cfg.landscape_audit)
        directory = _output_dir(cfg)  # only after every check: a wrong setting never leaves an empty folder
        wandb_offline_if_unreachable(cfg)
        loggers = [instantiate(c) for c in (cfg.get("logger") or {}).values()]
        trainer = instantiate(cfg.trainer, callbacks=[*callbacks, audit_callback], logger=loggers or False)
    try:
        trainer.fit(module, datamodule=datamodule)
    except SystemExit:
        # Lightning turns Ctrl-C into on_exception hooks (the audit report is written there) and SystemExit(1),
        # and leaves SIGINT ignored: give the handler back and report an interrupt, not a crash.
        signal.signal(signal.SIGINT, signal.default_int_handler)
        if trainer.interrupted:
            raise KeyboardInterrupt from None
        raise
    if cfg.get("test", True) and not trainer.interrupted:
        trainer.test(module, datamodule=datamodule, verbose=False)
    if any(_is_wandb(logger) for logger in loggers):
        finish_wandb_run()
    report = getattr(audit_callback, "last_report", None)
    if report is not None:
        print(report)
    return directory


def app(cfg: DictConfig) -> None:
    """The Hydra task of ``prune-landscape train``: train, print the audit report, print the directory last.

    Exit status 2 for a configuration problem (one line on stderr, no folder left), 130 for Ctrl-C.
    """
    with command_exit_codes(cfg, "train",
                            lambda directory: f"interrupted: the audit report of the training so far is in {directory / 'audit'}"):
        directory = run_train(cfg)
    print(directory, flush=True)

