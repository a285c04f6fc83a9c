"""Loss slices along filter-normalised random directions, and linear interpolation between two points.

Directions follow Li et al. 2018 ("Visualizing the Loss Landscape of Neural Nets"), made mask-aware:
Gaussian entries, masked, each output unit's row/filter rescaled to the norm of the same filter of the
*masked* weights; directions for biases and other 1-D tensors (BatchNorm) are zero. Grid points are
evaluated through ``torch.func.functional_call``, one by one or in ``torch.vmap`` chunks, whichever the
first points show to be faster, with eval-mode BatchNorm folded and channels-last images where they agree
with the model (:func:`prune_landscape.probes.batched.fast_forward`); the model is never written. The knobs of each
entry travel together as a frozen :class:`GridOptions` / :class:`SurfaceOptions`; each is still accepted
as a keyword.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from prune_landscape.batching import DataLike
from prune_landscape.layers import current_tensor
from prune_landscape.options import with_keywords
from prune_landscape.probes.batched import batched_losses, check_chunk
from prune_landscape.probes.kept import Batches, KeptParameters, ProbeLoss, probing, resolve_loss

__all__ = [
    "GridOptions",
    "InterpolationResult",
    "SurfaceOptions",
    "SurfaceResult",
    "filter_normalized_direction",
    "interpolate",
    "loss_surface",
]


@dataclass(frozen=True)
class GridOptions:
    """How many points' losses are evaluated: the data streamed once, points ``chunk`` at a time.

    Attributes:
        batch_size, max_samples: the probe set is streamed in batches of ``batch_size`` (at most
            ``max_samples`` samples; None for all).
        chunk: points per vmapped evaluation (memory grows with it); ``"auto"`` fits about 256 MiB of
            activations, at most 32 points, and keeps one-by-one calls when they are faster.
    """

    batch_size: int = 2048
    max_samples: int | None = None
    chunk: int | str = "auto"

    def __post_init__(self):
        check_chunk(self.chunk)


@dataclass(frozen=True)
class SurfaceOptions(GridOptions):
    """:class:`GridOptions` plus the slice's extent and directions.

    Attributes:
        span: half-width of the grid in units of the filter-normalised directions.
        seed: decides the directions.
    """

    span: float = 1.0
    seed: int = 0

    def __post_init__(self):
        super().__post_init__()
        if not self.span > 0:
            raise ValueError(f"span must be > 0, got {self.span}")


@dataclass(frozen=True)
class SurfaceResult:
    """A 1-D or 2-D loss slice; ``losses[i]`` (1-D) or ``losses[i][j]`` (2-D, alpha i, beta j); NaN/inf kept."""

    alphas: tuple[float, ...]
    betas: tuple[float, ...]
    losses: tuple
    center_loss: float
    dims: int
    loss: str
    seed: int

    def to_dict(self) -> dict:
        """A JSON-ready dict (non-finite losses become None)."""
        clean = np.where(np.isfinite(self.array), self.array, np.nan).tolist()
        clean = [[None if math.isnan(v) else v for v in row] for row in clean] if self.dims == 2 else [None if math.isnan(v) else v for v in clean]
        return {"alphas": list(self.alphas), "betas": list(self.betas), "losses": clean,
                "center_loss": self.center_loss, "dims": self.dims, "loss": self.loss, "seed": self.seed}

    @property
    def array(self) -> np.ndarray:
        return np.asarray(self.losses, dtype=np.float64)

    def scalars(self) -> dict[str, float]:
        """Center loss, range over the finite points, the mean rise at the rim and the count of non-finite points."""
        values = self.array
        finite = values[np.isfinite(values)]
        rim = np.concatenate([values[0].ravel(), values[-1].ravel()]) if self.dims == 1 else np.concatenate(
            [values[0], values[-1], values[:, 0], values[:, -1]])
        rim = rim[np.isfinite(rim)]
        return {
            "center_loss": self.center_loss,
            "min_loss": float(finite.min()) if finite.size else math.nan,
            "max_loss": float(finite.max()) if finite.size else math.nan,
            "rim_rise": float(rim.mean() - self.center_loss) if rim.size else math.nan,
            "nonfinite_points": float(values.size - finite.size),
        }

    def figure(self):
        """1-D: the loss curve. 2-D: a contour plot and a surface plot side by side."""
        from matplotlib.figure import Figure

        values = np.where(np.isfinite(self.array), self.array, np.nan)
        if self.dims == 1:
            fig = Figure(figsize=(5, 3.2))
            ax = fig.add_subplot()
            ax.plot(self.alphas, values, marker=".")
            ax.set_xlabel("alpha (filter-normalised direction)")
            ax.set_ylabel(f"{self.loss} loss")
            fig.tight_layout()
            return fig
        fig = Figure(figsize=(10, 4))
        a, b = np.meshgrid(self.alphas, self.betas, indexing="ij")
        ax = fig.add_subplot(1, 2, 1)
        contour = ax.contour(a, b, np.ma.masked_invalid(values), levels=20, cmap="viridis")
        fig.colorbar(contour, ax=ax)
        ax.plot([0], [0], "k+")
        ax.set_xlabel("alpha")
        ax.set_ylabel("beta")
        ax3 = fig.add_subplot(1, 2, 2, projection="3d")
        ax3.plot_surface(a, b, np.ma.masked_invalid(values), cmap="viridis", linewidth=0)
        ax3.set_xlabel("alpha")
        ax3.set_ylabel("beta")
        fig.tight_layout()
        return fig


@dataclass(frozen=True)
class InterpolationResult:
    """Loss along ``(1 - t) * start + t * end``.

    Attributes:
        barrier_height: ``max_t [L(t) - ((1 - t) L(0) + t L(1))]`` (Frankle et al. 2020); 0 means no barrier.
    """

    ts: tuple[float, ...]
    losses: tuple[float, ...]
    barrier_height: float
    loss: str

    def to_dict(self) -> dict:
        """A JSON-ready dict (non-finite losses become None)."""
        return {"ts": list(self.ts), "losses": [v if math.isfinite(v) else None for v in self.losses],
                "barrier_height": self.barrier_height, "loss": self.loss}

    def scalars(self) -> dict[str, float]:
        """Endpoint losses, the largest loss on the path and the barrier height."""
        return {"start_loss": self.losses[0], "end_loss": self.losses[-1],
                "max_loss": float(np.nanmax(self.losses)), "barrier_height": self.barrier_height}

    def figure(self):
        """The loss along the path."""
        from matplotlib.figure import Figure

        fig = Figure(figsize=(5, 3.2))
        ax = fig.add_subplot()
        ax.plot(self.ts, self.losses, marker=".")
        ax.plot([self.ts[0], self.ts[-1]], [self.losses[0], self.losses[-1]], "k--", lw=0.8)
        ax.set_xlabel("t (0 = start, 1 = end)")
        ax.set_ylabel(f"{self.loss} loss")
        ax.set_title(f"barrier height {self.barrier_height:.4g}")
        fig.tight_layout()
        return fig


def filter_normalized_direction(kept: KeptParameters, generator: torch.Generator) -> dict[str, torch.Tensor]:
    """A masked Gaussian direction, each output unit's filter scaled to that filter's masked-weight norm.

    Tensors with fewer than two dimensions (biases, BatchNorm) get a zero direction (Li et al. 2018).
    """
    direction = {}
    for name in kept.names:
        value = kept.values[name]
        if value.dim() < 2:
            direction[name] = torch.zeros_like(value)
            continue
        noise = torch.randn(value.shape, generator=generator, dtype=torch.float64).to(value.device, value.dtype)
        if name in kept.masks:
            noise = noise * kept.masks[name]
        # Norms over everything but the output dimension: one per row (linear) or filter (conv).
        target = value.reshape(value.shape[0], -1).norm(dim=1)
        current = noise.reshape(value.shape[0], -1).norm(dim=1)
        scale = torch.where(current > 0, target / current.clamp_min(torch.finfo(value.dtype).tiny), torch.zeros_like(target))
        direction[name] = noise * scale.reshape(-1, *([1] * (value.dim() - 1)))
    return direction


def loss_surface(
    model: nn.Module,
    data: DataLike,
    steps: int = 21,
    dims: int = 2,
    *,
    masks: Mapping[str, torch.Tensor] | None = None,
    loss: str = "auto",
    options: SurfaceOptions | None = None,
    **knobs: Any,
) -> SurfaceResult:
    """The loss on a ``steps`` (x ``steps``) grid ``theta + alpha d1 (+ beta d2)``, alpha, beta in [-span, span].

    Args:
        model: the (pruned) network; evaluated in eval mode, returned unchanged.
        data: the probe set, streamed once.
        steps: grid points per axis (odd values put a point exactly at the centre).
        dims: 1 or 2.
        masks: default the model's own.
        loss: ``"cross_entropy"``, ``"mse"`` or ``"auto"``.
        options: a :class:`SurfaceOptions` (span, seed, batch_size, max_samples, chunk).
        **knobs: any :class:`SurfaceOptions` field by name, overriding ``options``.

    Returns:
        A frozen :class:`SurfaceResult`.

    Example:
        >>> import torch
        >>> from prune_landscape import models
        >>> net = models.mlp([3, 8, 2])
        >>> data = (torch.randn(32, 3), torch.randint(0, 2, (32,)))
        >>> surface = loss_surface(net, data, steps=5, dims=1)
        >>> abs(surface.losses[2] - surface.center_loss) < 1e-6
        True
    """
    if dims not in (1, 2):
        raise ValueError(f"dims must be 1 or 2, got {dims!r}")
    if not isinstance(steps, int) or steps < 2:
        raise ValueError(f"steps must be an int >= 2, got {steps!r}")
    options = with_keywords(SurfaceOptions, options, knobs, where="loss_surface")
    loss = resolve_loss(loss, data)
    kept = KeptParameters.from_model(model, masks)
    batches = Batches(data, options.batch_size, options.max_samples, kept.device)
    generator = torch.Generator().manual_seed(int(options.seed))
    directions = [filter_normalized_direction(kept, generator) for _ in range(dims)]
    axis = torch.linspace(-options.span, options.span, steps, dtype=torch.float64)
    with probing(model):
        values = batched_losses(model, kept, kept.values, directions, _grid(axis, dims), batches, ProbeLoss(loss),
                                options.chunk)
    grid = values[1:].reshape((steps,) * dims)
    return SurfaceResult(
        alphas=tuple(axis.tolist()),
        betas=tuple(axis.tolist()) if dims == 2 else (),
        losses=tuple(grid.tolist()) if dims == 1 else tuple(tuple(row) for row in grid.tolist()),
        center_loss=float(values[0]),
        dims=dims,
        loss=loss,
        seed=int(options.seed),
    )


def _grid(axis: torch.Tensor, dims: int) -> torch.Tensor:
    """The centre (exactly zero), then every grid point (alpha-major in 2-D): one row of coefficients each."""
    if dims == 1:
        coefficients = axis.unsqueeze(1)
    else:
        alpha, beta = torch.meshgrid(axis, axis, indexing="ij")
        coefficients = torch.stack([alpha.reshape(-1), beta.reshape(-1)], dim=1)
    return torch.cat([torch.zeros(1, dims, dtype=torch.float64), coefficients])


def _point(model: nn.Module, kept: KeptParameters, point: nn.Module | Mapping[str, torch.Tensor], role: str) -> dict[str, torch.Tensor]:
    """``point`` (a module of the same architecture or a name -> tensor mapping) as masked functional values."""
    tensors: dict[str, torch.Tensor] = {}
    if isinstance(point, nn.Module):
        named = dict(point.named_parameters())
        for name, value in kept.values.items():
            user = kept.user_names[name]
            if name in named and not name.endswith("_orig"):
                tensors[name] = named[name].detach()
            else:  # read what the forward pass uses (orig * mask when `point` is pruned with hooks)
                module_name, _, attr = user.rpartition(".")
                try:
                    module = point.get_submodule(module_name) if module_name else point
                    tensors[name] = current_tensor(module, attr)
                except AttributeError as error:
                    raise ValueError(f"{role} has no parameter {user!r} (the model's architecture must match)") from error
    else:
        for name in kept.names:
            user = kept.user_names[name]
            key = name if name in point else user if user in point else None
            if key is None:
                raise ValueError(f"{role} lacks parameter {user!r}; expected keys like {list(kept.user_names.values())[:4]}")
            tensors[name] = point[key].detach()
    out = {}
    for name, value in kept.values.items():
        tensor = tensors[name].to(value.device, value.dtype)
        if tensor.shape != value.shape:
            raise ValueError(f"{role}: {kept.user_names[name]!r} has shape {tuple(tensor.shape)}, expected {tuple(value.shape)}")
        out[name] = tensor * kept.masks[name] if name in kept.masks else tensor
    return out


def interpolate(
    model: nn.Module,
    start: nn.Module | Mapping[str, torch.Tensor],
    end: nn.Module | Mapping[str, torch.Tensor],
    data: DataLike,
    steps: int = 21,
    *,
    masks: Mapping[str, torch.Tensor] | None = None,
    loss: str = "auto",
    options: GridOptions | None = None,
    **knobs: Any,
) -> InterpolationResult:
    """Loss of ``model``'s architecture along the segment from ``start`` to ``end`` (both masked by ``masks``).

    Args:
        model: supplies the architecture, buffers and masks; never written.
        start, end: modules of the same architecture, or mappings from parameter name (``"fc.weight"`` or
            ``"fc.weight_orig"``) to tensor, e.g. the init and the trained weights, or two solutions.
        data: the probe set, streamed once.
        steps: points on the segment, endpoints included.
        masks: default the model's own.
        loss: ``"cross_entropy"``, ``"mse"`` or ``"auto"``.
        options: a :class:`GridOptions` (batch_size, max_samples, chunk).
        **knobs: any :class:`GridOptions` field by name, overriding ``options``.

    Returns:
        A frozen :class:`InterpolationResult`.

    Example:
        >>> import copy, torch
        >>> from prune_landscape import models
        >>> a = models.mlp([3, 8, 2]); b = copy.deepcopy(a); b.init_weights(torch.Generator().manual_seed(1))
        >>> data = (torch.randn(32, 3), torch.randint(0, 2, (32,)))
        >>> len(interpolate(a, a, b, data, steps=5).losses)
        5
    """
    if not isinstance(steps, int) or steps < 2:
        raise ValueError(f"steps must be an int >= 2, got {steps!r}")
    options = with_keywords(GridOptions, options, knobs, where="interpolate")
    loss = resolve_loss(loss, data)
    kept = KeptParameters.from_model(model, masks)
    first, last = _point(model, kept, start, "start"), _point(model, kept, end, "end")
    batches = Batches(data, options.batch_size, options.max_samples, kept.device)
    ts = torch.linspace(0.0, 1.0, steps, dtype=torch.float64)
    # (1 - t) * start + t * end with a zero base: both endpoints are reproduced bit for bit.
    origin = {name: torch.zeros_like(first[name]) for name in kept.names}
    coefficients = torch.stack([1 - ts, ts], dim=1)
    with probing(model):
        values = batched_losses(model, kept, origin, [first, last], coefficients, batches, ProbeLoss(loss), options.chunk)
    t = ts.numpy()
    barrier = float(np.nanmax(values - ((1 - t) * values[0] + t * values[-1])))
    return InterpolationResult(tuple(t.tolist()), tuple(float(v) for v in values), barrier, loss)
