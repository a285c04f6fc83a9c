"""Eval-mode BatchNorm folding: what is folded, what is refused, and NTK-SAP scores unchanged (float64)."""

import pytest
import torch
from torch import nn

from prune_landscape import models
from prune_landscape.pruning import ntk_sap_scores
from prune_landscape.pruning.bnfold import FoldedNetwork
from prune_landscape.pruning.workspace import working_copy


class _Residual(nn.Module):
    """conv-BN-ReLU-conv-BN plus a 1x1-conv-BN shortcut, and a conv whose output also feeds the add."""

    def __init__(self):
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(2, 4, 3, padding=1, bias=False), nn.BatchNorm2d(4)
        self.conv2, self.bn2 = nn.Conv2d(4, 4, 3, padding=1), nn.BatchNorm2d(4)
        self.short, self.bn_short = nn.Conv2d(2, 4, 1, bias=False), nn.BatchNorm2d(4)
        self.shared, self.bn_shared = nn.Conv2d(4, 4, 1, bias=False), nn.BatchNorm2d(4, affine=False)
        self.fc = nn.Linear(4, 3)

    def forward(self, x):
        h = torch.relu(self.bn1(self.conv1(x)))
        out = torch.relu(self.bn2(self.conv2(h)) + self.bn_short(self.short(x)))
        s = self.shared(out)
        out = self.bn_shared(s) + s  # `shared` has two users: folding it would change the second one
        return self.fc(out.mean(dim=(2, 3)))


def _with_statistics(net, x):
    """Fresh random affine parameters and running statistics, then eval mode."""
    g = torch.Generator().manual_seed(11)
    with torch.no_grad():
        for module in net.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm) and module.affine:
                module.weight.copy_(torch.rand(module.weight.shape, generator=g, dtype=module.weight.dtype) + 0.5)
                module.bias.copy_(torch.randn(module.bias.shape, generator=g, dtype=module.bias.dtype))
        net.train()
        net(x)
    return net.eval()


def test_folds_each_single_use_conv_batchnorm_pair_and_matches_the_network():
    torch.manual_seed(0)
    x = torch.randn(5, 2, 6, 6, dtype=torch.float64)
    net = _with_statistics(_Residual().double(), x)
    folded = FoldedNetwork.build(net, x)
    assert folded.pairs == {"conv1": "bn1", "conv2": "bn2", "short": "bn_short"}
    weights = {n: p.detach() * 0.7 for n, p in net.named_parameters() if p.dim() > 1}
    expected = torch.func.functional_call(net, weights, (x,))
    torch.testing.assert_close(folded(weights, x), expected, rtol=1e-12, atol=1e-12)


def test_ntk_sap_scores_are_the_same_folded_or_not_on_resnet20_blocks():
    net = models.resnet20().double()
    masks = {n: torch.rand(p.shape, generator=torch.Generator().manual_seed(1)) > 0.3
             for n, p in net.named_parameters() if p.dim() > 1}
    data = (torch.zeros(3, 3, 8, 8, dtype=torch.float64), torch.zeros(3))
    scores = {}
    for fold in (True, False):
        scores[fold] = ntk_sap_scores(working_copy(net), masks, data, torch.Generator().manual_seed(4),
                                      repeats=2, fold_batchnorm=fold)
    for name in masks:
        torch.testing.assert_close(scores[True][name], scores[False][name], rtol=1e-9, atol=1e-15)
    assert any(bool(scores[True][n].sum() > 0) for n in masks)


def test_untraceable_or_misfolding_models_are_left_unfolded():
    class DataDependent(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc, self.bn = nn.Linear(3, 3), nn.BatchNorm1d(3)

        def forward(self, x):
            return self.bn(self.fc(x)) if x.sum() > 0 else x  # fx cannot trace a branch on values

    class SequenceBatchNorm(nn.Module):
        # Linear acts on the last dim, BatchNorm1d on dim 1: the rule would scale the wrong axis.
        def __init__(self):
            super().__init__()
            self.fc, self.bn = nn.Linear(4, 4), nn.BatchNorm1d(4)

        def forward(self, x):
            return self.bn(self.fc(x))

    x2, x3 = torch.randn(6, 3), torch.randn(6, 4, 4)
    assert FoldedNetwork.build(_with_statistics(DataDependent(), x2.abs()), x2.abs()) is None
    assert FoldedNetwork.build(_with_statistics(SequenceBatchNorm(), x3), x3) is None
    plain = nn.Sequential(nn.Linear(3, 2), nn.ReLU())
    assert FoldedNetwork.build(plain.eval(), x2) is None  # nothing to fold


@pytest.mark.parametrize("fold", [True, False])
def test_ntk_sap_without_batchnorm_or_foldable_structure_still_scores(fold):
    net = models.mlp([4, 5, 3]).double()
    masks = {n: torch.ones_like(p, dtype=torch.bool) for n, p in net.named_parameters() if p.dim() > 1}
    scores = ntk_sap_scores(working_copy(net), masks, (torch.zeros(6, 4), torch.zeros(6)),
                            torch.Generator().manual_seed(0), repeats=1, fold_batchnorm=fold)
    assert set(scores) == set(masks) and all(bool(torch.isfinite(s).all()) for s in scores.values())
