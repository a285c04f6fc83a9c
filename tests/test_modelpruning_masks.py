"""Masks are read from a model pruned by Lightning's ModelPruning inside a real Trainer.fit."""

import pytest
import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import ModelPruning
from torch.utils.data import DataLoader, TensorDataset

from prune_landscape import MaskSet, analyze_structure, models


class _Tiny(pl.LightningModule):
    def __init__(self):
        super().__init__()
        self.net = models.mlp([6, 8, 3])

    def forward(self, x):
        return self.net(x)

    def training_step(self, batch, _):
        x, y = batch
        return torch.nn.functional.cross_entropy(self(x), y)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.05)


class _Snapshot(pl.Callback):
    """Records the masks ModelPruning holds at each epoch end (it prunes in on_train_epoch_end)."""

    def __init__(self):
        self.seen = []

    def on_train_epoch_end(self, trainer, pl_module):
        self.seen.append(MaskSet.from_module(pl_module.net, source="hooks"))


@pytest.mark.parametrize("permanent", [False, True])
def test_masks_from_modelpruning_fit(tmp_path, permanent):
    torch.manual_seed(0)
    data = TensorDataset(torch.randn(32, 6), torch.randint(0, 3, (32,)))
    module = _Tiny()
    snapshot = _Snapshot()
    pruning = ModelPruning("l1_unstructured", amount=0.5, make_pruning_permanent=permanent, use_lottery_ticket_hypothesis=False, verbose=0)
    trainer = pl.Trainer(
        max_epochs=2, callbacks=[pruning, snapshot], logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, default_root_dir=tmp_path,
    )
    trainer.fit(module, DataLoader(data, batch_size=16))
    during = snapshot.seen[-1]
    # Default parameter set: every weight and bias, pruned globally; 0.5 of the remaining at each epoch.
    assert set(during) == {"fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias"}
    kept = 48 + 8 + 24 + 3
    for _ in range(2):
        kept -= round(0.5 * kept)  # torch.nn.utils.prune's count for a float amount
    assert during.num_kept == kept
    after = MaskSet.from_module(module.net)
    if permanent:
        assert after.inferred and set(after) == {"fc1.weight", "fc2.weight"}
        for name in after:
            assert torch.equal(after[name], during[name])
    else:
        assert not after.inferred and after == during
    structure = analyze_structure(module.net)
    assert structure.final_layer_density == pytest.approx(float(during["fc2.weight"].float().mean()))
