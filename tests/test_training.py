"""The mask-aware trainer: hand-worked steps, determinism, exact zeros during and after training."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

from _probe_helpers import pruned_mlp
from prune_landscape import MaskSet, models
from prune_landscape.training import evaluate, loss_function, train


def _data(n=48, d=5, classes=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=g), torch.randint(0, classes, (n,), generator=g)


def _pruned_mlp(seed=0, hooks=True):
    return pruned_mlp((5, 16, 3), density=0.4, seed=seed, hooks=hooks, dtype=torch.float32)


def test_one_sgd_step_matches_hand_computation():
    # Linear model, squared loss, full batch: w1 = w0 - lr * (grad + wd * w0) on kept entries, 0 on pruned.
    torch.manual_seed(0)
    net = torch.nn.Linear(3, 2)
    x, y = torch.randn(8, 3), torch.randn(8, 2)
    mask = torch.tensor([[True, False, True], [True, True, False]])
    w0, b0 = net.weight.detach().clone() * mask, net.bias.detach().clone()
    w = w0.clone().requires_grad_(True)
    b = b0.clone().requires_grad_(True)
    F.mse_loss(x @ w.T + b, y).backward()
    lr, wd = 0.1, 0.01
    expected_w = (w0 - lr * (w.grad + wd * w0)) * mask
    expected_b = b0 - lr * (b.grad + wd * b0)
    result = train(net, (x, y), epochs=1, lr=lr, momentum=0.0, weight_decay=wd, loss="mse",
                   masks=MaskSet({"weight": mask}), batch_size=None)
    torch.testing.assert_close(net.weight.detach(), expected_w, rtol=0, atol=1e-7)
    torch.testing.assert_close(net.bias.detach(), expected_b, rtol=0, atol=1e-7)
    assert result.steps == 1 and len(result.epoch_losses) == 1
    assert result.epoch_losses[0] == pytest.approx(float(F.mse_loss(x @ w0.T + b0, y)), rel=1e-6)
    assert result.final_accuracy is None


@pytest.mark.parametrize("hooks", [True, False])
@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_pruned_weights_stay_exactly_zero_during_and_after(hooks, optimizer):
    net, masks = _pruned_mlp(hooks=hooks)
    seen = []

    def check(module, args):
        name = "fc1.weight" if module is net.fc1 else "fc2.weight"
        seen.append(float(module.weight.detach()[~masks[name]].abs().max()))

    handles = [net.fc1.register_forward_pre_hook(check), net.fc2.register_forward_pre_hook(check)]
    # Weight decay and momentum would move a pruned weight if gradients alone were masked.
    train(net, _data(), epochs=3, lr=0.05, optimizer=optimizer, weight_decay=0.1, batch_size=16, masks=None if hooks else masks)
    for h in handles:
        h.remove()
    assert len(seen) > 10 and max(seen) == 0.0
    for name, mask in masks.items():
        assert torch.all(net.get_submodule(name.split(".")[0]).weight.detach()[~mask] == 0)
    assert all(p.grad is None for p in net.parameters())


def test_training_is_deterministic_given_seed_and_differs_across_seeds():
    data = _data()
    runs = []
    for seed in (3, 3, 4):
        net, _ = _pruned_mlp()
        runs.append((train(net, data, epochs=2, lr=0.05, seed=seed, batch_size=8), net.state_dict()))
    (r1, s1), (r2, s2), (r3, s3) = runs
    assert r1 == r2 and all(torch.equal(s1[k], s2[k]) for k in s1)
    assert r1.epoch_losses != r3.epoch_losses


def test_dropout_is_seeded_and_mode_is_restored():
    x, y = _data()
    base = torch.nn.Sequential(torch.nn.Linear(5, 16), torch.nn.ReLU(), torch.nn.Dropout(0.5), torch.nn.Linear(16, 3))
    nets = [copy.deepcopy(base) for _ in range(2)]
    for net in nets:
        net.eval()
        train(net, (x, y), epochs=2, lr=0.05, seed=1, batch_size=16)
        assert not net.training
    assert all(torch.equal(a, b) for a, b in zip(nets[0].state_dict().values(), nets[1].state_dict().values()))


def test_training_reduces_the_loss_and_final_loss_equals_evaluate():
    x, _ = _data(n=96)
    data = (x, x[:, :3].argmax(1))  # learnable labels
    net, _ = _pruned_mlp()
    before, _ = evaluate(net, data)
    result = train(net, data, epochs=30, lr=0.05, batch_size=32)
    assert result.final_loss < 0.8 * before
    loss_value, accuracy = evaluate(net, data)
    assert result.final_loss == loss_value and result.final_accuracy == accuracy


def test_evaluate_matches_manual_loss_and_accuracy():
    x, y = _data(n=50)
    net = torch.nn.Linear(5, 3)
    with torch.no_grad():
        out = net(x)
    loss_value, accuracy = evaluate(net, (x, y), batch_size=7)
    assert loss_value == pytest.approx(float(F.cross_entropy(out, y)), rel=1e-6)
    assert accuracy == pytest.approx(float((out.argmax(1) == y).float().mean()))
    mse_value, mse_accuracy = evaluate(net, (x, y), loss="mse")
    assert mse_value == pytest.approx(float(F.mse_loss(out, F.one_hot(y, 3).float())), rel=1e-6)
    assert mse_accuracy == accuracy


def test_dataset_input_and_adam_work():
    x, y = _data()
    dataset = torch.utils.data.TensorDataset(x, y)
    net, _ = _pruned_mlp()
    result = train(net, dataset, epochs=2, lr=0.01, optimizer="adam", batch_size=10)
    assert result.steps == 2 * 5


@pytest.mark.parametrize(
    "kwargs, message",
    [({"epochs": 0}, "epochs"), ({"lr": -1.0}, "lr"), ({"optimizer": "rmsprop"}, "optimizer"),
     ({"loss": "hinge"}, "loss"), ({"batch_size": 0}, "batch_size"), ({"weight_decay": -0.1}, "weight_decay")],
)
def test_bad_arguments_are_rejected_before_any_work(kwargs, message):
    net, _ = _pruned_mlp()
    before = copy.deepcopy(net.state_dict())
    with pytest.raises(ValueError, match=message):
        train(net, _data(), **kwargs)
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())


def test_loss_function_one_hot_mse():
    assert float(loss_function("mse")(torch.tensor([[1.0, 0.0]]), torch.tensor([0]))) == 0.0


def test_a_train_config_value_and_loose_keywords_train_the_same():
    from prune_landscape.training import TrainConfig

    x, y = _data()
    config = TrainConfig(epochs=2, lr=0.05, optimizer="adam", batch_size=16, weight_decay=1e-3)
    results = []
    for call in (lambda net: train(net, (x, y), config, seed=4),
                 lambda net: train(net, (x, y), epochs=2, lr=0.05, optimizer="adam", batch_size=16, weight_decay=1e-3,
                                   seed=4),
                 lambda net: train(net, (x, y), TrainConfig(epochs=2, optimizer="adam", weight_decay=1e-3), lr=0.05,
                                   batch_size=16, seed=4)):  # keywords override the value's fields
        net, _ = _pruned_mlp(seed=2)
        results.append((call(net), [p.detach().clone() for p in net.parameters()]))
    (first, weights), others = results[0], results[1:]
    assert first.steps == 2 * 3  # 48 samples in batches of 16, two epochs
    for result, other_weights in others:
        assert result == first and all(torch.equal(a, b) for a, b in zip(weights, other_weights))
    with pytest.raises(TypeError, match=r"train\(\) got an unexpected keyword argument 'epoch'; expected one of \['epochs'"):
        train(_pruned_mlp()[0], (x, y), epoch=3)
    with pytest.raises(ValueError, match="optimizer must be one of"):
        TrainConfig(optimizer="rmsprop")


def test_training_a_masked_weight_norm_head_keeps_its_zeros():
    """weight_norm holds the head as g and v (no single trainable tensor): the mask parametrization at the end of
    the chain enforces the mask, and training runs instead of failing on a missing ``original``."""
    from torch.nn.utils.parametrizations import weight_norm

    torch.manual_seed(0)
    net = models.mlp([4, 6, 3])
    weight_norm(net.fc2)
    mask = torch.rand(3, 6) > 0.5
    MaskSet({"fc2.weight": mask, "fc1.weight": torch.rand(6, 4) > 0.5}).apply_to(net)
    before = net.fc2.parametrizations.weight.original1.detach().clone()
    x, y = torch.randn(32, 4), torch.randint(0, 3, (32,))
    result = train(net, (x, y), epochs=3, lr=0.1)
    assert result.epoch_losses[-1] < result.epoch_losses[0]
    assert not net.fc2.weight[~mask].any() and net.fc2.weight[mask].ne(0).all()
    assert not torch.equal(net.fc2.parametrizations.weight.original1, before)  # v was trained
    assert not net.fc1.weight[~MaskSet.from_module(net)["fc1.weight"]].any()
