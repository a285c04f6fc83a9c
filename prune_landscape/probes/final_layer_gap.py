"""Final-layer convex gap (THEORY.md section 6): how far the head is from its best on today's features.

With the features entering the final layer fixed, the loss is convex in that layer. Squared loss is
separable by output row, each row a least-squares problem over its own support (plus the bias); with
cross-entropy the rows couple through the softmax, so the masked support is solved jointly by L-BFGS.
``current - masked_optimum`` says whether training is stuck in the head; ``masked_optimum -
dense_optimum`` is the price the sparse final layer pays on these features.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from prune_landscape.batching import DataLike, first_batch
from prune_landscape.masks import find_parameter
from prune_landscape.probes._params import Batches, KeptParameters, probing, resolve_loss
from prune_landscape.structure import final_layer_name

__all__ = ["FinalLayerGapResult", "final_layer_gap"]


@dataclass(frozen=True)
class FinalLayerGapResult:
    """Losses of the final layer on fixed features: as trained, best under its mask, best dense.

    Attributes:
        current: the model's loss (features and final layer as they are).
        masked_optimum: the least loss over final layers with the same mask (bias free).
        dense_optimum: the least loss over dense final layers.
        converged: False when L-BFGS stopped on its iteration budget (cross-entropy on separable
            features has no minimiser: the optimum is an infimum approached as weights grow).
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

    @property
    def head_gap(self) -> float:
        """``current - masked_optimum``: what retraining only the head would still gain."""
        return self.current - self.masked_optimum

    @property
    def sparsity_price(self) -> float:
        """``masked_optimum - dense_optimum``: what the final layer's mask costs on these features."""
        return self.masked_optimum - self.dense_optimum

    def to_dict(self) -> dict:
        """A JSON-ready dict, gaps included."""
        return {**asdict(self), "head_gap": self.head_gap, "sparsity_price": self.sparsity_price}

    def scalars(self) -> dict[str, float]:
        """The three losses and the two gaps."""
        return {"current": self.current, "masked_optimum": self.masked_optimum, "dense_optimum": self.dense_optimum,
                "head_gap": self.head_gap, "sparsity_price": self.sparsity_price,
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


def _least_squares_rows(features: torch.Tensor, targets: torch.Tensor, support: torch.Tensor) -> torch.Tensor:
    """Row k of the result minimises ``||features[:, S_k] w - targets[:, k]||`` on ``S_k = support[k]``."""
    weights = torch.zeros(support.shape, dtype=features.dtype)
    for row in range(support.shape[0]):
        columns = support[row].nonzero().reshape(-1)
        if columns.numel():
            solution = torch.linalg.lstsq(features[:, columns], targets[:, row : row + 1], driver="gelsd").solution
            weights[row, columns] = solution.reshape(-1)
    return weights


def _cross_entropy_fit(features, labels, support, start, max_iter) -> tuple[torch.Tensor, bool]:
    """Minimise mean cross-entropy over weights supported on ``support``, by L-BFGS from ``start``."""
    index = support.reshape(-1).nonzero().reshape(-1)
    free = start.reshape(-1)[index].clone().requires_grad_(True)

    def weights() -> torch.Tensor:
        return torch.zeros(support.numel(), dtype=features.dtype).index_put((index,), free).reshape(support.shape)

    optimizer = torch.optim.LBFGS([free], lr=1.0, max_iter=max_iter, tolerance_grad=1e-9, tolerance_change=1e-15,
                                  history_size=20, line_search_fn="strong_wolfe")

    def closure():
        optimizer.zero_grad()
        value = F.cross_entropy(features @ weights().T, labels)
        value.backward()
        return value

    with torch.enable_grad():
        optimizer.step(closure)
        value = F.cross_entropy(features @ weights().T, labels)
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
) -> FinalLayerGapResult:
    """Current, masked-optimal and dense-optimal loss of the final layer with its input features fixed.

    Args:
        model: the (pruned) network; run in eval mode through ``functional_call`` at the masked point.
        data: the samples whose features are captured (at most ``max_samples``; they are held in memory,
            ``max_samples x features`` floats in float64).
        masks: default the model's own.
        loss: ``"mse"`` (closed-form least squares per row), ``"cross_entropy"`` (L-BFGS) or ``"auto"``.
        final_layer: the classifier's weight name; default ``structure.final_layer_name``.
        max_iter: L-BFGS iterations per solve (cross-entropy only).

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
            for x, y in batches:
                functional_call(model, kept.values, (x,))
                targets.append(y.detach())
    finally:
        handle.remove()
    features = torch.cat(captured).cpu().double()
    labels = torch.cat(targets).cpu()
    weight = (kept.values[weight_key] if weight_key else module.weight.detach()).cpu().double()
    bias = kept.values[bias_key].cpu().double() if bias_key else None
    outputs = weight.shape[0]
    # The bias is one more always-kept column on a constant feature.
    design = torch.cat([features, torch.ones(features.shape[0], 1, dtype=torch.float64)], 1) if bias is not None else features
    full_support = torch.cat([support, torch.ones(outputs, 1, dtype=torch.bool)], 1) if bias is not None else support
    start = torch.cat([weight, bias.reshape(-1, 1)], 1) if bias is not None else weight

    if loss == "mse":
        if labels.is_floating_point():
            y = labels.double().reshape(labels.shape[0], -1)
        else:
            y = F.one_hot(labels.long(), outputs).double()
        if y.shape[1] != outputs:
            raise ValueError(f"targets have {y.shape[1]} columns, expected {outputs} (the final layer's outputs)")

        def objective(w: torch.Tensor) -> float:
            return float(F.mse_loss(design @ w.T, y))

        masked = _least_squares_rows(design, y, full_support)
        dense = _least_squares_rows(design, y, torch.ones_like(full_support))
        current, masked_value, dense_value, converged = objective(start), objective(masked), objective(dense), True
    else:
        labels = labels.long()

        def objective(w: torch.Tensor) -> float:
            return float(F.cross_entropy(design @ w.T, labels))

        masked, converged_masked = _cross_entropy_fit(design, labels, full_support, start, max_iter)
        # Starting the dense solve at the masked optimum makes dense <= masked hold even when stopped early.
        dense, converged_dense = _cross_entropy_fit(design, labels, torch.ones_like(full_support), masked, max_iter)
        current, masked_value, dense_value = objective(start), objective(masked), objective(dense)
        converged = converged_masked and converged_dense
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
    )
