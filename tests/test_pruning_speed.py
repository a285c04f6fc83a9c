"""The fast paths keep the exact results: linear-time top-k, SynFlow's precision and twin cache, progress."""

import pytest
import torch
from torch import nn
from torch.func import functional_call

from prune_landscape import models
from prune_landscape.progress import Progress, logger_callback, progress_enabled, report
from prune_landscape.pruning import ntk_sap_scores, prune, synflow_scores, topk_mask
from prune_landscape.pruning.workspace import working_copy


def test_topk_mask_equals_a_stable_descending_sort_with_ties():
    g = torch.Generator().manual_seed(0)
    for trial in range(200):
        n = int(torch.randint(1, 120, (1,), generator=g))
        # Half the trials draw from 4 values so ties straddle the threshold.
        scores = torch.randint(0, 4, (n,), generator=g).double() if trial % 2 else torch.randn(n, generator=g)
        if trial % 5 == 0:  # infinite scores tie with the values the selection uses to push entries aside
            scores[torch.rand(n, generator=g) < 0.3] = float("inf") if trial % 10 else float("-inf")
        available = torch.rand(n, generator=g) < 0.7
        candidates = torch.nonzero(available, as_tuple=True)[0]
        k = int(torch.randint(0, candidates.numel() + 1, (1,), generator=g))
        oracle = torch.zeros(n, dtype=torch.bool)
        if k:
            oracle[candidates[torch.sort(scores[candidates], descending=True, stable=True).indices[:k]]] = True
        got = topk_mask(scores, k, available)
        assert torch.equal(got, oracle), f"trial {trial}: k={k}, expected {oracle.nonzero().flatten().tolist()}, got {got.nonzero().flatten().tolist()}"


def _float64_synflow_oracle(net, masks, sample_shape):
    """|theta * dR/dtheta| through the real modules in float64, written independently of synflow.py."""
    ref = working_copy(net).double().eval()
    state = {k: (v.abs() if v.is_floating_point() else v) for k, v in ref.state_dict().items()}
    weights = {n: state[n] * masks[n] for n in masks}
    for w in weights.values():
        w.requires_grad_(True)
    flow = functional_call(ref, {**state, **weights}, (torch.ones(1, *sample_shape, dtype=torch.float64),)).sum()
    grads = torch.autograd.grad(flow, list(weights.values()))
    return {n: (g * state[n]).abs() * masks[n] for n, g in zip(masks, grads)}


def test_synflow_float32_default_matches_float64_oracle_on_resnet20():
    torch.manual_seed(0)
    net = models.resnet20()
    with torch.no_grad():  # non-trivial BN buffers so |running_mean| and |running_var| matter
        for m in net.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 2.0)
    masks = {n: torch.rand(p.shape) < 0.5 for n, p in net.named_parameters() if p.dim() > 1}
    work = working_copy(net)
    scores = synflow_scores(work, masks, (torch.zeros(1, 3, 32, 32), None), None)
    oracle = _float64_synflow_oracle(net, masks, (3, 32, 32))
    for n in masks:
        assert scores[n].dtype == torch.float32
        torch.testing.assert_close(scores[n].double(), oracle[n], rtol=2e-4, atol=1e-6 * float(oracle[n].max()))
        assert torch.all(scores[n][~masks[n]] == 0)
    # The model handed in is left untouched (prune() relies on it to skip the restore).
    for (name, a), b in zip(work.state_dict().items(), working_copy(net).state_dict().values()):
        assert torch.equal(a, b), name
    # A second call reuses the twin and gives the same scores; a changed model is re-read.
    again = synflow_scores(work, masks, (torch.zeros(1, 3, 32, 32), None), None)
    assert all(torch.equal(again[n], scores[n]) for n in masks)
    with torch.no_grad():
        work.fc.weight.mul_(2.0)
    doubled = synflow_scores(work, masks, (torch.zeros(1, 3, 32, 32), None), None)
    torch.testing.assert_close(doubled["fc.weight"], 2 * scores["fc.weight"], rtol=1e-5, atol=0)


def test_synflow_falls_back_to_float64_when_float32_overflows():
    net = models.mlp([8] * 12, activation="linear", bias=False)
    with torch.no_grad():
        for p in net.parameters():
            p.fill_(1e4)  # 11 layers: R = 8**12 paths * 1e44 overflows float32 (max 3.4e38), fine in float64
    masks = {n: torch.ones_like(p, dtype=torch.bool) for n, p in net.named_parameters()}
    seen = []
    with Progress(1, "t", enabled=False, callback=seen.append) as bar:
        scores = synflow_scores(working_copy(net), masks, (torch.zeros(1, 8), None), None)
        bar.step()
    assert seen[0]["synflow_float64"] == 1.0 and seen[0]["synflow_flow"] == pytest.approx(8**12 * 1e44)
    expected = 8**10 * 1e44  # each of a layer's 64 weights lies on 8**12 / 64 paths of weight 1e44
    for n in masks:
        assert scores[n].dtype == torch.float64
        torch.testing.assert_close(scores[n], torch.full((8, 8), expected, dtype=torch.float64), rtol=1e-12, atol=0)
    with pytest.raises(ValueError, match="not usable in float32"):
        synflow_scores(working_copy(net), masks, (torch.zeros(1, 8), None), None, double=False)
    with pytest.raises(ValueError, match="double must be"):
        synflow_scores(working_copy(net), masks, (torch.zeros(1, 8), None), None, double="yes")


def test_prune_reports_every_iteration_to_the_callback_and_stays_silent(capsys):
    net = models.mlp([6, 8, 3])
    rows = []
    masks = prune(net, "synflow", 0.9, input_shape=(6,), iterations=4, callback=rows.append, progress=None)
    assert [r["iteration"] for r in rows] == [1, 2, 3, 4] and all(r["iterations"] == 4 for r in rows)
    assert rows[-1]["kept"] == masks.num_kept == round(0.1 * 72)
    assert [r["kept"] for r in rows] == [72 - int((1 - 0.1 ** (t / 4)) * 72) for t in range(1, 4)] + [7]
    assert all(r["synflow_flow"] > 0 and r["elapsed_s"] >= 0 for r in rows)
    captured = capsys.readouterr()
    assert captured.err == "" and captured.out == ""  # auto: no bar under pytest


def test_progress_bar_shows_an_eta_when_asked(capsys):
    with Progress(3, "synflow", enabled=True, delay=0.0) as bar:
        for t in range(3):
            report(extra=1.0)
            bar.step(density=0.5 ** (t + 1))
    err = capsys.readouterr().err
    assert "synflow" in err and "3/3" in err and "density=0.125" in err


def test_progress_flag_and_logger_adapter():
    assert progress_enabled(False) is False and progress_enabled(True) is True
    assert progress_enabled(None) is False  # pytest sets PYTEST_CURRENT_TEST
    with pytest.raises(ValueError, match="progress must be None"):
        progress_enabled("yes")
    with pytest.raises(ValueError, match="log_metrics"):
        logger_callback(object())
    with pytest.raises(ValueError, match="progress must be None"):
        prune(models.mlp([4, 3]), "magnitude", 0.5, progress="loud")


def test_synflow_warns_when_the_flow_is_zero():
    net = models.mlp([4, 3, 2], activation="linear", bias=False)
    with torch.no_grad():
        net.fc2.weight.zero_()  # a zero-initialised head (torchvision ViT's) blocks every path
    masks = {n: torch.ones_like(p, dtype=torch.bool) for n, p in net.named_parameters()}
    with pytest.warns(RuntimeWarning, match="flow R is exactly 0"):
        scores = synflow_scores(working_copy(net), masks, (torch.zeros(1, 4), None), None)
    assert all(float(s.abs().sum()) == 0.0 for s in scores.values())


def test_ntk_sap_moves_the_bar_within_an_iteration(capsys):
    net = models.mlp([6, 8, 3])
    prune(net, "ntk_sap", 0.5, input_shape=(6,), prune_samples=8, batch_size=2, iterations=2, repeats=2, progress=True)
    err = capsys.readouterr().err  # the bar appears after 1 s; a fast run may print nothing
    assert err == "" or "2/2" in err, err[-300:]
    seen = []
    with Progress(2, "ntk", enabled=True, delay=0.0) as bar:
        from prune_landscape.progress import advance

        advance(1, 4)
        seen.append(bar._bar.n)
        bar.step()
        seen.append(bar._bar.n)
    assert seen == [0.25, 1]


def test_ntk_sap_eval_batchnorm_normalises_with_reset_statistics():
    torch.manual_seed(2)
    net = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.ReLU(), nn.Linear(4, 2)).double()
    with torch.no_grad():
        net[1].running_mean.fill_(5.0)  # the model's own statistics belong to other weights: ignored
        net[1].running_var.fill_(9.0)
    state = {k: v.clone() for k, v in net.state_dict().items()}
    masks = {n: torch.ones_like(p, dtype=torch.bool) for n, p in net.named_parameters() if p.dim() > 1}
    shape = (8, 3)
    scores = ntk_sap_scores(
        working_copy(net), masks, (torch.zeros(shape), torch.zeros(shape[0])), torch.Generator().manual_seed(3),
        repeats=1, init_fn=lambda model, generator: model.load_state_dict(state), batchnorm="eval",
    )
    g = torch.Generator().manual_seed(3)
    z = torch.randn(shape, generator=g, dtype=torch.float64)
    xi = {n: torch.randn(m.shape, generator=g, dtype=torch.float64) for n, m in masks.items()}
    w1, b1, w2, b2 = (net.get_parameter(n).detach() for n in ("0.weight", "0.bias", "3.weight", "3.bias"))

    def forward(a, b):  # reset statistics: mean 0, variance 1
        return torch.relu((z @ a.T + b1) / (1.0 + 1e-5) ** 0.5) @ b.T + b2

    m1 = torch.ones_like(w1, requires_grad=True)
    m2 = torch.ones_like(w2, requires_grad=True)
    loss = ((forward(w1 * m1, w2 * m2) - forward((w1 + 0.01 * xi["0.weight"]) * m1, (w2 + 0.01 * xi["3.weight"]) * m2)) ** 2).sum()
    g1, g2 = torch.autograd.grad(loss, [m1, m2])
    torch.testing.assert_close(scores["0.weight"], g1.abs(), rtol=1e-10, atol=1e-20)
    torch.testing.assert_close(scores["3.weight"], g2.abs(), rtol=1e-10, atol=1e-20)
    with pytest.raises(ValueError, match="batchnorm must be"):
        prune(models.mlp([3, 4, 2]), "ntk_sap", 0.5, input_shape=(3,), batchnorm="train")
