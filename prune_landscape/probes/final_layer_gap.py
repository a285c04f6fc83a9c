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

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from prune_landscape.batching import DataLike, first_batch
from prune_landscape.masks import find_parameter
from prune_landscape.options import with_keywords
from prune_landscape.probes.head_solvers import cross_entropy_fit, few_threads, least_squares_rows
from prune_landscape.probes.kept import Batches, KeptParameters, probing, resolve_loss
from prune_landscape.layers import final_layer_name

__all__ = ["DEFAULT_RIDGE", "FinalLayerGapResult", "GapOptions", "final_layer_gap"]

#: The ridge of the default price (see the module docstring).
DEFAULT_RIDGE = 1e-3


@dataclass(frozen=True)
class GapOptions:
    """How :func:`final_layer_gap` samples the features and solves for the head.

    Attributes:
        batch_size, max_samples: the samples whose features are captured, in batches of ``batch_size``
            (at most ``max_samples``; they are held in memory, ``max_samples x features`` float64 values).
        max_iter: L-BFGS iterations per solve (cross-entropy only).
        ridge: the ridge of the objective, on weights in units of each feature's RMS (module docstring);
            0 solves the plain problem.
    """

    batch_size: int = 1024
    max_samples: int | None = 20_000
    max_iter: int = 500
    ridge: float = DEFAULT_RIDGE

    def __post_init__(self):
        if self.max_iter < 1:
            raise ValueError(f"max_iter must be a positive int, got {self.max_iter}")
        ridge = self.ridge
        if not isinstance(ridge, (int, float)) or not ridge >= 0 or not math.isfinite(ridge):
            raise ValueError(f"ridge must be a finite number >= 0, got {ridge!r}")


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


def final_layer_gap(
    model: nn.Module,
    data: DataLike,
    *,
    masks: Mapping[str, torch.Tensor] | None = None,
    loss: str = "auto",
    final_layer: str | None = None,
    options: GapOptions | None = None,
    **knobs: Any,
) -> FinalLayerGapResult:
    """Current, masked-optimal and dense-optimal objective of the final layer with its input features fixed.

    Args:
        model: the (pruned) network; run in eval mode through ``functional_call`` at the masked point.
        data: the samples whose features are captured.
        masks: default the model's own.
        loss: ``"mse"`` (closed-form least squares per row), ``"cross_entropy"`` (Newton / L-BFGS) or ``"auto"``.
        final_layer: the classifier's weight name (a layer, not a policy); default
            ``structure.final_layer_name``.
        options: a :class:`GapOptions` (batch_size, max_samples, max_iter, ridge).
        **knobs: any :class:`GapOptions` field by name, overriding ``options``.

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
    options = with_keywords(GapOptions, options, knobs, where="final_layer_gap")
    loss = resolve_loss(loss, data)
    kept = KeptParameters.from_model(model, masks)
    head = _Head.find(model, data, kept, final_layer)
    features, labels = _capture(model, head.module, kept, Batches(data, options.batch_size, options.max_samples, kept.device))
    problem = _HeadProblem.build(features, head)
    if loss == "mse":
        optima = _mse_optima(problem, labels, options.ridge)
    else:
        optima = _cross_entropy_optima(problem, labels.long(), options.ridge, options.max_iter)
    return FinalLayerGapResult(
        current=optima.current,
        masked_optimum=optima.masked,
        dense_optimum=optima.dense,
        loss=loss,
        final_layer=head.name,
        final_layer_density=float(head.support.float().mean()),
        num_samples=int(features.shape[0]),
        num_features=int(features.shape[1]),
        converged=optima.converged,
        ridge=float(options.ridge),
        null_loss=optima.null,
    )


@dataclass(frozen=True)
class _Head:
    """The final layer: its name, module, masked weight and bias (float64, CPU) and its support."""

    name: str
    module: nn.Linear
    weight: torch.Tensor
    bias: torch.Tensor | None
    support: torch.Tensor

    @classmethod
    def find(cls, model: nn.Module, data: DataLike, kept: KeptParameters, name: str | None) -> _Head:
        if name is None:
            with probing(model):  # the structure pass runs a forward: keep the prune hooks' attributes intact
                name = final_layer_name(model, first_batch(data)[0][:1].to(kept.device))
        module, _ = find_parameter(model, name)
        if not isinstance(module, nn.Linear):
            raise ValueError(f"final layer {name!r} must be an nn.Linear, got {type(module).__name__}")
        functional = {v: k for k, v in kept.user_names.items()}
        weight_key = functional.get(name)
        bias_key = functional.get(name.rpartition(".")[0] + ".bias" if "." in name else "bias")
        support = kept.masks[weight_key].cpu() if weight_key in kept.masks else torch.ones(module.weight.shape, dtype=torch.bool)
        weight = (kept.values[weight_key] if weight_key else module.weight.detach()).cpu().double()
        bias = kept.values[bias_key].cpu().double() if bias_key else None
        return cls(name, module, weight, bias, support)


def _capture(model: nn.Module, head: nn.Module, kept: KeptParameters, batches: Batches) -> tuple[torch.Tensor, torch.Tensor]:
    """The inputs of ``head`` (flattened, float64, CPU) over the probe set at the masked point, and the targets."""
    captured: list[torch.Tensor] = []
    targets: list[torch.Tensor] = []
    handle = head.register_forward_pre_hook(lambda _m, args: captured.append(args[0].detach().reshape(args[0].shape[0], -1)))
    try:
        with probing(model), torch.no_grad():
            dtype = next(iter(kept.values.values())).dtype
            for x, y in batches:
                # Inputs in another float dtype than the model (float64 data, float32 net) are cast to it.
                functional_call(model, kept.values, (x.to(dtype) if x.is_floating_point() else x,))
                targets.append(y.detach())
    finally:
        handle.remove()
    return torch.cat(captured).cpu().double(), torch.cat(targets).cpu()


@dataclass(frozen=True)
class _HeadProblem:
    """The head's convex problem in feature-RMS units: design (bias = a constant column), support, start point.

    Weights are measured in units of each feature's RMS (zero features keep scale 1): a rescaled feature is
    then the same problem, and the ridge means the same thing on every network. The bias is one more
    always-kept, unpenalised column on a constant feature.
    """

    design: torch.Tensor
    support: torch.Tensor
    start: torch.Tensor
    penalised: torch.Tensor
    has_bias: bool

    @classmethod
    def build(cls, features: torch.Tensor, head: _Head) -> _HeadProblem:
        scale = features.pow(2).mean(0).sqrt()
        scale = torch.where(scale > 0, scale, torch.ones_like(scale))
        features, weight = features / scale, head.weight * scale
        design, support, start = features, head.support, weight
        if head.bias is not None:
            design = torch.cat([features, torch.ones(features.shape[0], 1, dtype=torch.float64)], 1)
            support = torch.cat([head.support, torch.ones(weight.shape[0], 1, dtype=torch.bool)], 1)
            start = torch.cat([weight, head.bias.reshape(-1, 1)], 1)
        return cls(design, support, start, torch.arange(design.shape[1]) < features.shape[1], head.bias is not None)

    @property
    def outputs(self) -> int:
        return self.support.shape[0]

    def penalty(self, w: torch.Tensor, ridge: float) -> float:
        """``ridge / 2 * ||W[:, penalised]||^2``."""
        return 0.5 * ridge * float((w[:, self.penalised] ** 2).sum())


@dataclass(frozen=True)
class _Optima:
    current: float
    masked: float
    dense: float
    converged: bool
    null: float


def _mse_optima(problem: _HeadProblem, labels: torch.Tensor, ridge: float) -> _Optima:
    """Squared loss: every row a ridge least-squares problem on its support, solved in closed form."""
    count, outputs = problem.design.shape[0], problem.outputs
    y = labels.double().reshape(labels.shape[0], -1) if labels.is_floating_point() else F.one_hot(labels.long(), outputs).double()
    if y.shape[1] != outputs:
        raise ValueError(f"targets have {y.shape[1]} columns, expected {outputs} (the final layer's outputs)")

    def objective(w: torch.Tensor) -> float:
        return float(F.mse_loss(problem.design @ w.T, y)) + problem.penalty(w, ridge)

    # Row k: (1/(n K)) ||A w - y_k||^2 + ridge/2 ||w_pen||^2  ==  ||A w - y_k||^2 + ||sqrt(n K ridge / 2) w_pen||^2.
    rows_penalty = problem.penalised.double() * math.sqrt(count * outputs * ridge / 2) if ridge > 0 else None
    with few_threads(problem.design.numel()):
        masked = least_squares_rows(problem.design, y, problem.support, rows_penalty)
        dense = least_squares_rows(problem.design, y, torch.ones_like(problem.support), rows_penalty)
    null = float(((y - y.mean(0)) ** 2).mean()) if problem.has_bias else float((y**2).mean())
    return _Optima(objective(problem.start), objective(masked), objective(dense), True, null)


def _cross_entropy_optima(problem: _HeadProblem, labels: torch.Tensor, ridge: float, max_iter: int) -> _Optima:
    """Cross-entropy: the masked support solved jointly (Newton or L-BFGS), then the dense head from there."""

    def objective(w: torch.Tensor) -> float:
        return float(F.cross_entropy(problem.design @ w.T, labels)) + problem.penalty(w, ridge)

    design, penalised = problem.design, problem.penalised
    masked, converged_masked = cross_entropy_fit(design, labels, problem.support, problem.start, max_iter, penalised, ridge)
    # Starting the dense solve at the masked optimum makes dense <= masked hold even when stopped early.
    dense, converged_dense = cross_entropy_fit(design, labels, torch.ones_like(problem.support), masked, max_iter,
                                               penalised, ridge)
    if problem.has_bias:  # the best bias alone predicts the label frequencies: the label entropy
        frequencies = torch.bincount(labels, minlength=problem.outputs).double() / design.shape[0]
        null = float(-(frequencies[frequencies > 0] * frequencies[frequencies > 0].log()).sum())
    else:
        null = math.log(problem.outputs)
    return _Optima(objective(problem.start), objective(masked), objective(dense), converged_masked and converged_dense, null)
