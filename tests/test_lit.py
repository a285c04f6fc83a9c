"""LitClassifier: losses against hand-computed oracles, logged metrics, optimizers, Hydra instantiation."""

import pytest
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

from prune_landscape import models
from prune_landscape.integrations.lit import LitClassifier


def _trainer(tmp_path, epochs=3):
    return pl.Trainer(
        max_epochs=epochs, logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, default_root_dir=tmp_path, deterministic=True,
    )


def test_cross_entropy_validation_metrics_match_manual_evaluation(tmp_path):
    torch.manual_seed(0)
    x = torch.randn(96, 5)
    y = (x[:, 0] > 0).long() + (x[:, 1] > 0).long()  # 3 classes, learnable
    lit = LitClassifier(models.mlp([5, 16, 3]), lr=0.1, momentum=0.9)
    loader = DataLoader(TensorDataset(x, y), batch_size=96)
    before = F.cross_entropy(lit(x), y).item()
    trainer = _trainer(tmp_path, epochs=15)
    trainer.fit(lit, loader, loader)
    with torch.no_grad():
        logits = lit(x)
    # One validation batch holding all samples: the logged epoch value is the full-batch value.
    assert trainer.callback_metrics["val/loss"].item() == pytest.approx(F.cross_entropy(logits, y).item(), rel=1e-5)
    assert trainer.callback_metrics["val/acc"].item() == pytest.approx((logits.argmax(1) == y).float().mean().item())
    assert trainer.callback_metrics["val/loss"].item() < 0.7 * before
    assert {"train/loss_epoch", "train/acc", "val/acc"} <= set(trainer.callback_metrics)


def test_mse_on_labels_regresses_one_hot_and_on_floats_regresses_targets():
    torch.manual_seed(1)
    lit = LitClassifier(models.mlp([4, 3]), loss="mse")
    x, labels = torch.randn(8, 4), torch.randint(0, 3, (8,))
    out = lit(x)
    expected = ((out - F.one_hot(labels, 3).float()) ** 2).mean()
    assert lit._loss(out, labels).item() == pytest.approx(expected.item(), rel=1e-6)
    targets = torch.randn(8, 3)
    assert lit._loss(out, targets).item() == pytest.approx(((out - targets) ** 2).mean().item(), rel=1e-6)


@pytest.mark.parametrize(("name", "cls"), [("sgd", torch.optim.SGD), ("adam", torch.optim.Adam), ("adamw", torch.optim.AdamW)])
def test_optimizers_and_cosine_schedule(name, cls):
    lit = LitClassifier(models.mlp([4, 3]), optimizer=name, lr=0.3, weight_decay=1e-4, epochs=4)
    config = lit.configure_optimizers()
    optimizer, scheduler = config["optimizer"], config["lr_scheduler"]["scheduler"]
    assert isinstance(optimizer, cls) and optimizer.param_groups[0]["weight_decay"] == 1e-4
    for _ in range(2):
        optimizer.step()
        scheduler.step()
    # Cosine over 4 epochs: after 2 of them the rate is half the initial one.
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.15)
    assert isinstance(LitClassifier(models.mlp([4, 3])).configure_optimizers(), torch.optim.SGD)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"optimizer": "rmsprop"}, "optimizer must be one of"), ({"loss": "hinge"}, "loss must be one of"),
     ({"lr": 0.0}, "lr must be > 0, got 0.0"), ({"epochs": 0}, "epochs must be a positive integer")],
)
def test_invalid_arguments_name_expected_and_actual(kwargs, message):
    with pytest.raises(ValueError, match=message):
        LitClassifier(models.mlp([4, 3]), **kwargs)


def test_hydra_instantiate_builds_the_module():
    from hydra.utils import instantiate

    lit = instantiate(
        {"_target_": "prune_landscape.integrations.lit.LitClassifier", "model": {"_target_": "prune_landscape.models.mlp", "widths": [4, 6, 2]},
         "lr": 0.05, "optimizer": "adam", "loss": "mse"}
    )
    assert isinstance(lit, LitClassifier) and lit.hparams.lr == 0.05 and lit.hparams.loss == "mse"
    assert lit(torch.zeros(3, 4)).shape == (3, 2)
