"""Loss slices and interpolation: centre and endpoints equal the losses, filter norms, masks, NaN handling."""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F

from _probe_helpers import assert_restored, classification_data, pruned_mlp, snapshot
from prune_landscape.probes import PROBES, filter_normalized_direction, interpolate, loss_surface
from prune_landscape.probes.kept import KeptParameters
from prune_landscape.modelcopy import copy_model


def _loss(net, x, y):
    with torch.no_grad():
        return float(F.cross_entropy(net.eval()(x), y))


@pytest.mark.parametrize("dims", [1, 2])
def test_slice_at_zero_equals_the_loss_and_model_is_restored(dims):
    net, _ = pruned_mlp()
    net.train()
    x, y = classification_data()
    before = snapshot(net)
    surface = loss_surface(net, (x, y), steps=5, dims=dims, batch_size=16, chunk=7)
    assert_restored(net, before)
    expected = _loss(net, x, y)
    assert surface.center_loss == pytest.approx(expected, rel=1e-12)
    middle = surface.losses[2] if dims == 1 else surface.losses[2][2]
    assert middle == pytest.approx(expected, rel=1e-12)
    assert surface.figure() is not None
    assert surface.scalars()["nonfinite_points"] == 0


def test_directions_are_masked_and_filter_normalised_to_the_masked_weights():
    net, masks = pruned_mlp(hooks=True)
    kept = KeptParameters.from_model(net)
    direction = filter_normalized_direction(kept, torch.Generator().manual_seed(0))
    for name, mask in masks.items():
        module = net.get_submodule(name.split(".")[0])
        masked_weight = module.weight_orig.detach() * mask
        d = direction[name.replace("weight", "weight_orig")]
        assert torch.all(d[~mask] == 0)
        torch.testing.assert_close(d.norm(dim=1), masked_weight.norm(dim=1), rtol=1e-12, atol=1e-12)
    for name in ("fc1.bias", "fc2.bias", "fc3.bias"):
        assert torch.all(direction[name] == 0)


def test_grid_point_matches_a_manual_evaluation_at_the_masked_point():
    net, masks = pruned_mlp(hooks=False)
    x, y = classification_data()
    surface = loss_surface(net, (x, y), steps=3, dims=2, seed=4, span=0.5)
    kept = KeptParameters.from_model(net)
    g = torch.Generator().manual_seed(4)
    d1, d2 = filter_normalized_direction(kept, g), filter_normalized_direction(kept, g)
    manual = copy.deepcopy(net)
    with torch.no_grad():
        for name, p in manual.named_parameters():
            p.add_(-0.5 * d1[name] + 0.5 * d2[name])
    for name, mask in masks.items():  # pruned weights stay exactly zero at the grid point
        assert torch.all(manual.get_parameter(name)[~mask] == 0)
    assert surface.losses[0][2] == pytest.approx(_loss(manual, x, y), rel=1e-10)


def test_nonfinite_losses_are_recorded_not_raised():
    net, _ = pruned_mlp()
    x, _ = classification_data()
    y = torch.full((x.shape[0], 3), float("inf"), dtype=torch.float64)
    surface = loss_surface(net, (x, y), steps=3, dims=1, loss="mse")
    assert all(math.isinf(v) or math.isnan(v) for v in surface.losses)
    assert surface.scalars()["nonfinite_points"] == 3
    assert surface.to_dict()["losses"] == [None, None, None]
    assert surface.figure() is not None


def test_interpolation_endpoints_equal_endpoint_losses_and_barrier():
    net, masks = pruned_mlp()
    x, y = classification_data()
    other, _ = pruned_mlp(seed=9)
    before = snapshot(net)
    path = interpolate(net, net, other, (x, y), steps=7, batch_size=16)
    assert_restored(net, before)
    # `other` has its own masks; the path lives on `net`'s masks, so the end point is other's weights masked.
    end = copy.deepcopy(net.state_dict())
    for name in masks:
        module = name.split(".")[0]
        end[f"{module}.weight_orig"] = other.get_submodule(module).weight_orig.detach() * other.get_submodule(module).weight_mask
        end[f"{module}.bias"] = other.get_submodule(module).bias.detach()
    target = copy_model(net)
    target.load_state_dict(end)
    assert path.losses[0] == _loss(net, x, y)
    assert path.losses[-1] == pytest.approx(_loss(target, x, y), rel=1e-12)
    t = torch.tensor(path.ts, dtype=torch.float64)
    line = (1 - t) * path.losses[0] + t * path.losses[-1]
    assert path.barrier_height == pytest.approx(float((torch.tensor(path.losses, dtype=torch.float64) - line).max()), abs=1e-12)
    assert path.figure() is not None and path.scalars()["barrier_height"] == path.barrier_height


def test_interpolation_accepts_state_dict_points_by_user_names():
    net, masks = pruned_mlp()
    x, y = classification_data()
    start = {n.replace("_orig", ""): p.detach() * 0 for n, p in net.named_parameters()}
    path = interpolate(net, start, net, (x, y), steps=3)
    assert path.losses[0] == pytest.approx(math.log(3), rel=1e-12)  # zero weights: uniform softmax
    assert path.losses[-1] == _loss(net, x, y)
    with pytest.raises(ValueError, match="lacks parameter"):
        interpolate(net, {"fc1.weight": start["fc1.weight"]}, net, (x, y))


def test_registry_surface_and_errors():
    net, _ = pruned_mlp(widths=(6, 5, 3))
    result = PROBES["surface"](net, classification_data())
    assert len(result.losses) == 21 and len(result.losses[0]) == 21
    with pytest.raises(ValueError, match="dims"):
        loss_surface(net, classification_data(), dims=3)
    with pytest.raises(ValueError, match="steps"):
        loss_surface(net, classification_data(), steps=1)


def test_auto_chunk_is_sized_from_the_largest_activations_and_changes_no_value(monkeypatch):
    from prune_landscape import models
    from prune_landscape.probes import batched

    net = models.mlp([3, 1000, 2])
    x, y = torch.randn(8, 3), torch.randint(0, 2, (8,))
    kept = KeptParameters.from_model(net)
    # fc1 and act1 each output 8 x 1000 float32 = 32,000 bytes: one point's working set is 64,000 bytes.
    assert batched.point_footprint(net, kept.values, x) == 64_000
    assert batched.auto_chunk(net, kept.values, x) == batched.AUTO_CHUNK_MAX
    monkeypatch.setattr(batched, "AUTO_CHUNK_BYTES", 200_000)
    assert batched.auto_chunk(net, kept.values, x) == 3
    auto = loss_surface(net, (x, y), steps=5, dims=2, chunk="auto").array
    one_by_one = loss_surface(net, (x, y), steps=5, dims=2, chunk=1).array
    assert auto == pytest.approx(one_by_one, rel=1e-6)
    for bad in (0, -2, 1.5, "big", True):
        with pytest.raises(ValueError, match="chunk must be a positive int or 'auto'"):
            loss_surface(net, (x, y), steps=3, chunk=bad)


def _pruned_bn_resnet():
    """ResNet-20 (float64) with torch-prune hooks at density 0.4 and non-trivial BatchNorm statistics."""
    from prune_landscape import MaskSet, models

    net = models.resnet20().double()
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for module in net.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.normal_(0, 0.1, generator=g)
                module.running_var.uniform_(0.5, 2.0, generator=g)
                module.weight.uniform_(0.5, 1.5, generator=g)
                module.bias.normal_(0, 0.1, generator=g)
    MaskSet({n: torch.rand(p.shape, generator=g) < 0.4 for n, p in net.named_parameters() if p.dim() > 1}).apply_to(net)
    x = torch.randn(6, 3, 8, 8, generator=g, dtype=torch.float64)
    return net.eval(), (x, torch.randint(0, 10, (6,), generator=g))


def test_batchnorm_nets_run_folded_and_channels_last_and_match_a_naive_loop():
    from prune_landscape.probes.batched import fast_forward
    from prune_landscape.probes.kept import probing

    net, (x, y) = _pruned_bn_resnet()
    before = snapshot(net)
    with probing(net):
        kept = KeptParameters.from_model(net)
        forward = fast_forward(net, kept, x)
        inner = [c.cell_contents for c in forward.__closure__ if callable(c.cell_contents)]
        assert forward.__name__ == "channels_last" and [f.__name__ for f in inner] == ["fused"]  # both kept
    surface = loss_surface(net, (x, y), steps=3, dims=2, seed=5, span=0.5)
    assert_restored(net, before)
    g = torch.Generator().manual_seed(5)
    d1, d2 = filter_normalized_direction(kept, g), filter_normalized_direction(kept, g)
    manual = copy_model(net)
    params = dict(manual.named_parameters())
    for i, a in enumerate((-0.5, 0.0, 0.5)):
        for j, b in enumerate((-0.5, 0.0, 0.5)):
            with torch.no_grad():
                for name, p in params.items():
                    p.copy_(kept.values[name] + a * d1[name] + b * d2[name])
            assert surface.losses[i][j] == pytest.approx(_loss(manual, x, y), rel=1e-10)


def test_interpolation_moves_batchnorm_affine_parameters_through_the_folded_path():
    net, (x, y) = _pruned_bn_resnet()
    other = copy_model(net)
    with torch.no_grad():
        for module in other.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.weight.mul_(2.0)
                module.bias.add_(0.3)
    path = interpolate(net, net, other, (x, y), steps=3)
    assert path.losses[0] == pytest.approx(_loss(net, x, y), rel=1e-10)
    assert path.losses[-1] == pytest.approx(_loss(other, x, y), rel=1e-10)


def test_a_model_that_views_its_input_keeps_the_contiguous_layout():
    from prune_landscape.probes.batched import fast_forward

    class Viewing(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv, self.fc = torch.nn.Conv2d(2, 3, 1), torch.nn.Linear(2 * 4 * 4, 3)

        def forward(self, x):
            return self.fc(x.view(x.shape[0], -1)) + self.conv(x).mean(dim=(1, 2, 3), keepdim=False)[:, None]

    net = Viewing().double().eval()
    x = torch.randn(5, 2, 4, 4, dtype=torch.float64)
    y = torch.randint(0, 3, (5,))
    assert fast_forward(net, KeptParameters.from_model(net), x).__name__ == "reference"
    surface = loss_surface(net, (x, y), steps=3, dims=1)
    assert surface.losses[1] == pytest.approx(_loss(net, x, y), rel=1e-12)


def test_surface_and_grid_options_group_the_knobs_and_equal_the_loose_keywords():
    from prune_landscape.probes import GridOptions, SurfaceOptions

    net, _ = pruned_mlp(widths=(6, 5, 3))
    data = classification_data()
    options = SurfaceOptions(span=0.3, seed=4, batch_size=16, chunk=2)
    grouped = loss_surface(net, data, steps=3, dims=2, options=options)
    assert grouped == loss_surface(net, data, steps=3, dims=2, span=0.3, seed=4, batch_size=16, chunk=2)
    assert grouped.alphas == pytest.approx((-0.3, 0.0, 0.3)) and grouped.seed == 4
    other = copy_model(net)
    path = interpolate(net, net, other, data, steps=3, options=GridOptions(max_samples=10, chunk=1))
    assert path == interpolate(net, net, other, data, steps=3, max_samples=10, chunk=1)
    with pytest.raises(TypeError, match="unexpected keyword argument 'span'"):
        interpolate(net, net, other, data, span=0.3)  # a slice's knob, not a path's
    with pytest.raises(ValueError, match="span must be > 0, got 0"):
        SurfaceOptions(span=0)
