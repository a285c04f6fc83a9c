"""Each RISKY rule backed by a concrete non-global local minimum, checked numerically in float64.

For every construction: the audit fires the rule on the pruned net and data; at the constructed point the
gradient vanishes (autograd), the Hessian over the kept parameters is PSD and its kernel is exactly the
span of the rescaling directions ``(c w_in, c b, w_out / c)`` of the hidden units (counted); 1000 random
perturbations at each radius 1e-1, 1e-2, 1e-3 never decrease the loss; and an explicit point of the same
network has a lower loss.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.func import functional_call

from prune_landscape import MaskSet, models
from prune_landscape.audit import audit
from prune_landscape.theory import Landscape

torch.set_default_dtype(torch.float32)  # the model is built in float32 and converted explicitly


class MaskedLoss:
    """Squared loss ``0.5 * sum((f(X) - Y)^2)`` of ``model`` as a function of its kept parameters (float64)."""

    def __init__(self, model: nn.Module, masks: MaskSet, x: torch.Tensor, y: torch.Tensor):
        self.model = model.double().eval()
        self.x, self.y = x.double(), y.double()
        self.slots = []  # (parameter name, shape, kept-index tensor)
        for name, param in self.model.named_parameters():
            mask = masks.get(name, torch.ones(param.shape, dtype=torch.bool))
            self.slots.append((name, param.shape, mask.reshape(-1).nonzero().reshape(-1)))
        self.size = sum(len(idx) for _, _, idx in self.slots)

    def unflatten(self, theta: torch.Tensor) -> dict[str, torch.Tensor]:
        out, start = {}, 0
        for name, shape, idx in self.slots:
            flat = torch.zeros(shape.numel(), dtype=theta.dtype).index_put((idx,), theta[start : start + len(idx)])
            out[name] = flat.reshape(shape)
            start += len(idx)
        return out

    def flatten(self, tensors: dict[str, torch.Tensor]) -> torch.Tensor:
        return torch.cat([torch.as_tensor(tensors[name], dtype=torch.float64).reshape(-1)[idx] for name, _, idx in self.slots])

    def __call__(self, theta: torch.Tensor) -> torch.Tensor:
        return 0.5 * ((functional_call(self.model, self.unflatten(theta), (self.x,)) - self.y) ** 2).sum()

    def rescaling_directions(self, theta: torch.Tensor, layers: list[tuple[str, str]]) -> torch.Tensor:
        """Tangents of ``(c w_in, c b_in, w_out / c)`` at c = 1 for every hidden unit with in- and out-weights."""
        params = self.unflatten(theta)
        directions = []
        for inner, outer in layers:
            w_in, w_out = params[f"{inner}.weight"], params[f"{outer}.weight"]
            bias = params.get(f"{inner}.bias")
            for unit in range(w_in.shape[0]):
                if w_in[unit].abs().sum() == 0 or w_out[:, unit].abs().sum() == 0:
                    continue
                tangent = {name: torch.zeros_like(value) for name, value in params.items()}
                tangent[f"{inner}.weight"][unit] = w_in[unit]
                if bias is not None:
                    tangent[f"{inner}.bias"][unit] = bias[unit]
                tangent[f"{outer}.weight"][:, unit] = -w_out[:, unit]
                directions.append(self.flatten(tangent))
        return torch.stack(directions)


def polish(loss: MaskedLoss, theta: torch.Tensor, steps: int = 8) -> torch.Tensor:
    """Newton steps with a pseudo-inverse (the rescaling kernel is singular) to reach gradient ~ 1e-13."""
    for _ in range(steps):
        grad = torch.autograd.functional.jacobian(loss, theta)
        hessian = torch.autograd.functional.hessian(loss, theta)
        theta = theta - torch.linalg.pinv(hessian, rtol=1e-9) @ grad
    return theta


def assert_spurious_local_minimum(loss: MaskedLoss, theta: torch.Tensor, layers, lower: torch.Tensor, seed: int) -> dict:
    value = float(loss(theta))
    grad = torch.autograd.functional.jacobian(loss, theta)
    assert grad.norm() < 1e-9, f"gradient norm {grad.norm():.3g}"
    hessian = torch.autograd.functional.hessian(loss, theta)
    eigenvalues = torch.linalg.eigvalsh(hessian)
    scale = float(eigenvalues.abs().max())
    assert eigenvalues.min() > -1e-9 * scale, f"negative curvature {eigenvalues.min():.3g}"
    kernel = int((eigenvalues.abs() <= 1e-9 * scale).sum())
    rescaling = loss.rescaling_directions(theta, layers)
    assert kernel == rescaling.shape[0] == int(torch.linalg.matrix_rank(rescaling))
    assert (hessian @ rescaling.T).abs().max() < 1e-8 * scale  # the kernel IS the rescaling span
    assert eigenvalues[kernel] > 1e-6 * scale  # strictly positive off the rescalings
    generator = torch.Generator().manual_seed(seed)
    for radius in (1e-1, 1e-2, 1e-3):
        directions = torch.randn(1000, theta.numel(), generator=generator, dtype=torch.float64)
        directions = radius * directions / directions.norm(dim=1, keepdim=True)
        values = torch.stack([loss(theta + delta) for delta in directions])
        assert values.min() >= value - 1e-12, f"decrease {value - values.min():.3g} at radius {radius}"
    assert float(loss(lower)) < value - 1e-3
    return {"loss": value, "lower": float(loss(lower)), "kernel": kernel, "min_positive": float(eigenvalues[kernel])}


def _masks(**layers) -> MaskSet:
    return MaskSet({f"{k}.weight": torch.tensor(v, dtype=torch.bool) for k, v in layers.items()})


def test_nl_3_wide_relu_net_with_fan_in_one_outputs():
    # 4 samples, 4 hidden ReLU units (width >= n), final layer diagonal: every output has fan-in 1 < n.
    x = torch.tensor([[-2.0], [-1.0], [1.0], [2.0]])
    y = torch.tensor([-5.0, 1.0, -1.0, 0.0])[:, None].repeat(1, 4)
    masks = _masks(fc1=[[1]] * 4, fc2=torch.eye(4).tolist())
    net = models.mlp([1, 4, 4])
    report = audit(net, (x, y), masks=masks)
    assert report.landscape.verdict is Landscape.RISKY and report.landscape.rules == ("NL-3",)
    loss = MaskedLoss(net, masks, x, y)
    # Unit k = relu(x) feeds output k with weight 1 and bias -2: it fits x = 1, 2 exactly and is off on
    # x = -2, -1 (margin 1), where the output bias -2 leaves residuals (-3, 3): loss 4 * 9 = 36.
    spurious = loss.flatten({"fc1.weight": torch.ones(4, 1), "fc1.bias": torch.zeros(4),
                             "fc2.weight": torch.eye(4), "fc2.bias": torch.full((4,), -2.0)})
    # Lower: unit relu(-x - 1.5) (on only at x = -2) with weight -10 and bias 0: residuals (0, 1, -1, 0).
    lower = loss.flatten({"fc1.weight": -torch.ones(4, 1), "fc1.bias": torch.full((4,), -1.5),
                          "fc2.weight": -10 * torch.eye(4), "fc2.bias": torch.zeros(4)})
    found = assert_spurious_local_minimum(loss, spurious, [("fc1", "fc2")], lower, seed=3)
    assert found["loss"] == pytest.approx(36.0) and found["lower"] == pytest.approx(4.0) and found["kernel"] == 4


def test_nl_4_narrow_relu_net_with_dense_final_layer():
    # 6 samples, 2 hidden ReLU units (< n), dense final layer.
    x = torch.tensor([[-3.0], [-2.0], [-1.0], [1.0], [2.0], [3.0]])
    y = torch.tensor([[3.0], [1.0], [1.0], [-1.0], [1.0], [3.0]])
    net = models.mlp([1, 2, 1])
    report = audit(net, (x, y), masks=MaskSet.dense(net))
    assert report.landscape.verdict is Landscape.RISKY and report.landscape.rules == ("NL-4",)
    assert report.structure.final_layer_dense
    loss = MaskedLoss(net, MaskSet.dense(net), x, y)
    # relu(2x - 3) fits x = 2, 3; relu(-2x - 3) fits x = -3, -2; both off at x = -1, 1 (margin 1), where
    # the output bias 0 leaves residuals (1, -1): loss 1.
    spurious = loss.flatten({"fc1.weight": torch.tensor([[2.0], [-2.0]]), "fc1.bias": torch.tensor([-3.0, -3.0]),
                             "fc2.weight": torch.tensor([[1.0, 1.0]]), "fc2.bias": torch.tensor([0.0])})
    # Lower: output bias -1 fits x = 1; relu(2x - 2) fits x = 2, 3; relu(-x + 2/3) is the least-squares
    # fit on x <= -1: loss 1/3.
    lower = loss.flatten({"fc1.weight": torch.tensor([[2.0], [-1.0]]), "fc1.bias": torch.tensor([-2.0, 2 / 3]),
                          "fc2.weight": torch.tensor([[1.0, 1.0]]), "fc2.bias": torch.tensor([-1.0])})
    found = assert_spurious_local_minimum(loss, spurious, [("fc1", "fc2")], lower, seed=4)
    assert found["loss"] == pytest.approx(1.0) and found["lower"] == pytest.approx(1 / 3) and found["kernel"] == 2


# Non-whitened data (inputs are rows) and targets for the LIN-3 instance; found by multi-start L-BFGS and
# rounded to two decimals; the minimum is re-derived below from a six-decimal starting point.
LIN3_X = torch.tensor([[-2.31, -0.37, -1.06, 1.0], [-0.88, -1.28, -0.62, -0.87], [-1.3, 1.52, 0.32, 2.02],
                       [1.14, -1.23, 0.07, 0.34]]).T
LIN3_Y = torch.tensor([[-0.57, 0.37, -0.89, -1.51], [0.37, 1.46, 0.94, 0.77]]).T


def test_lin_3_low_rank_constraint_on_non_whitened_data():
    # Two non-complete classes: unit 0 reads inputs {0, 1}, unit 1 reads {2, 3}; both feed both outputs.
    masks = _masks(fc1=[[1, 1, 0, 0], [0, 0, 1, 1]], fc2=[[1, 1], [1, 1]])
    net = models.mlp([4, 2, 2], activation="linear", bias=False)
    report = audit(net, (LIN3_X, LIN3_Y), masks=masks)
    assert report.landscape.verdict is Landscape.RISKY and report.landscape.rules == ("LIN-3",)
    assert report.facts.whitened is False and report.facts.closedness.status.name == "CLOSED"  # disjoint classes
    loss = MaskedLoss(net, masks, LIN3_X, LIN3_Y)
    start = loss.flatten({"fc1.weight": torch.tensor([[0.802529, -0.681744, 0, 0], [0, 0, 1.48782, 0.680191]]),
                          "fc2.weight": torch.tensor([[1.159122, -0.833876], [-1.127061, 0.852269]])})
    spurious = polish(loss, start)
    assert (spurious - start).norm() < 1e-4  # the rounded point was already the minimum to 6 decimals
    lower = loss.flatten({"fc1.weight": torch.tensor([[-0.147693, 1.408123, 0, 0], [0, 0, 0.310737, 0.667078]]),
                          "fc2.weight": torch.tensor([[0.159433, -1.594895], [-0.795469, -0.368142]])})
    found = assert_spurious_local_minimum(loss, spurious, [("fc1", "fc2")], lower, seed=5)
    assert found["kernel"] == 2 and found["loss"] == pytest.approx(0.98106, abs=1e-4) and found["lower"] < 0.28


def test_lin_4_three_or_more_outputs_with_a_sparse_final_layer():
    # Two units on R^3 (dense first layer, whitened inputs X = I). Outputs 0-1 see unit 0 only, outputs 2-3
    # unit 1 only, outputs 4-5 both. Targets: unit-only outputs want e1 (and a little e2 / e3), the shared
    # outputs want the plane span(e2, e3). At a0 = e2, a1 = e3 the shared outputs are fitted and neither
    # unit can turn towards e1 without tilting that plane, which costs more (lambda = 1.25 > 1 - eps)
    # than it gains; yet units nearly parallel to e1 do better (lambda < 2 - 2 eps). A sub-network's
    # optimum (the shared outputs) is a sub-optimal local minimum of the whole.
    lam, eps = 1.25, 0.25
    a, b = lam**0.5, eps**0.5
    x = torch.eye(3)
    y = torch.tensor([[1, 0, 0], [0, b, 0], [1, 0, 0], [0, 0, b], [0, a, 0], [0, 0, a]]).T  # samples x outputs
    masks = _masks(fc1=[[1, 1, 1], [1, 1, 1]], fc2=[[1, 0], [1, 0], [0, 1], [0, 1], [1, 1], [1, 1]])
    net = models.mlp([3, 2, 6], activation="linear", bias=False)
    report = audit(net, (x, y), masks=masks)
    assert report.landscape.verdict is Landscape.RISKY and report.landscape.rules == ("LIN-4",)
    loss = MaskedLoss(net, masks, x, y)
    spurious = loss.flatten({"fc1.weight": torch.tensor([[0.0, 1, 0], [0, 0, 1]]),
                             "fc2.weight": torch.tensor([[0.0, 0], [b, 0], [0, 0], [0, b], [a, 0], [0, a]])})
    # Lower: a0 = e1, a1 = e1 + 0.1 e2 (nearly parallel); output 4 = sqrt(lam) e2 from the difference.
    s = 0.1
    lower = loss.flatten({"fc1.weight": torch.tensor([[1.0, 0, 0], [1, s, 0]]),
                          "fc2.weight": torch.tensor([[1.0, 0], [0, 0], [0, 1 / (1 + s * s)], [0, 0], [-a / s, a / s], [0, 0]])})
    found = assert_spurious_local_minimum(loss, spurious, [("fc1", "fc2")], lower, seed=6)
    assert found["loss"] == pytest.approx(1.0) and found["lower"] == pytest.approx(0.5 * (2 * eps + lam + 1 - 1 / (1 + s * s))) and found["kernel"] == 2
