"""Overhead of LandscapeAudit's structural audit at every epoch, on ResNet-20 / digits (3x32x32).

Trains the same 80 %-sparse ResNet-20 (a fixed random mask attached with MaskSet.apply_to) with and
without ``LandscapeAudit(schedule=AuditSchedule(structure_every_n_epochs=1))`` (a forced structural audit at every epoch end, plus
the per-step mask-change check), alternating the two configurations, and prints

* the end-to-end ratio of median epoch times (audit / no audit), and
* the time spent inside the audit's hooks per epoch, divided by the epoch time without the audit
  (the overhead itself, free of run-to-run noise).

Target: at most 2 % overhead.

Usage:
    .venv/bin/python benchmarks/bench_callback_overhead.py [--epochs 3] [--repeats 2] [--max-samples N]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, TensorDataset

from prune_landscape import MaskSet, models
from prune_landscape.integrations.callbacks import AuditSchedule, LandscapeAudit
from prune_landscape.integrations.lit import LitClassifier


def load_digits_32(max_samples: int | None) -> tuple[torch.Tensor, torch.Tensor]:
    try:
        from prune_landscape.data import digits

        return digits("train", image_size=32, channels=3, max_samples=max_samples)
    except ImportError:  # before prune_landscape.data existed: the same images, upsampled here
        from sklearn.datasets import load_digits

        bunch = load_digits()
        x = torch.tensor(bunch.data, dtype=torch.float32).reshape(-1, 1, 8, 8) / 16.0
        x = torch.nn.functional.interpolate(x, size=32, mode="bilinear", align_corners=False).repeat(1, 3, 1, 1)
        x = (x - x.mean()) / x.std()
        y = torch.tensor(bunch.target, dtype=torch.long)
        return (x[:max_samples], y[:max_samples]) if max_samples else (x, y)


class EpochTimer(pl.Callback):
    """Wall time of each training epoch (first in the callback list for the start, last for the end)."""

    def __init__(self):
        self.times: list[float] = []
        self._start = 0.0

    def on_train_epoch_start(self, trainer, pl_module):
        self._start = time.perf_counter()

    def on_train_epoch_end(self, trainer, pl_module):
        self.times.append(time.perf_counter() - self._start)


class _End(pl.Callback):
    def __init__(self, timer: EpochTimer):
        self.timer = timer

    def on_train_epoch_end(self, trainer, pl_module):
        self.timer.on_train_epoch_end(trainer, pl_module)


class TimedAudit(LandscapeAudit):
    """LandscapeAudit that also accumulates the seconds spent in its training hooks."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.seconds = 0.0

    def _timed(self, hook, *args):
        start = time.perf_counter()
        hook(*args)
        self.seconds += time.perf_counter() - start

    def on_train_batch_start(self, *args):
        self._timed(super().on_train_batch_start, *args)

    def on_train_epoch_start(self, *args):
        self._timed(super().on_train_epoch_start, *args)

    def on_train_epoch_end(self, *args):
        self._timed(super().on_train_epoch_end, *args)


def run(data: DataLoader, masks: MaskSet, epochs: int, with_audit: bool) -> tuple[list[float], float, int]:
    torch.manual_seed(0)
    lit = LitClassifier(models.resnet20(num_classes=10), lr=0.05)
    masks.apply_to(lit)
    timer = EpochTimer()
    callbacks: list[pl.Callback] = [timer]
    audit = TimedAudit(schedule=AuditSchedule(structure_every_n_epochs=1)) if with_audit else None
    if audit is not None:
        callbacks.append(audit)
    callbacks.append(_End(timer))
    trainer = pl.Trainer(
        max_epochs=epochs, callbacks=callbacks, logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, accelerator="auto", devices=1,
        default_root_dir=tempfile.mkdtemp(prefix="bench-callback-"),  # the report lands here, not in the repo
    )
    trainer.fit(lit, data)
    return timer.times, (audit.seconds if audit else 0.0), (len(audit.records) if audit else 0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--max-samples", type=int, default=None)
    args = parser.parse_args()

    x, y = load_digits_32(args.max_samples)
    data = DataLoader(TensorDataset(x, y), batch_size=args.batch_size, shuffle=True, generator=torch.Generator().manual_seed(0))
    reference = LitClassifier(models.resnet20(num_classes=10))
    generator = torch.Generator().manual_seed(0)
    masks = MaskSet({name: torch.rand(m.shape, generator=generator) < 0.2 for name, m in MaskSet.dense(reference).items()})

    plain: list[float] = []
    audited: list[float] = []
    audit_seconds = 0.0
    audit_epochs = 0
    for _ in range(args.repeats):
        times, _, _ = run(data, masks, args.epochs, with_audit=False)
        plain += times[1:]  # the first epoch carries one-off start-up costs
        times, seconds, audits = run(data, masks, args.epochs, with_audit=True)
        audited += times[1:]
        audit_seconds += seconds
        audit_epochs += len(times)
    plain_median, audited_median = statistics.median(plain), statistics.median(audited)
    per_epoch = audit_seconds / audit_epochs
    print(f"device: {'cuda' if torch.cuda.is_available() else 'cpu'}, threads {torch.get_num_threads()}, "
          f"{len(x)} images 3x32x32, batch {args.batch_size}, {args.epochs} epochs x {args.repeats} repeats per config")
    print(f"median epoch time without audit: {plain_median:.3f} s; with audit every epoch: {audited_median:.3f} s")
    print(f"end-to-end ratio (with / without): {audited_median / plain_median:.4f}")
    print(f"audit time per epoch: {per_epoch * 1000:.1f} ms = {100 * per_epoch / plain_median:.2f} % of an epoch "
          f"(audits per run: {audits}, target <= 2 %)")


if __name__ == "__main__":
    main()
