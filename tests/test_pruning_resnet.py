"""ResNet-20 at density 0.1 for every method, and layer collapse where the literature reports it."""

import pytest
import torch

from prune_landscape import models
from prune_landscape.pruning import prune

# Affordable settings: the schedules and prune sets shrink, the rules do not.
OPTIONS = {
    "magnitude": {},
    "random": {},
    "snip": {"prune_samples": 8},
    "grasp": {"prune_samples": 4},
    "synflow": {"iterations": 10},
    "ntk_sap": {"iterations": 2, "repeats": 1, "prune_samples": 4},
}


@pytest.fixture(scope="module")
def cifar_like():
    g = torch.Generator().manual_seed(0)
    return torch.randn(8, 3, 32, 32, generator=g), torch.randint(0, 10, (8,), generator=g)


@pytest.mark.parametrize(
    "method", [pytest.param(m, marks=pytest.mark.slow) if m == "synflow" else m for m in OPTIONS]
)
def test_resnet20_density_0_1(method, cifar_like):
    net = models.resnet20()
    total = 270896
    masks = prune(net, method, 0.9, cifar_like, seed=0, **OPTIONS[method])
    assert len(masks) == 22 and masks.num_total == total and masks.num_kept == round(0.1 * total)
    kept = {n: int(m.sum()) for n, m in masks.items()}
    if method == "synflow":
        # The literature's SynFlow exception: the 1x1 shortcut convs are starved (2 of 2048 kept in the
        # reference runs; with our short 10-step schedule they may empty). Everything else stays.
        shortcuts = [n for n in kept if "shortcut" in n]
        assert shortcuts and all(kept[n] <= 0.01 * masks[n].numel() for n in shortcuts)
        kept = {n: k for n, k in kept.items() if n not in shortcuts}
    # At 90 % no other layer collapses (collapse is reported at 98 %+ for SNIP/GraSP on ResNet-20).
    assert min(kept.values()) > 0
    assert not masks["fc.weight"].all()  # the default prunes the classifier
    dense = prune(net, method, 0.9, cifar_like, seed=0, final_layer="dense", **OPTIONS[method])
    assert dense["fc.weight"].all() and dense.num_kept == round(0.1 * total)
    assert dense.density == round(0.1 * total) / total


@pytest.fixture(scope="module")
def deep_mlp():
    torch.manual_seed(0)
    return models.mlp([784, 100, 100, 100, 100, 100, 10])  # PyTorch default init


def test_magnitude_at_init_collapses_the_input_layer(deep_mlp):
    magnitude = prune(deep_mlp, "magnitude", 0.9)
    assert int(magnitude["fc1.weight"].sum()) == 0  # fc1 (784 inputs) emptied: layer collapse
    assert magnitude.num_kept == round(0.1 * magnitude.num_total)


@pytest.mark.slow
def test_synflow_does_not_collapse_the_deep_mlp(deep_mlp):
    synflow = prune(deep_mlp, "synflow", 0.9)  # the paper's 100 iterations
    assert min(int(m.sum()) for m in synflow.values()) > 0
    assert synflow.num_kept == round(0.1 * synflow.num_total)
