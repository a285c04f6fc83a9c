"""A small LightningModule around any classifier or regressor, for the CLI, the tests and the recipes.

Lightning adapter: this module may import pytorch_lightning; the core never imports it.

Example:
    >>> from prune_landscape import models
    >>> from prune_landscape.integrations.lit import LitClassifier
    >>> lit = LitClassifier(models.mlp([4, 8, 3]), lr=0.05, optimizer="sgd")
    >>> lit.hparams.lr
    0.05
"""

from __future__ import annotations

from typing import Any

import pytorch_lightning as pl
import torch
from torch import nn
from torch.nn import functional as F

__all__ = ["LitClassifier", "LOSSES", "OPTIMIZERS"]

LOSSES = ("cross_entropy", "mse")
OPTIMIZERS = ("sgd", "adam", "adamw")


class LitClassifier(pl.LightningModule):
    """Train ``model`` with cross-entropy or MSE; logs ``train/loss``, ``train/acc``, ``val/loss``, ``val/acc``.

    Args:
        model: any ``nn.Module`` mapping inputs to logits (or to regression outputs with ``loss="mse"``).
        lr: learning rate.
        optimizer: ``"sgd"`` (with ``momentum``), ``"adam"`` or ``"adamw"``.
        momentum: SGD momentum (ignored by Adam).
        weight_decay: L2 penalty passed to the optimizer.
        loss: ``"cross_entropy"`` for integer class targets; ``"mse"`` for float targets of the output's
            shape, or for integer class targets (compared with their one-hot encoding).
        epochs: when given, a cosine learning-rate schedule over this many epochs (stepped per epoch).

    Accuracy is logged whenever the targets are integer class labels.

    Raises:
        ValueError: for an unknown optimizer or loss, or a non-positive lr / negative momentum or decay.

    Example:
        >>> from prune_landscape import models
        >>> lit = LitClassifier(models.mlp([2, 4, 1]), loss="mse", optimizer="adam", lr=1e-3)
        >>> type(lit.configure_optimizers()).__name__
        'Adam'
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        lr: float = 0.1,
        optimizer: str = "sgd",
        momentum: float = 0.9,
        weight_decay: float = 0.0,
        loss: str = "cross_entropy",
        epochs: int | None = None,
    ) -> None:
        if not isinstance(model, nn.Module):
            raise ValueError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        if optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {optimizer!r}")
        if loss not in LOSSES:
            raise ValueError(f"loss must be one of {LOSSES}, got {loss!r}")
        if not lr > 0:
            raise ValueError(f"lr must be > 0, got {lr}")
        if momentum < 0 or weight_decay < 0:
            raise ValueError(f"momentum and weight_decay must be >= 0, got {momentum} and {weight_decay}")
        if epochs is not None and int(epochs) < 1:
            raise ValueError(f"epochs must be a positive integer or None, got {epochs}")
        super().__init__()
        self.model = model
        self.save_hyperparameters(ignore=["model"])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)

    def _loss(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        if self.hparams.loss == "cross_entropy":
            return F.cross_entropy(outputs, targets)
        if not torch.is_floating_point(targets):
            # MSE on class labels: regress the one-hot code (the setting of the MSE-loss theory).
            targets = F.one_hot(targets, outputs.shape[-1]).to(outputs.dtype)
        return F.mse_loss(outputs, targets.reshape(outputs.shape).to(outputs.dtype))

    def _shared_step(self, batch: Any, stage: str) -> torch.Tensor:
        inputs, targets = batch[0], batch[1]
        outputs = self(inputs)
        loss = self._loss(outputs, targets)
        on_step = stage == "train"
        self.log(f"{stage}/loss", loss, on_step=on_step, on_epoch=True, prog_bar=True)
        if not torch.is_floating_point(targets) and outputs.ndim == 2:
            accuracy = (outputs.argmax(dim=-1) == targets).float().mean()
            self.log(f"{stage}/acc", accuracy, on_step=False, on_epoch=True, prog_bar=True)
        return loss

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        return self._shared_step(batch, "train")

    def validation_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        return self._shared_step(batch, "val")

    def test_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        return self._shared_step(batch, "test")

    def configure_optimizers(self) -> Any:
        hp = self.hparams
        # self.parameters() holds `weight_orig` for pruned tensors (the same Parameter objects), so an
        # optimizer built before or after pruning updates the right tensors.
        params = self.parameters()
        if hp.optimizer == "sgd":
            optimizer = torch.optim.SGD(params, lr=hp.lr, momentum=hp.momentum, weight_decay=hp.weight_decay)
        elif hp.optimizer == "adam":
            optimizer = torch.optim.Adam(params, lr=hp.lr, weight_decay=hp.weight_decay)
        else:
            optimizer = torch.optim.AdamW(params, lr=hp.lr, weight_decay=hp.weight_decay)
        if hp.epochs is None:
            return optimizer
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=int(hp.epochs))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "epoch"}}
