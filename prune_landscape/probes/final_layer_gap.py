"""Final-layer convex gap (THEORY.md section 6): how far the head is from its best on today's features.

With the features entering the final layer fixed, the loss is convex in that layer. Squared loss is
separable by output row, each row a (ridge) least-squares problem over its own support (plus the bias);
with cross-entropy the rows couple through the softmax, so the masked support is solved jointly by L-BFGS.
``current - masked_optimum`` says whether training is stuck in the head; ``masked_optimum -
dense_optimum`` is the *price* the head's mask pays on these features (the audit's mask verdict reads it).

Why a ridge. Cross-entropy on separable features has no minimiser: the infimum is 0, approached as the
weights grow, so "the optimum" depends on when the solver stops. The objective here is therefore

    J(W, b) = mean loss(W x_i + b, y_i) + ridge / 2 * sum_kj (W_kj * rms_j)^2

with ``rms_j`` the root-mean-square of feature j over the samples (the bias is not penalised). J is
strictly convex in W with a unique minimiser on every support, so both optima are attained and the
price is well defined; measuring W in units of each feature's scale makes the price independent of how
the features are scaled (a rescaled feature is a reparametrisation of the same head). ``ridge=0`` gives
the plain problem, solved within a fixed L-BFGS budget (``converged`` says whether it stopped on the
gradient). The default ``ridge = 1e-3`` is small next to the loss scale: on the demo's digits features
the dense head's optimum is 0.03-0.2 nats (see benchmarks/calibration.py for the study behind it).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from prune_landscape.batching import DataLike, first_batch
from prune_landscape.masks import find_parameter
from prune_landscape.probes._params import Batches, KeptParameters, probing, resolve_loss
from prune_landscape.structure import final_layer_name

__all__ = ["DEFAULT_RIDGE", "FinalLayerGapResult", "final_layer_gap"]

#: The ridge of the default price (see the module docstring).
DEFAULT_RIDGE = 1e-3


@dataclass(frozen=True)
class FinalLayerGapResult:
    """Objective values of the final layer on fixed features: as trained, best under its mask, best dense.

    All three are values of the same objective J (the mean loss plus the ridge term of the module
    docstring); with ``ridge=0`` they are plain mean losses.

    Attributes:
        current: J at the model's head (features and final layer as they are).
        masked_optimum: the least J over final layers with the same mask (bias free).
        dense_optimum: the least J over dense final layers.
        converged: False when L-BFGS stopped on its iteration budget (only possible for cross-entropy;
            with ``ridge=0`` on separable features there is no minimiser and this is expected).
        ridge: the ridge of J.
        null_loss: the least mean loss of a head that ignores the features (bias only: the label
            entropy for cross-entropy, the target variance for squared loss); the scale of the price.
    """

    current: float
    masked_optimum: float
    dense_optimum: float
    loss: str
    final_layer: str
    final_layer_density: float
    num_samples: int
    num_features: int
    converged: bool
    ridge: float = 0.0
    null_loss: float = float("nan")

    @property
    def head_gap(self) -> float:
        """``current - masked_optimum``: what retraining only the head would still gain."""
        return self.current - self.masked_optimum

    @property
    def sparsity_price(self) -> float:
        """``masked_optimum - dense_optimum``: what the final layer's mask costs on these features."""
        return self.masked_optimum - self.dense_optimum

    @property
    def relative_price(self) -> float:
        """``sparsity_price / null_loss``: the price as a fraction of what the features can explain at most."""
        return self.sparsity_price / self.null_loss if self.null_loss > 0 else float("nan")

    def to_dict(self) -> dict:
        """A JSON-ready dict, gaps included."""
        return {**asdict(self), "head_gap": self.head_gap, "sparsity_price": self.sparsity_price,
                "relative_price": self.relative_price}

    def scalars(self) -> dict[str, float]:
        """The three losses and the two gaps."""
        return {"current": self.current, "masked_optimum": self.masked_optimum, "dense_optimum": self.dense_optimum,
                "head_gap": self.head_gap, "sparsity_price": self.sparsity_price,
                "relative_price": self.relative_price, "null_loss": self.null_loss,
                "final_layer_density": self.final_layer_density}

    def figure(self):
        """Three bars: current, masked optimum, dense optimum."""
        from matplotlib.figure import Figure

        fig = Figure(figsize=(4.5, 3.2))
        ax = fig.add_subplot()
        ax.bar(["current", "masked optimum", "dense optimum"], [self.current, self.masked_optimum, self.dense_optimum],
               color=["C0", "C1", "C2"])
        ax.set_ylabel(f"{self.loss} loss")
        ax.set_title(f"{self.final_layer} (density {self.final_layer_density:.2f}) on fixed features")
        fig.tight_layout()
        return fig


def _least_squares_rows(features: torch.Tensor, targets: torch.Tensor, support: torch.Tensor,
                        penalty: torch.Tensor | None = None) -> torch.Tensor:
    """Row k minimises ``||features[:, S_k] w - targets[:, k]||^2 + ||penalty[S_k] * w||^2`` on ``S_k = support[k]``.

    The ridge is solved as ordinary least squares on the design stacked over ``diag(penalty)`` (better
    conditioned than the normal equations).
    """
    weights = torch.zeros(support.shape, dtype=features.dtype)
    for row in range(support.shape[0]):
        columns = support[row].nonzero().reshape(-1)
        if columns.numel():
            design, target = features[:, columns], targets[:, row : row + 1]
            if penalty is not None:
                design = torch.cat([design, torch.diag(penalty[columns])])
                target = torch.cat([target, torch.zeros(columns.numel(), 1, dtype=target.dtype)])
            solution = torch.linalg.lstsq(design, target, driver="gelsd").solution
            weights[row, columns] = solution.reshape(-1)
    return weights


@contextlib.contextmanager
def _few_threads(size: int) -> Iterator[None]:
    """One intra-op thread for small solves (restored after).

    A head problem is hundreds of tiny kernels per L-BFGS step; with several threads on a busy machine
    each kernel waits on its workers (measured 30x slower on 2 shared cores), and one thread is as fast
    on an idle one. Large problems (CIFAR-size feature matrices) keep the caller's setting.
    """
    previous = torch.get_num_threads()
    small = size < 2_000_000
    if small:
        torch.set_num_threads(1)
    try:
        yield
    finally:
        if small:
            torch.set_num_threads(previous)


#: Newton's method (exact Hessian) for heads with at most this many weights; L-BFGS above.
_NEWTON_MAX_WEIGHTS = 1500


def _cross_entropy_value(features, labels, w, penalised, ridge) -> torch.Tensor:
    return F.cross_entropy(features @ w.T, labels) + 0.5 * ridge * (w[:, penalised] ** 2).sum()


def _cross_entropy_hessian(features: torch.Tensor, probabilities: torch.Tensor, support: torch.Tensor) -> torch.Tensor:
    """Hessian of mean softmax cross-entropy in the kept weights (row-major order of ``support``).

    Block (a, b) is ``X[:, J_a]^T diag(p_a (delta_ab - p_b)) X[:, J_b] / n`` with J_a the kept columns of
    row a: the cost is n * kept^2 (half of it, by symmetry), never n * (K p)^2 for a sparse head.
    """
    n = features.shape[0]
    columns = [support[a].nonzero().reshape(-1) for a in range(support.shape[0])]
    offsets = [0]
    for c in columns:
        offsets.append(offsets[-1] + c.numel())
    hessian = torch.zeros(offsets[-1], offsets[-1], dtype=features.dtype)
    for a, cols_a in enumerate(columns):
        if not cols_a.numel():
            continue
        rows = slice(offsets[a], offsets[a + 1])
        for b in range(a, len(columns)):
            if not columns[b].numel():
                continue
            weight = probabilities[:, a] * ((1.0 if a == b else 0.0) - probabilities[:, b])
            block = (features[:, cols_a] * weight[:, None]).T @ features[:, columns[b]] / n
            hessian[rows, offsets[b] : offsets[b + 1]] = block
            hessian[offsets[b] : offsets[b + 1], rows] = block.T
    return hessian


def _newton_fit(features, labels, support, start, max_iter, penalised, ridge) -> tuple[torch.Tensor, bool]:
    """Damped Newton on the kept weights (strictly convex for ridge > 0, so it converges quadratically).

    The softmax is unchanged when one constant is added to every class's bias, so the bias block of the
    Hessian is singular along that direction; the gradient is orthogonal to it, and a 1e-10 damping
    picks the minimum-norm step.
    """
    index = support.reshape(-1).nonzero().reshape(-1)
    w = start * support
    onehot = F.one_hot(labels, support.shape[0]).to(features.dtype)
    penalty = (penalised[None, :].expand_as(support)).reshape(-1)[index].to(features.dtype) * ridge
    value = _cross_entropy_value(features, labels, w, penalised, ridge)
    for _ in range(max_iter):
        probabilities = torch.softmax(features @ w.T, 1)
        gradient = ((probabilities - onehot).T @ features / features.shape[0] + ridge * w * penalised).reshape(-1)[index]
        if gradient.abs().max() <= 1e-10:
            return w, True
        hessian = _cross_entropy_hessian(features, probabilities, support) + torch.diag(penalty + 1e-10)
        step = torch.zeros(support.numel(), dtype=features.dtype)
        step[index] = -torch.linalg.solve(hessian, gradient)
        step = step.reshape(support.shape)
        slope, scale = float(gradient @ step.reshape(-1)[index]), 1.0
        for _ in range(40):  # Armijo backtracking: a full Newton step is taken near the optimum
            trial = _cross_entropy_value(features, labels, w + scale * step, penalised, ridge)
            if trial <= value + 1e-4 * scale * slope:
                break
            scale /= 2
        else:
            return w, False
        w, value = w + scale * step, trial
    probabilities = torch.softmax(features @ w.T, 1)
    gradient = ((probabilities - onehot).T @ features / features.shape[0] + ridge * w * penalised).reshape(-1)[index]
    return w, bool(gradient.abs().max() <= 1e-6)


def _cross_entropy_fit(features, labels, support, start, max_iter, penalised, ridge) -> tuple[torch.Tensor, bool]:
    """Minimise mean cross-entropy + ridge/2 ||W[:, penalised]||^2 over weights on ``support`` from ``start``.

    Newton for small heads with a ridge (tens of steps instead of hundreds of L-BFGS iterations on these
    ill-conditioned problems); L-BFGS otherwise (within ``max_iter``; the only option for ``ridge=0``,
    where the optimum may lie at infinity).
    """
    if ridge > 0 and support.numel() <= _NEWTON_MAX_WEIGHTS:
        with _few_threads(features.numel()):
            return _newton_fit(features, labels, support, start, min(max_iter, 100), penalised, ridge)
    index = support.reshape(-1).nonzero().reshape(-1)
    free = start.reshape(-1)[index].clone().requires_grad_(True)

    def weights() -> torch.Tensor:
        return torch.zeros(support.numel(), dtype=features.dtype).index_put((index,), free).reshape(support.shape)

    optimizer = torch.optim.LBFGS([free], lr=1.0, max_iter=max_iter, tolerance_grad=1e-9, tolerance_change=1e-15,
                                  history_size=20, line_search_fn="strong_wolfe")

    def objective() -> torch.Tensor:
        w = weights()
        return F.cross_entropy(features @ w.T, labels) + 0.5 * ridge * (w[:, penalised] ** 2).sum()

    def closure():
        optimizer.zero_grad()
        value = objective()
        value.backward()
        return value

    with torch.enable_grad(), _few_threads(features.numel()):
        optimizer.step(closure)
        value = objective()
        gradient = torch.autograd.grad(value, free)[0]
    return weights().detach(), bool(gradient.abs().max() <= 1e-6)


def final_layer_gap(
    model: nn.Module,
    data: DataLike,
    *,
    masks: Mapping[str, torch.Tensor] | None = None,
    loss: str = "auto",
    final_layer: str | None = None,
    batch_size: int = 1024,
    max_samples: int | None = 20_000,
    max_iter: int = 500,
    ridge: float = DEFAULT_RIDGE,
) -> FinalLayerGapResult:
    """Current, masked-optimal and dense-optimal objective of the final layer with its input features fixed.

    Args:
        model: the (pruned) network; run in eval mode through ``functional_call`` at the masked point.
        data: the samples whose features are captured (at most ``max_samples``; they are held in memory,
            ``max_samples x features`` floats in float64).
        masks: default the model's own.
        loss: ``"mse"`` (closed-form least squares per row), ``"cross_entropy"`` (L-BFGS) or ``"auto"``.
        final_layer: the classifier's weight name; default ``structure.final_layer_name``.
        max_iter: L-BFGS iterations per solve (cross-entropy only).
        ridge: the ridge of the objective, on weights in units of each feature's RMS (module docstring);
            0 solves the plain problem.

    Returns:
        A frozen :class:`FinalLayerGapResult`.

    Example:
        >>> import torch
        >>> from prune_landscape import models
        >>> net = models.mlp([4, 16, 3])
        >>> data = (torch.randn(40, 4), torch.randn(40, 3))
        >>> gap = final_layer_gap(net, data)
        >>> gap.current >= gap.masked_optimum >= gap.dense_optimum - 1e-9
        True
    """
    if max_iter < 1:
        raise ValueError(f"max_iter must be a positive int, got {max_iter}")
    if not isinstance(ridge, (int, float)) or not ridge >= 0 or not math.isfinite(ridge):
        raise ValueError(f"ridge must be a finite number >= 0, got {ridge!r}")
    loss = resolve_loss(loss, data)
    kept = KeptParameters.from_model(model, masks)
    if final_layer is None:
        with probing(model):  # the structure pass runs a forward: keep the prune hooks' attributes intact
            final_layer = final_layer_name(model, first_batch(data)[0][:1].to(kept.device))
    name = final_layer
    module, attr = find_parameter(model, name)
    if not isinstance(module, nn.Linear):
        raise ValueError(f"final layer {name!r} must be an nn.Linear, got {type(module).__name__}")
    functional = {v: k for k, v in kept.user_names.items()}
    weight_key = functional.get(name)
    bias_key = functional.get(name.rpartition(".")[0] + ".bias" if "." in name else "bias")
    support = kept.masks[weight_key].cpu() if weight_key in kept.masks else torch.ones(module.weight.shape, dtype=torch.bool)
    batches = Batches(data, batch_size, max_samples, kept.device)

    captured: list[torch.Tensor] = []
    targets: list[torch.Tensor] = []
    handle = module.register_forward_pre_hook(lambda _m, args: captured.append(args[0].detach().reshape(args[0].shape[0], -1)))
    try:
        with probing(model), torch.no_grad():
            dtype = next(iter(kept.values.values())).dtype
            for x, y in batches:
                # Inputs in another float dtype than the model (float64 data, float32 net) are cast to it.
                functional_call(model, kept.values, (x.to(dtype) if x.is_floating_point() else x,))
                targets.append(y.detach())
    finally:
        handle.remove()
    features = torch.cat(captured).cpu().double()
    labels = torch.cat(targets).cpu()
    weight = (kept.values[weight_key] if weight_key else module.weight.detach()).cpu().double()
    bias = kept.values[bias_key].cpu().double() if bias_key else None
    outputs = weight.shape[0]
    # Weights are measured in units of each feature's RMS (zero features keep scale 1): a rescaled
    # feature is then the same problem, and the ridge means the same thing on every network.
    scale = features.pow(2).mean(0).sqrt()
    scale = torch.where(scale > 0, scale, torch.ones_like(scale))
    features = features / scale
    weight = weight * scale
    # The bias is one more always-kept, unpenalised column on a constant feature.
    design = torch.cat([features, torch.ones(features.shape[0], 1, dtype=torch.float64)], 1) if bias is not None else features
    full_support = torch.cat([support, torch.ones(outputs, 1, dtype=torch.bool)], 1) if bias is not None else support
    start = torch.cat([weight, bias.reshape(-1, 1)], 1) if bias is not None else weight
    penalised = torch.arange(design.shape[1]) < features.shape[1]
    count = features.shape[0]

    def penalty(w: torch.Tensor) -> float:
        return 0.5 * ridge * float((w[:, penalised] ** 2).sum())

    if loss == "mse":
        if labels.is_floating_point():
            y = labels.double().reshape(labels.shape[0], -1)
        else:
            y = F.one_hot(labels.long(), outputs).double()
        if y.shape[1] != outputs:
            raise ValueError(f"targets have {y.shape[1]} columns, expected {outputs} (the final layer's outputs)")

        def objective(w: torch.Tensor) -> float:
            return float(F.mse_loss(design @ w.T, y)) + penalty(w)

        # Row k: (1/(n K)) ||A w - y_k||^2 + ridge/2 ||w_pen||^2  ==  ||A w - y_k||^2 + ||sqrt(n K ridge / 2) w_pen||^2.
        rows_penalty = None
        if ridge > 0:
            rows_penalty = penalised.double() * math.sqrt(count * outputs * ridge / 2)
        with _few_threads(design.numel()):
            masked = _least_squares_rows(design, y, full_support, rows_penalty)
            dense = _least_squares_rows(design, y, torch.ones_like(full_support), rows_penalty)
        current, masked_value, dense_value, converged = objective(start), objective(masked), objective(dense), True
        null = float(((y - y.mean(0)) ** 2).mean()) if bias is not None else float((y**2).mean())
    else:
        labels = labels.long()

        def objective(w: torch.Tensor) -> float:
            return float(F.cross_entropy(design @ w.T, labels)) + penalty(w)

        masked, converged_masked = _cross_entropy_fit(design, labels, full_support, start, max_iter, penalised, ridge)
        # Starting the dense solve at the masked optimum makes dense <= masked hold even when stopped early.
        dense, converged_dense = _cross_entropy_fit(design, labels, torch.ones_like(full_support), masked, max_iter,
                                                    penalised, ridge)
        current, masked_value, dense_value = objective(start), objective(masked), objective(dense)
        converged = converged_masked and converged_dense
        if bias is not None:  # the best bias alone predicts the label frequencies: the label entropy
            frequencies = torch.bincount(labels, minlength=outputs).double() / count
            null = float(-(frequencies[frequencies > 0] * frequencies[frequencies > 0].log()).sum())
        else:
            null = math.log(outputs)
    return FinalLayerGapResult(
        current=current,
        masked_optimum=masked_value,
        dense_optimum=dense_value,
        loss=loss,
        final_layer=name,
        final_layer_density=float(support.float().mean()),
        num_samples=int(features.shape[0]),
        num_features=int(features.shape[1]),
        converged=converged,
        ridge=float(ridge),
        null_loss=null,
    )
