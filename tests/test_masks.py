"""MaskSet: reading from every pruning mechanism, applying, persistence, densities, bad input."""

import pytest
import torch
from torch import nn
from torch.nn.utils import parametrize, prune

from prune_landscape import MaskSet, models
from prune_landscape.masks import make_pruning_permanent, prunable_parameters
from prune_landscape.modelcopy import copy_model


def _hand_mask(shape, kept_flat):
    mask = torch.zeros(shape, dtype=torch.bool).view(-1)
    mask[list(kept_flat)] = True
    return mask.view(shape)


def test_reads_torch_prune_buffers_and_stacked_methods():
    net = models.mlp([4, 3, 2])
    first = _hand_mask((3, 4), [0, 1, 2, 3, 5, 7])
    prune.custom_from_mask(net.fc1, "weight", first)
    second = _hand_mask((3, 4), [0, 1, 4, 5, 6, 7, 8])
    prune.custom_from_mask(net.fc1, "weight", second)  # stacked: PruningContainer combines them
    masks = MaskSet.from_module(net)
    assert set(masks) == {"fc1.weight"}
    assert torch.equal(masks["fc1.weight"], first & second)
    assert masks.num_kept == 4 and masks.num_total == 12
    assert not masks.inferred


class _MaskParametrization(nn.Module):
    def __init__(self, mask):
        super().__init__()
        self.register_buffer("mask", mask)

    def forward(self, weight):
        return weight * self.mask


def test_reads_parametrization_masks():
    net = models.mlp([4, 3, 2])
    mask = _hand_mask((2, 3), [0, 4])
    parametrize.register_parametrization(net.fc2, "weight", _MaskParametrization(mask.float()))
    masks = MaskSet.from_module(net)
    assert torch.equal(masks["fc2.weight"], mask)
    assert masks.density == pytest.approx(2 / 6)


def test_permanently_pruned_model_is_inferred_from_zeros():
    net = models.mlp([4, 3, 2])
    prune.l1_unstructured(net.fc1, "weight", amount=5)
    expected = net.fc1.weight_mask.bool().clone()
    prune.remove(net.fc1, "weight")
    masks = MaskSet.from_module(net)
    assert masks.inferred
    assert torch.equal(masks["fc1.weight"], expected)
    assert masks["fc2.weight"].all()
    assert masks.num_kept == 12 - 5 + 6


def test_apply_round_trip_gives_identical_outputs(tmp_path):
    torch.manual_seed(0)
    net = models.mlp([5, 7, 3])
    prune.random_unstructured(net.fc1, "weight", amount=0.6)
    prune.l1_unstructured(net.fc2, "weight", amount=0.5)
    masks = MaskSet.from_module(net)
    fresh = models.mlp([5, 7, 3])
    masks.apply_to(fresh)
    fresh.load_state_dict(net.state_dict())  # the *_orig/*_mask keys fit: the state dict round trips
    x = torch.randn(11, 5)
    assert torch.equal(fresh(x), net(x))
    assert MaskSet.from_module(fresh) == masks

    path = masks.save(tmp_path / "masks.safetensors")
    loaded = MaskSet.load(path, models.mlp([5, 7, 3]))
    assert loaded == masks and loaded.fingerprint() == masks.fingerprint()
    assert MaskSet.from_state_dict(net.state_dict()) == masks


def test_apply_overwrites_existing_mask_and_keeps_parameter_identity():
    net = models.mlp([4, 3, 2])
    MaskSet({"fc1.weight": _hand_mask((3, 4), range(12))}).apply_to(net)
    orig = net.fc1.weight_orig
    optimizer = torch.optim.SGD(net.parameters(), lr=0.1)
    target = _hand_mask((3, 4), [1, 2])
    MaskSet({"fc1.weight": target}).apply_to(net)
    assert net.fc1.weight_orig is orig  # the optimizer's parameter is still the live one
    assert torch.equal(net.fc1.weight != 0, target)
    net(torch.randn(6, 4)).sum().backward()
    assert torch.all(net.fc1.weight_orig.grad[~target] == 0)  # pruned entries get no gradient
    optimizer.step()
    assert torch.equal(MaskSet.from_module(net)["fc1.weight"], target)


def test_densities_per_tensor_layer_and_global():
    masks = MaskSet(
        {
            "a.weight": _hand_mask((2, 2), [0]),
            "a.bias": _hand_mask((2,), [0, 1]),
            "b.weight": _hand_mask((1, 4), [0, 1, 2]),
        }
    )
    assert masks.tensor_densities() == {"a.weight": 0.25, "a.bias": 1.0, "b.weight": 0.75}
    assert masks.layer_densities() == {"a": 0.5, "b": 0.75}
    assert masks.density == pytest.approx(6 / 10)
    assert masks.sparsity == pytest.approx(0.4)


def test_masks_are_copied_not_aliased():
    source = _hand_mask((2, 2), [0, 3])
    masks = MaskSet({"w": source})
    source.fill_(False)
    assert masks["w"].sum() == 2


def test_bad_input_gives_clear_errors(tmp_path):
    net = models.mlp([4, 3, 2])
    with pytest.raises(ValueError, match="dtype torch.bool, got torch.float32"):
        MaskSet({"fc1.weight": torch.ones(3, 4)})
    with pytest.raises(ValueError, match=r"expected shape \(3, 4\).*got \(4, 3\)"):
        MaskSet({"fc1.weight": torch.ones(4, 3, dtype=torch.bool)}).apply_to(net)
    with pytest.raises(ValueError, match="unknown parameter 'fc9.weight'.*fc1.weight"):
        MaskSet({"fc9.weight": torch.ones(3, 4, dtype=torch.bool)}).validate(net)
    path = MaskSet({"fc1.weight": torch.ones(3, 4, dtype=torch.bool)}).save(tmp_path / "m.safetensors")
    with pytest.raises(ValueError, match="expected shape"):
        MaskSet.load(path, models.mlp([5, 3, 2]))
    with pytest.raises(ValueError, match="at least one prunable layer"):
        MaskSet.from_module(nn.Sequential(nn.ReLU()))
    with pytest.raises(FileNotFoundError, match="MaskSet file"):
        MaskSet.load(tmp_path / "missing.safetensors")


def test_for_model_checks_given_masks_or_reads_the_models_own():
    net = models.mlp([3, 4, 2])
    with torch.no_grad():
        net.fc1.weight[0, 0] = 0.0
    own = MaskSet.for_model(net)
    assert own == MaskSet.from_module(net) and not bool(own["fc1.weight"][0, 0])
    given = {"fc1.weight": torch.ones(4, 3, dtype=torch.bool)}
    checked = MaskSet.for_model(net, given)
    assert isinstance(checked, MaskSet) and bool(checked["fc1.weight"].all())
    with pytest.raises(ValueError, match="fc1.weight"):
        MaskSet.for_model(net, {"fc1.weight": torch.ones(3, 3, dtype=torch.bool)})


class _TiedLM(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.tok = torch.nn.Embedding(7, 4)
        self.lm_head = torch.nn.Linear(4, 7, bias=False)
        self.lm_head.weight = self.tok.weight

    def forward(self, ids):
        return self.lm_head(self.tok(ids))


def test_apply_to_keeps_a_tie_and_masks_both_owners(tmp_path):
    from prune_landscape.layers import prunable_parameters

    net = _TiedLM()
    assert prunable_parameters(net) == ["lm_head.weight"] and prunable_parameters(net, prunable="all") == ["lm_head.weight"]
    shared = net.tok.weight
    mask = torch.ones(7, 4, dtype=torch.bool)
    mask[2] = False
    MaskSet({"lm_head.weight": mask}).apply_to(net)
    # One Parameter, held as weight_orig by both owners; both forwards see the zeros.
    assert net.tok.weight_orig is shared and net.lm_head.weight_orig is shared
    assert torch.equal(net.tok.weight[2], torch.zeros(4)) and torch.equal(net.lm_head.weight[2], torch.zeros(4))
    assert len(list(net.parameters())) == 1
    read = MaskSet.from_module(net)
    assert list(read) == ["lm_head.weight"] and torch.equal(read["lm_head.weight"], mask)
    path = read.save(tmp_path / "tied.safetensors")
    assert MaskSet.load(path, _TiedLM()) == read
    fresh = _TiedLM()
    MaskSet.load(path).apply_to(fresh)
    assert fresh.tok.weight_orig is fresh.lm_head.weight_orig


def test_apply_to_a_weight_norm_head_appends_a_mask_parametrization():
    from torch.nn.utils import parametrize
    from torch.nn.utils.parametrizations import weight_norm

    head = weight_norm(torch.nn.Linear(3, 2))
    before = head.weight.detach().clone()
    mask = torch.tensor([[1, 0, 1], [0, 1, 1]], dtype=torch.bool)
    MaskSet({"weight": mask}).apply_to(head)
    assert parametrize.is_parametrized(head, "weight") and len(head.parametrizations.weight) == 2
    assert torch.equal(head.weight.detach(), before * mask)
    assert torch.equal(MaskSet.from_module(head)["weight"], mask)


def test_a_masked_weight_read_without_calling_its_module_stays_fresh_through_training():
    """nn.MultiheadAttention reads ``out_proj.weight`` without calling ``out_proj``: the mask must still
    hold after each optimizer step, and the forward must use the updated weights (oracle: the functional
    attention in float64 with ``orig * mask`` written out by hand)."""
    torch.manual_seed(0)
    mha = nn.MultiheadAttention(6, 2, batch_first=True)
    out_mask = torch.rand(6, 6) > 0.5
    in_mask = torch.rand(18, 6) > 0.3
    MaskSet({"out_proj.weight": out_mask, "in_proj_weight": in_mask}).apply_to(mha)
    optimizer = torch.optim.SGD(mha.parameters(), lr=0.05)
    x = torch.randn(3, 4, 6)
    for _ in range(3):  # the second backward used to fail on the stale out_proj.weight graph
        optimizer.zero_grad()
        mha(x, x, x)[0].square().sum().backward()
        optimizer.step()
    out_orig, in_orig = mha.out_proj.weight_orig.detach(), mha.in_proj_weight_orig.detach()
    assert not torch.equal(out_orig * out_mask, torch.zeros(6, 6))
    got = mha(x, x, x)[0].detach().double()
    want = nn.functional.multi_head_attention_forward(
        x.transpose(0, 1).double(), x.transpose(0, 1).double(), x.transpose(0, 1).double(), 6, 2,
        (in_orig * in_mask).double(), mha.in_proj_bias.detach().double(), None, None, False, 0.0,
        (out_orig * out_mask).double(), mha.out_proj.bias.detach().double(), training=False, need_weights=False,
    )[0].transpose(0, 1)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    assert not mha.out_proj.weight[~out_mask].any()
    (refresh,) = [h for h in mha._forward_pre_hooks.values() if type(h).__name__ == "_RefreshChildMasks"]
    assert refresh.targets == {("out_proj", "weight")}  # never called by MHA: it stays refreshed
    clone = copy_model(mha)  # the parent's refresh hook names its child, so a copy refreshes its own
    clone.out_proj.weight_orig.data.add_(1.0)
    torch.testing.assert_close(clone(x, x, x)[0], nn.functional.multi_head_attention_forward(
        x.transpose(0, 1), x.transpose(0, 1), x.transpose(0, 1), 6, 2, clone.in_proj_weight, clone.in_proj_bias,
        None, None, False, 0.0, clone.out_proj.weight_orig * out_mask, clone.out_proj.bias, training=False,
        need_weights=False)[0].transpose(0, 1))
    make_pruning_permanent(mha)  # folding the masks also drops the refresh hook
    assert not mha._forward_pre_hooks and torch.equal(mha.out_proj.weight, out_orig * out_mask)


def test_the_prunable_set_keyword_is_prunable_and_scope_is_its_deprecated_name():
    net = models.mlp([4, 3, 2])
    with pytest.warns(DeprecationWarning, match=r"prunable_parameters: scope= is deprecated; use prunable="):
        assert prunable_parameters(net, scope="all") == prunable_parameters(net, prunable="all") == ["fc1.weight", "fc2.weight"]
    with pytest.raises(ValueError, match=r"give prunable= only"):
        prunable_parameters(net, prunable="all", scope="all")
    with pytest.raises(TypeError, match=r"unexpected keyword arguments \['scop'\]"):
        prunable_parameters(net, scop="all")
    with pytest.raises(ValueError, match=r"prunable must be 'layers' or 'all', got 'everything'"):
        prunable_parameters(net, prunable="everything")


def test_the_parent_refresh_drops_children_that_are_called():
    """An ordinary layer recomputes its own masked weight when called: after one pass the parent stops
    doing it too (no extra work per forward), and the output still equals orig * mask written out."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(4, 5), nn.ReLU(), nn.Linear(5, 3))
    masks = {"0.weight": torch.rand(5, 4) > 0.5, "2.weight": torch.rand(3, 5) > 0.5}
    MaskSet(masks).apply_to(net)
    (refresh,) = [h for h in net._forward_pre_hooks.values() if type(h).__name__ == "_RefreshChildMasks"]
    assert refresh.targets == {("0", "weight"), ("2", "weight")}
    x = torch.randn(2, 4)
    for _ in range(2):
        net(x)
    assert refresh.targets == set()
    with torch.no_grad():
        net[0].weight_orig.add_(1.0)
    want = torch.relu(x @ (net[0].weight_orig * masks["0.weight"]).T + net[0].bias) @ (
        net[2].weight_orig * masks["2.weight"]).T + net[2].bias
    torch.testing.assert_close(net(x), want)
