"""Structure of pruned networks on hand-built cases whose answers are worked out by hand."""

import pytest
import torch
from torch import nn
from torch.nn.utils import prune

from prune_landscape import MaskSet, analyze_structure, models, prunable_parameters


def _ones(shape):
    return torch.ones(shape, dtype=torch.bool)


def test_resnet20_prunable_set_is_22_tensors_270896_weights_in_forward_order():
    net = models.resnet20()
    names = prunable_parameters(net)
    assert len(names) == 22
    assert sum(net.get_parameter(n).numel() for n in names) == 270_896
    structure = analyze_structure(net, torch.zeros(1, 3, 32, 32))
    assert [layer.name for layer in structure.layers] == names  # registration order is forward order here
    assert names[0] == "conv.weight" and names[-1] == "fc.weight"
    assert names[9] == "blocks.3.shortcut.0.weight" and names[16] == "blocks.6.shortcut.0.weight"
    assert structure.final_layer == "fc.weight" and structure.final_layer_dense
    assert structure.fan_in == (64,) * 10 and structure.total_dead_units == 0


def test_mlp_with_first_layer_fully_pruned_collapses_everything_downstream():
    net = models.mlp([4, 5, 6, 3])
    masks = MaskSet({"fc1.weight": torch.zeros(5, 4, dtype=torch.bool)})
    structure = analyze_structure(net, masks=masks)
    assert structure.collapsed_layers == ("fc1.weight", "fc2.weight", "fc3.weight")
    assert structure.dead_units == {"fc1.weight": 5, "fc2.weight": 6, "fc3.weight": 3}
    assert structure.fan_in == (0, 0, 0) and not structure.connected
    assert not structure.final_layer_dense


def test_hand_worked_dead_units_fan_in_and_density():
    # fc1 (3 hidden x 2 inputs): unit 2 has no input -> dead. fc2 (2 hidden x 3): unit 1 has no output
    # path because fc3 ignores it. fc3 (2 outputs x 2): output 0 sees unit 0, output 1 sees units 0, 1.
    net = models.mlp([2, 3, 2, 2])
    masks = MaskSet(
        {
            "fc1.weight": torch.tensor([[1, 1], [0, 1], [0, 0]], dtype=torch.bool),
            "fc2.weight": torch.tensor([[1, 0, 1], [0, 1, 0]], dtype=torch.bool),
            "fc3.weight": torch.tensor([[1, 0], [1, 1]], dtype=torch.bool),
        }
    )
    s = analyze_structure(net, masks=masks)
    # fc2 unit 1 only reads fc1 unit 1 (alive from input) and feeds output 1 -> alive.
    assert s.layer("fc1").alive.tolist() == [True, True, False]
    assert s.layer("fc2").alive.tolist() == [True, True]
    assert s.fan_in == (1, 2) and s.last_hidden_width == 2
    assert not s.final_layer_dense
    assert (s.fan_in_min, s.fan_in_median, s.fan_in_max) == (1, 1.5, 2)
    assert s.final_layer_density == 0.75
    assert s.num_kept == 3 + 3 + 3 and s.num_total == 6 + 6 + 4

    # Remove output 1's only link to unit 1: unit 1 of fc2 now reaches no output -> dead,
    # and fc1 unit 1 (which fed only it) also dies.
    masks2 = MaskSet({**masks.to_dict(), "fc3.weight": torch.tensor([[1, 0], [1, 0]], dtype=torch.bool)})
    s2 = analyze_structure(net, masks=masks2)
    assert s2.layer("fc2").alive.tolist() == [True, False]
    assert s2.layer("fc1").alive.tolist() == [True, False, False]
    assert s2.fan_in == (1, 1) and s2.final_layer_dense  # every output sees every effective unit
    assert s2.dead_units["fc1.weight"] == 2 and s2.collapsed_layers == ()


def test_classifier_with_one_output_cut_off_reports_fan_in_zero():
    net = models.mlp([3, 4, 3])
    fc2 = torch.ones(3, 4, dtype=torch.bool)
    fc2[1] = False
    s = analyze_structure(net, masks=MaskSet({"fc2.weight": fc2}))
    assert s.fan_in == (4, 0, 4)
    assert s.fan_in_min == 0 and not s.final_layer_dense
    assert s.dead_units["fc2.weight"] == 1 and s.connected


def test_resnet20_block_conv_pruned_to_zero_stays_connected_through_identity_shortcut():
    net = models.resnet20()
    masks = MaskSet({"blocks.1.conv1.weight": torch.zeros(16, 16, 3, 3, dtype=torch.bool)})
    s = analyze_structure(net, torch.zeros(2, 3, 32, 32), masks)
    # The branch dies (conv1 has no input path, conv2 then has none either) ...
    assert s.collapsed_layers == ("blocks.1.conv1.weight", "blocks.1.conv2.weight")
    # ... but every unit after the block is alive through the identity shortcut.
    for layer in s.layers[5:]:
        assert layer.alive_units == layer.units, layer.name
    assert s.final_layer_dense and s.fan_in == (64,) * 10 and s.connected


def test_downsampling_block_with_both_paths_cut_disconnects_the_network():
    net = models.resnet20()
    masks = MaskSet(
        {
            "blocks.3.conv1.weight": torch.zeros(32, 16, 3, 3, dtype=torch.bool),
            "blocks.3.shortcut.0.weight": torch.zeros(32, 16, 1, 1, dtype=torch.bool),
        }
    )
    s = analyze_structure(net, torch.zeros(1, 3, 32, 32), masks)
    assert not s.connected and s.fan_in == (0,) * 10
    assert "fc.weight" in s.collapsed_layers
    # Units before the cut have forward paths but no path to the output: dead.
    assert s.layer("conv").alive_units == 0


def test_conv_units_and_flattened_final_fan_in_in_lenet():
    net = models.lenet(image_size=8)
    conv2 = torch.ones(16, 6, 5, 5, dtype=torch.bool)
    conv2[3] = False  # channel 3 of conv2 has no input: its 2x2=4 flattened features are dead
    s = analyze_structure(net, torch.zeros(1, 1, 8, 8), MaskSet({"conv2.weight": conv2}))
    assert s.layer("conv2").alive_units == 15
    assert s.last_hidden_units == 84 and s.final_layer == "fc3.weight"
    fc1 = s.layer("fc1")
    assert fc1.units == 120 and fc1.alive_units == 120  # every fc1 unit still reads other features


def test_sigmoid_and_maxpool_do_not_invent_or_hide_paths():
    # sigmoid(0) = 0.5 would make a unit with no inputs look alive; max-pool would hide non-max units.
    net = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.Sigmoid(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(2 * 2 * 2, 2))
    conv = torch.ones(2, 1, 3, 3, dtype=torch.bool)
    conv[1] = False
    s = analyze_structure(net, torch.zeros(1, 1, 4, 4), MaskSet({"0.weight": conv}))
    assert s.layers[0].alive.tolist() == [True, False]
    assert s.last_hidden_width == 4 and s.fan_in == (4, 4)


def test_model_state_is_left_untouched():
    net = models.resnet20()
    prune.random_unstructured(net.fc, "weight", amount=0.5)
    net.train()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    weight_before = net.fc.weight.clone()
    analyze_structure(net, torch.zeros(1, 3, 32, 32))
    assert net.training and all(m.training for m in net.modules())
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())
    assert torch.equal(net.fc.weight, weight_before) and net.fc.weight.dtype == torch.float32
    assert all(p.grad is None for p in net.parameters())


def test_reads_hook_masks_by_default_and_reports_inferred():
    net = models.mlp([3, 4, 2])
    prune.custom_from_mask(net.fc2, "weight", torch.tensor([[1, 1, 0, 0], [0, 0, 1, 1]], dtype=torch.bool))
    s = analyze_structure(net)
    assert s.fan_in == (2, 2) and not s.final_layer_dense and not s.inferred
    prune.remove(net.fc2, "weight")
    assert analyze_structure(net).inferred


def test_table_and_dict_carry_the_headline():
    net = models.mlp([3, 4, 2])
    s = analyze_structure(net, masks=MaskSet({"fc2.weight": torch.tensor([[1, 1, 0, 0], [1, 1, 1, 1]], dtype=torch.bool)}))
    table = s.table()
    assert "final layer fc2.weight: SPARSE" in table and "min/median/max 2/3/4" in table
    d = s.to_dict()
    assert d["final_layer"]["fan_in"] == {"min": 2, "median": 3.0, "max": 4}
    assert d["final_layer"]["dense"] is False and d["layers"][1]["kept"] == 6


def test_bad_input_errors():
    with pytest.raises(ValueError, match="at least one prunable layer"):
        analyze_structure(nn.Sequential(nn.ReLU()), torch.zeros(1, 3))
    with pytest.raises(ValueError, match="needs an example_input"):
        analyze_structure(models.resnet20())
    with pytest.raises(ValueError, match="expected shape"):
        analyze_structure(models.mlp([3, 4, 2]), masks={"fc1.weight": _ones((3, 4))})
    with pytest.raises(ValueError, match="final_layer 'nope'"):
        analyze_structure(models.mlp([3, 4, 2]), final_layer="nope")


def test_written_out_tangents_equal_forward_mode_ad():
    # The dependence pass writes some tangents out for speed (prune_landscape.tracing.generic_ops); each must equal
    # the value and tangent forward-mode AD gives the plain op (float64).
    import torch.autograd.forward_ad as fwAD
    from torch.nn import functional as F

    from prune_landscape.tracing.generic_ops import batch_norm_dual, dual_arithmetic, dual_linear_call, layer_norm_dual

    g = torch.Generator().manual_seed(0)

    def r(*shape):
        return torch.randn(*shape, generator=g, dtype=torch.float64)

    x, t, w, b = r(2, 5, 6), r(2, 5, 6), r(6), r(6)
    weight, scale = r(4, 6), torch.rand(4, generator=g, dtype=torch.float64) + 0.5
    image, image_t, kernel = r(1, 3, 7, 7), r(1, 3, 7, 7), r(4, 3, 3, 3)
    running_var = torch.rand(3, generator=g, dtype=torch.float64) + 0.5
    cases = {
        "layer_norm": (lambda d: layer_norm_dual(d, (6,), w, b), lambda d: F.layer_norm(d, (6,), w, b), x, t),
        "batch_norm": (lambda d: batch_norm_dual(d, b[:3], running_var, w[:3], b[:3]),
                       lambda d: F.batch_norm(d, b[:3], running_var, w[:3], b[:3]), image, image_t),
        "scalar - x": (lambda d: dual_arithmetic(torch.Tensor.__rsub__, "__rsub__", (d, 2.0)), lambda d: 2.0 - d, x, t),
        "w * x": (lambda d: dual_arithmetic(torch.mul, "mul", (w, d)), lambda d: w * d, x, t),
        "x / w": (lambda d: dual_arithmetic(torch.Tensor.__truediv__, "__truediv__", (d, w)), lambda d: d / w, x, t),
        "scaled linear": (lambda d: dual_linear_call(F.linear, "linear", (d, weight, b[:4]), {}, scale, -1),
                          lambda d: F.linear(d, weight) * scale + b[:4], x, t),
        "conv": (lambda d: dual_linear_call(F.conv2d, "conv2d", (d, kernel, b[:4]), {"padding": 1}, None, 1),
                 lambda d: F.conv2d(d, kernel, b[:4], padding=1), image, image_t),
        "HF Conv1D addmm": (lambda d: dual_linear_call(torch.addmm, "addmm", (b[:4], d, weight.T), {}, None, -1),
                            lambda d: torch.addmm(b[:4], d, weight.T), x[0], t[0]),
    }
    for name, (written, reference, primal, tangent) in cases.items():
        with fwAD.dual_level():
            got_value, got_tangent = fwAD.unpack_dual(written(fwAD.make_dual(primal, tangent)))
            want_value, want_tangent = fwAD.unpack_dual(reference(fwAD.make_dual(primal, tangent)))
        assert torch.allclose(got_value, want_value, rtol=1e-12, atol=1e-12), f"{name}: values differ"
        assert torch.allclose(got_tangent, want_tangent, rtol=1e-10, atol=1e-12), (
            f"{name}: tangents differ by {float((got_tangent - want_tangent).abs().max()):.3g}")
