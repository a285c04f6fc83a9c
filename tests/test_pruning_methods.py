"""Each method's scores against an independent oracle on tiny nets (float64)."""

import pytest
import torch
from torch import nn
from torch.func import functional_call

from prune_landscape import models
from prune_landscape.pruning import grasp_scores, ntk_sap_scores, prune, snip_scores, synflow_scores, topk_mask
from prune_landscape.pruning.workspace import working_copy


def _tiny(widths=(4, 5, 3), activation="tanh", seed=0):
    torch.manual_seed(seed)
    return models.mlp(list(widths), activation=activation).double()


def _masks(model):
    return {n: torch.ones_like(p, dtype=torch.bool) for n, p in model.named_parameters() if p.dim() > 1}


def _data(n=6, d=4, classes=3, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=g, dtype=torch.float64), torch.randint(0, classes, (n,), generator=g)


def test_magnitude_keeps_every_larger_weight():
    net = _tiny((10, 8, 4), seed=3)
    masks = prune(net, "magnitude", 0.7)
    kept = torch.cat([net.get_parameter(n).detach().abs()[m] for n, m in masks.items()])
    pruned = torch.cat([net.get_parameter(n).detach().abs()[~m] for n, m in masks.items()])
    assert masks.num_kept == round(0.3 * 112) and kept.min() >= pruned.max()


def test_snip_equals_abs_w_times_grad():
    net = _tiny()
    inputs, targets = _data()
    weights = {n: p.detach().clone().requires_grad_(True) for n, p in net.named_parameters() if p.dim() > 1}
    # Oracle: per-batch mean losses (batches of 4 then 2) summed, gradient by plain autograd.
    loss = sum(
        nn.functional.cross_entropy(functional_call(net, weights, (inputs[s],)), targets[s])
        for s in (slice(0, 4), slice(4, 6))
    )
    grads = torch.autograd.grad(loss, list(weights.values()))
    oracle = {n: (w.detach() * g).abs() for (n, w), g in zip(weights.items(), grads)}
    scores = snip_scores(working_copy(net), _masks(net), (inputs, targets), None, batch_size=4)
    for n in oracle:
        torch.testing.assert_close(scores[n], oracle[n], rtol=1e-12, atol=1e-14)
    flat = torch.cat([oracle[n].reshape(-1) for n in oracle])
    expected = topk_mask(flat, round(0.5 * flat.numel()))
    got = prune(net, "snip", 0.5, (inputs, targets), batch_size=4)
    assert torch.equal(torch.cat([got[n].reshape(-1) for n in oracle]), expected)


def test_grasp_hessian_gradient_equals_dense_hessian_times_g():
    net = _tiny((3, 4, 2))
    inputs, targets = _data(6, 3, 2)
    names = [n for n, p in net.named_parameters() if p.dim() > 1]
    shapes = [net.get_parameter(n).shape for n in names]
    theta = torch.cat([net.get_parameter(n).detach().reshape(-1) for n in names])

    def loss_of(flat):
        parts = dict(zip(names, (t.reshape(s) for t, s in zip(flat.split([s.numel() for s in shapes]), shapes))))
        return sum(
            nn.functional.cross_entropy(functional_call(net, parts, (inputs[s],)) / 200.0, targets[s])
            for s in (slice(0, 3), slice(3, 6))
        )

    hessian = torch.autograd.functional.hessian(loss_of, theta)
    gradient = torch.autograd.functional.jacobian(loss_of, theta)
    oracle = theta * (hessian @ gradient)
    scores = grasp_scores(working_copy(net), _masks(net), (inputs, targets), None, batch_size=3)
    got = torch.cat([scores[n].reshape(-1) for n in names])
    torch.testing.assert_close(got, oracle, rtol=1e-9, atol=1e-18)
    # The lowest theta * Hg are pruned (highest kept).
    mask = prune(net, "grasp", 0.5, (inputs, targets), batch_size=3)
    flat_mask = torch.cat([mask[n].reshape(-1) for n in names])
    assert torch.equal(flat_mask, topk_mask(oracle, round(0.5 * oracle.numel())))
    assert oracle[flat_mask].min() >= oracle[~flat_mask].max()


def test_synflow_closed_form_two_layer_linear():
    net = models.mlp([5, 4, 3], activation="linear", bias=False)
    w1, w2 = net.fc1.weight.detach().double(), net.fc2.weight.detach().double()
    # R = 1^T |W2| |W1| 1: dR/dW1[i, j] = sum_k |W2[k, i]|, dR/dW2[k, i] = sum_j |W1[i, j]|.
    oracle1 = w1.abs() * w2.abs().sum(0)[:, None]
    oracle2 = w2.abs() * w1.abs().sum(1)[None, :]
    scores = synflow_scores(working_copy(net), _masks(net), (torch.zeros(1, 5), None), None, double=True)
    torch.testing.assert_close(scores["fc1.weight"], oracle1, rtol=1e-12, atol=0)
    torch.testing.assert_close(scores["fc2.weight"], oracle2, rtol=1e-12, atol=0)
    # With a mask, pruned entries carry no flow: W1[0, :] pruned removes hidden unit 0 from W2's scores.
    masks = _masks(net)
    masks["fc1.weight"][0] = False
    scores = synflow_scores(working_copy(net), masks, (torch.zeros(1, 5), None), None, double=True)
    assert torch.all(scores["fc2.weight"][:, 0] == 0) and torch.all(scores["fc1.weight"][0] == 0)


def test_synflow_uses_absolute_batchnorm_buffers_and_float64():
    net = nn.Sequential(nn.Linear(2, 2, bias=False), nn.BatchNorm1d(2), nn.Linear(2, 1, bias=False))
    with torch.no_grad():
        net[0].weight.copy_(torch.tensor([[1.0, -2.0], [3.0, 4.0]]))
        net[1].running_mean.copy_(torch.tensor([-1.0, 2.0]))
        net[1].running_var.copy_(torch.tensor([4.0, 9.0]))
        net[1].weight.copy_(torch.tensor([-1.0, 2.0]))
        net[2].weight.copy_(torch.tensor([[2.0, -1.0]]))
    scores = synflow_scores(working_copy(net), _masks(net), (torch.zeros(1, 2), None), None, double=True)
    # eval BN with |buffers|: y_i = |g_i| (h_i - |mu_i|) / sqrt(|var_i| + eps); dR/dW1[i, j] = |W2_i| |g_i| / sd_i.
    sd = torch.sqrt(torch.tensor([4.0, 9.0], dtype=torch.float64) + 1e-5)
    factor = torch.tensor([2.0, 1.0], dtype=torch.float64) * torch.tensor([1.0, 2.0], dtype=torch.float64) / sd
    oracle = torch.tensor([[1.0, 2.0], [3.0, 4.0]], dtype=torch.float64) * factor[:, None]
    assert scores["0.weight"].dtype == torch.float64
    torch.testing.assert_close(scores["0.weight"], oracle, rtol=1e-12, atol=0)


def _fixed_init(reference):
    state = {k: v.clone() for k, v in reference.state_dict().items()}

    def init_fn(model, generator):
        model.load_state_dict(state)

    return init_fn


def test_ntk_sap_matches_direct_autograd_and_finite_differences():
    net = _tiny((4, 5, 3))
    masks = _masks(net)
    masks["fc1.weight"][0, 1] = False  # an already-pruned entry must score 0
    init_fn = _fixed_init(net)
    shape = (6, 4)
    scores = ntk_sap_scores(
        working_copy(net), masks, (torch.zeros(shape), torch.zeros(shape[0])), torch.Generator().manual_seed(7),
        repeats=1, eps=0.01, init_fn=init_fn,
    )
    # Oracle: replay the documented draw order (init draws nothing here, then z, then xi per tensor).
    g = torch.Generator().manual_seed(7)
    z = torch.randn(shape, generator=g, dtype=torch.float64)
    xi = {n: torch.randn(m.shape, generator=g, dtype=torch.float64) for n, m in masks.items()}
    theta = {n: net.get_parameter(n).detach() for n in masks}

    def objective(soft):
        clean = functional_call(net, {n: theta[n] * soft[n] for n in masks}, (z,))
        noisy = functional_call(net, {n: (theta[n] + 0.01 * xi[n]) * soft[n] for n in masks}, (z,))
        return ((clean - noisy) ** 2).sum(dim=1).sum()

    soft = {n: m.double().requires_grad_(True) for n, m in masks.items()}
    grads = torch.autograd.grad(objective(soft), list(soft.values()))
    for (n, m), grad in zip(masks.items(), grads):
        torch.testing.assert_close(scores[n], grad.abs() * m, rtol=1e-10, atol=1e-20)
    assert scores["fc1.weight"][0, 1] == 0
    # Central finite difference on two mask entries.
    for name, index in (("fc1.weight", (2, 3)), ("fc2.weight", (1, 4))):
        h = 1e-6
        plus = {n: m.double() for n, m in masks.items()}
        minus = {n: m.double() for n, m in masks.items()}
        plus[name][index] += h
        minus[name][index] -= h
        fd = (objective(plus) - objective(minus)) / (2 * h)
        assert abs(float(fd.detach())) == pytest.approx(float(scores[name][index]), rel=1e-5)


def test_ntk_sap_batchnorm_uses_fresh_batch_statistics_in_eval_mode():
    torch.manual_seed(2)
    net = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.ReLU(), nn.Linear(4, 2)).double()
    with torch.no_grad():
        net[1].running_mean.fill_(5.0)  # stale statistics must be ignored
    masks = _masks(net)
    shape = (8, 3)
    scores = ntk_sap_scores(
        working_copy(net), masks, (torch.zeros(shape), torch.zeros(shape[0])), torch.Generator().manual_seed(3),
        repeats=1, init_fn=_fixed_init(net),
    )
    g = torch.Generator().manual_seed(3)
    z = torch.randn(shape, generator=g, dtype=torch.float64)
    xi = {n: torch.randn(m.shape, generator=g, dtype=torch.float64) for n, m in masks.items()}
    w1, b1, w2, b2 = (net.get_parameter(n).detach() for n in ("0.weight", "0.bias", "3.weight", "3.bias"))
    hidden = z @ w1.T + b1
    mean, var = hidden.mean(0), hidden.var(0, unbiased=True)  # momentum 1: the batch's own statistics

    def forward(a, b):
        h = (z @ a.T + b1 - mean) / torch.sqrt(var + 1e-5)
        return torch.relu(h) @ b.T + b2

    m1 = torch.ones_like(w1, requires_grad=True)
    m2 = torch.ones_like(w2, requires_grad=True)
    loss = ((forward(w1 * m1, w2 * m2) - forward((w1 + 0.01 * xi["0.weight"]) * m1, (w2 + 0.01 * xi["3.weight"]) * m2)) ** 2).sum()
    g1, g2 = torch.autograd.grad(loss, [m1, m2])
    torch.testing.assert_close(scores["0.weight"], g1.abs(), rtol=1e-10, atol=1e-20)
    torch.testing.assert_close(scores["3.weight"], g2.abs(), rtol=1e-10, atol=1e-20)


def test_ntk_sap_reinitialises_before_every_batch():
    # Two batches with the default re-initialisation: the score equals the sum over two independent
    # single-batch draws replayed by hand (init draws, then z, then xi, per batch).
    net = _tiny((4, 3, 2))
    masks = _masks(net)
    work = working_copy(net)
    scores = ntk_sap_scores(work, masks, (torch.zeros(4, 4), torch.zeros(4)), torch.Generator().manual_seed(5), batch_size=2, repeats=1)
    g = torch.Generator().manual_seed(5)
    replica = working_copy(net)
    total = {n: torch.zeros_like(m, dtype=torch.float64) for n, m in masks.items()}
    for _ in range(2):
        replica.init_weights(g)
        z = torch.randn(2, 4, generator=g, dtype=torch.float64)
        xi = {n: torch.randn(m.shape, generator=g, dtype=torch.float64) for n, m in masks.items()}
        theta = {n: replica.get_parameter(n).detach() for n in masks}
        soft = {n: m.double().requires_grad_(True) for n, m in masks.items()}
        out = functional_call(replica, {n: theta[n] * soft[n] for n in masks}, (z,))
        out2 = functional_call(replica, {n: (theta[n] + 0.01 * xi[n]) * soft[n] for n in masks}, (z,))
        for n, gr in zip(masks, torch.autograd.grad(((out - out2) ** 2).sum(), list(soft.values()))):
            total[n] += gr
    for n in masks:
        torch.testing.assert_close(scores[n], total[n].abs(), rtol=1e-10, atol=1e-20)
