"""Both Lightning namespaces (``pytorch_lightning`` and ``lightning.pytorch``) and LightningModules as users
write them: without ``forward``, with a ``forward`` that returns a dict, with a teacher and a student."""

from __future__ import annotations

import importlib
from types import SimpleNamespace

import torch
from torch.nn import functional as F
from torch.utils.data import DataLoader, TensorDataset

from prune_landscape import models

NAMESPACES = ["pytorch_lightning", "lightning.pytorch"]


def namespace(name: str) -> SimpleNamespace:
    """The Trainer, LightningModule, callbacks and loggers of one namespace, and modules built on it."""
    pl = importlib.import_module(name)
    callbacks = importlib.import_module(f"{name}.callbacks")
    loggers = importlib.import_module(f"{name}.loggers")

    class NoForward(pl.LightningModule):
        """Keeps its network in self.net and calls it in training_step; no forward (Lightning allows that)."""

        def __init__(self, widths=(6, 8, 3)):
            super().__init__()
            self.net = models.mlp(list(widths))

        def training_step(self, batch, batch_idx):
            x, y = batch
            loss = F.cross_entropy(self.net(x), y)
            self.log("train/loss", loss)
            return loss

        def test_step(self, batch, batch_idx):
            x, y = batch
            self.log("test/loss", F.cross_entropy(self.net(x), y))

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.05)

    class DictForward(NoForward):
        """forward exists but returns a dict (as many NLP and detection modules do)."""

        def forward(self, x):
            return {"logits": self.net(x)}

        def training_step(self, batch, batch_idx):
            x, y = batch
            return F.cross_entropy(self(x)["logits"], y)

    class TeacherStudent(pl.LightningModule):
        """Distillation: a frozen teacher and a student, both with prunable layers; forward runs the student."""

        def __init__(self):
            super().__init__()
            self.teacher = models.mlp([6, 16, 3])
            self.student = models.mlp([6, 8, 3])
            self.teacher.requires_grad_(False)

        def forward(self, x):
            return self.student(x)

        def training_step(self, batch, batch_idx):
            x, y = batch
            logits = self(x)
            soft = F.softmax(self.teacher(x), dim=-1)
            return F.cross_entropy(logits, y) + F.kl_div(F.log_softmax(logits, dim=-1), soft, reduction="batchmean")

        def configure_optimizers(self):
            return torch.optim.SGD(self.student.parameters(), lr=0.05)

    return SimpleNamespace(
        name=name, pl=pl, ModelPruning=callbacks.ModelPruning, CSVLogger=loggers.CSVLogger,
        WandbLogger=loggers.WandbLogger, NoForward=NoForward, DictForward=DictForward, TeacherStudent=TeacherStudent,
    )


def data(seed: int = 0, n: int = 48, batch_size: int = 16) -> DataLoader:
    g = torch.Generator().manual_seed(seed)
    return DataLoader(TensorDataset(torch.randn(n, 6, generator=g), torch.randint(0, 3, (n,), generator=g)), batch_size=batch_size)


def trainer(ns: SimpleNamespace, tmp_path, callbacks, logger=False, epochs: int = 2, **kwargs):
    return ns.pl.Trainer(
        max_epochs=epochs, callbacks=callbacks, logger=logger, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, default_root_dir=tmp_path, log_every_n_steps=1, **kwargs,
    )
