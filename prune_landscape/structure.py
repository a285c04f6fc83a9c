"""The pruned network as a graph: prunable layers, the final layer, alive, dead and UNKNOWN units.

Works on any ``nn.Module`` whose forward runs in eager PyTorch: the answers come from passes through the
model's own modules with generic values (:mod:`prune_landscape.dependence`), not from a model of its
architecture. Units are the output features of a prunable weight: output channels of a conv (axis 1),
the last axis of a Linear / HF Conv1D / fused attention projection applied to ``(batch, tokens,
features)`` or channels-last tensors, the embedding dimension of an embedding; never tokens or pixels.

Semantics. Every parameter gets generic random values on its kept entries (pruned entries are exact
zeros), the input is generic (random floats, random token ids). A unit

* *depends on the input* iff its value changes when the input changes, at some position;
* *reaches the output* iff the output changes when the unit's value changes, at some position;
* is *alive* iff both hold (the final layer's units: iff the first holds), *dead* iff one fails exactly,
  and *UNKNOWN* when a dependence is non-zero but too small to tell from rounding (reported, never guessed).

What that means per kind of operation (all follow from the real forward; nothing is special-cased but
the path-hiding ops in the last rows):

========================  =====================================================================================
operation                 alive / path semantics
========================  =====================================================================================
Linear / Conv / Conv1D    unit j depends on the input iff a kept weight of row j reads a feature that does;
                          a bias alone is a constant, not a path
BatchNorm (eval)          per-channel affine: a constant channel stays constant (dead stays dead)
LayerNorm / GroupNorm     normalises across features: every post-norm feature depends on the input as soon
                          as one pre-norm feature does (through the mean and variance), even a pre-norm unit
                          that is dead; a dead pre-norm unit still has no path *from its weights*
RMSNorm                   x_j / rms(x): a pre-norm unit that is exactly 0 stays 0 (dead); one with a bias
                          depends on the input through rms(x)
gates, products (SE,      a*b depends on the input iff a or b does and neither is exactly 0: a fully pruned
GLU, SwiGLU)              gate row with a bias gives sigmoid(bias) != 0, so the channel is NOT cut; without
                          a bias, SiLU(0) = 0 cuts it
attention                 softmax(QK^T)V: Q, K and V units depend on the input through their projections;
                          a K or Q unit reaches the output through the scores (gradients are compared in
                          absolute value, so softmax's zero-sum over keys cannot hide them)
residual add, concat      union of the paths of the operands
pooling, reshape,         positions are pooled or moved, units are counted on the feature axis: no effect
permute, flatten          on alive/dead (a flattened Linear input counts each flattened feature)
embeddings                a feature depends on the token ids iff its column has a kept entry (a masked table
                          is read as a generic mixture of rows, so any kept entry is seen)
recurrences (RNN/LSTM/    units are the module's output features; gates and time steps are inside the module
GRU)
ReLU, ReLU6, Hardtanh,    path-preserving substitutes while the analysis runs (leaky ReLU, leaky clamp,
Hardsigmoid, Hardswish,   sigmoid, x*sigmoid(x), average pooling): a unit is not declared dead because one
max-pooling               input happens to make it inactive
========================  =====================================================================================

Fan-in of the final layer counts, per output, the input features that depend on the input and are linked
to it by a kept weight (effective last-hidden units). The final layer is the last prunable layer (in
forward order) whose output reaches the model's output; with tuple/dict outputs pass ``output_transform``
or ``final_layer``. The automatic choice is logged at INFO (logger ``prune_landscape.structure``).

Example:
    >>> import torch
    >>> from prune_landscape import analyze_structure, models
    >>> s = analyze_structure(models.mlp([4, 8, 3]), torch.zeros(1, 4))
    >>> s.final_layer, s.final_layer_dense, s.fan_in_min
    ('fc2.weight', True, 8)
"""

from __future__ import annotations

import logging
import statistics
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from prune_landscape.dependence import run_dependence
from prune_landscape import layers
from prune_landscape.layers import PrunableWeight, Scope, current_tensor, prunable_weights
from prune_landscape.masks import MaskSet

__all__ = ["LayerStructure", "Structure", "analyze_structure", "final_layer_name"]


@dataclass(frozen=True)
class LayerStructure:
    """One prunable layer under its mask.

    Attributes:
        name: the weight's parameter name (``"blocks.0.conv1.weight"``).
        module: the module's name (``"blocks.0.conv1"``).
        kind: ``"linear"``, ``"conv"``, ``"embedding"`` or ``"recurrent"``.
        shape: the weight's shape.
        kept: kept weights; ``total``: all weights; ``density``: their ratio.
        units: output units (neurons or channels); ``alive_units`` of them carry an input-to-output path.
        alive: bool tensor over the output units.
        unknown_units: units the analysis cannot decide (neither alive nor dead; see the module docstring).
        unknown: bool tensor over the output units marking those (None when there are none).
    """

    name: str
    module: str
    kind: str
    shape: tuple[int, ...]
    kept: int
    total: int
    density: float
    units: int
    alive_units: int
    alive: torch.Tensor = field(repr=False, compare=False)
    unknown_units: int = 0
    unknown: torch.Tensor | None = field(default=None, repr=False, compare=False)

    @property
    def dead_units(self) -> int:
        """Output units certainly on no input-to-output path (UNKNOWN ones excluded)."""
        return self.units - self.alive_units - self.unknown_units

    @property
    def collapsed(self) -> bool:
        """True when no unit of the layer is alive and none is UNKNOWN."""
        return self.alive_units == 0 and self.unknown_units == 0

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready fields (the ``alive`` tensor is summarised by its counts)."""
        return {
            "name": self.name,
            "module": self.module,
            "kind": self.kind,
            "shape": list(self.shape),
            "kept": self.kept,
            "total": self.total,
            "density": self.density,
            "units": self.units,
            "alive_units": self.alive_units,
            "dead_units": self.dead_units,
            "unknown_units": self.unknown_units,
            "collapsed": self.collapsed,
        }


@dataclass(frozen=True)
class Structure:
    """Structure of a pruned network (see :func:`analyze_structure`).

    Attributes:
        layers: prunable layers in forward order; the last one is the final layer.
        final_layer: the final layer's weight name (the last prunable layer the forward pass runs).
        final_layer_dense: every output connects to every effective last-hidden unit.
        fan_in: per-output fan-in of the final layer over effective last-hidden units.
        last_hidden_units: units entering the final layer (channels, or flattened features).
        last_hidden_width: effective ones among them (a forward path in and a kept weight out).
        dead_units: layer weight name -> dead output units, for every layer.
        collapsed_layers: weight names of layers with no alive unit.
        connected: some output carries a path from the input.
        call_order: ``(module name, class name)`` of every leaf module in the order the forward ran them;
            the audit reads activations from it.
        inferred: the masks were inferred from exact zeros.
        unknown_units: layer weight name -> units the analysis cannot decide (only layers with some).
        final_layer_source: ``"auto"`` (last prunable layer on the output's path) or ``"explicit"``.
        precision: the dtype of the generic passes (``"float64"`` or ``"float32"``).
    """

    layers: tuple[LayerStructure, ...]
    final_layer: str
    final_layer_dense: bool
    fan_in: tuple[int, ...]
    last_hidden_units: int
    last_hidden_width: int
    dead_units: Mapping[str, int]
    collapsed_layers: tuple[str, ...]
    connected: bool
    call_order: tuple[tuple[str, str], ...]
    inferred: bool = False
    unknown_units: Mapping[str, int] = field(default_factory=dict)
    final_layer_source: str = "auto"
    precision: str = "float64"

    @property
    def total_unknown_units(self) -> int:
        """UNKNOWN units over all layers."""
        return int(sum(self.unknown_units.values()))

    @property
    def final(self) -> LayerStructure:
        """The final layer's :class:`LayerStructure`."""
        return self.layers[-1]

    @property
    def final_layer_density(self) -> float:
        """Density of the final layer's weight."""
        return self.final.density

    @property
    def fan_in_min(self) -> int:
        """Smallest per-output fan-in of the final layer."""
        return min(self.fan_in)

    @property
    def fan_in_median(self) -> float:
        """Median per-output fan-in of the final layer."""
        return float(statistics.median(self.fan_in))

    @property
    def fan_in_max(self) -> int:
        """Largest per-output fan-in of the final layer."""
        return max(self.fan_in)

    @property
    def total_dead_units(self) -> int:
        """Dead units over all layers (final-layer outputs included)."""
        return int(sum(self.dead_units.values()))

    @property
    def num_kept(self) -> int:
        """Kept prunable weights."""
        return sum(layer.kept for layer in self.layers)

    @property
    def num_total(self) -> int:
        """All prunable weights."""
        return sum(layer.total for layer in self.layers)

    @property
    def density(self) -> float:
        """Global density over the prunable weights."""
        return self.num_kept / self.num_total

    def layer(self, name: str) -> LayerStructure:
        """The layer whose weight (``"fc.weight"``) or module (``"fc"``) is ``name``."""
        for layer in self.layers:
            if name in (layer.name, layer.module):
                return layer
        raise KeyError(f"no prunable layer named {name!r}; layers: {[layer.name for layer in self.layers]}")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary with stable keys."""
        return {
            "final_layer": {
                "name": self.final_layer,
                "dense": self.final_layer_dense,
                "density": self.final_layer_density,
                "fan_in": {"min": self.fan_in_min, "median": self.fan_in_median, "max": self.fan_in_max},
                "fan_in_per_output": list(self.fan_in),
                "last_hidden_units": self.last_hidden_units,
                "last_hidden_width": self.last_hidden_width,
            },
            "density": self.density,
            "kept": self.num_kept,
            "total": self.num_total,
            "dead_units": dict(self.dead_units),
            "unknown_units": dict(self.unknown_units),
            "final_layer_source": self.final_layer_source,
            "precision": self.precision,
            "collapsed_layers": list(self.collapsed_layers),
            "connected": self.connected,
            "inferred": self.inferred,
            "layers": [layer.to_dict() for layer in self.layers],
        }

    def table(self) -> str:
        """A fixed-width console table: the headline, then one row per layer."""
        verdict = "DENSE" if self.final_layer_dense else "SPARSE"
        lines = [
            f"final layer {self.final_layer}: {verdict}, density {self.final_layer_density:.3f}, "
            f"per-output fan-in min/median/max {self.fan_in_min}/{self.fan_in_median:g}/{self.fan_in_max} "
            f"of {self.last_hidden_width} effective last-hidden units ({self.last_hidden_units} in all)"
            + (" [chosen automatically; pass final_layer= to change]" if self.final_layer_source == "auto" else ""),
            f"global density {self.density:.4f} ({self.num_kept:,} of {self.num_total:,} weights); "
            f"dead units {self.total_dead_units}"
            + (f"; UNKNOWN units {self.total_unknown_units}" if self.total_unknown_units else "")
            + f"; collapsed layers: {', '.join(self.collapsed_layers) or 'none'}"
            + ("" if self.connected else "; NO input-to-output path"),
            "",
        ]
        width = max(len(layer.name) for layer in self.layers)
        header = f"{'layer':<{width}}  {'kind':<9} {'shape':<18} {'kept':>10} {'density':>8} {'alive':>11}"
        lines += [header, "-" * len(header)]
        for layer in self.layers:
            alive = f"{layer.alive_units}/{layer.units}"
            flag = "  COLLAPSED" if layer.collapsed else (f"  ({layer.unknown_units} UNKNOWN)" if layer.unknown_units else "")
            shape = "x".join(map(str, layer.shape))
            lines.append(
                f"{layer.name:<{width}}  {layer.kind:<9} {shape:<18} {layer.kept:>10,} {layer.density:>8.4f} {alive:>11}{flag}"
            )
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.table()


_LOG = logging.getLogger("prune_landscape.structure")
#: Parameter count up to which the passes run in float64 (above: float32, the cost of a plain forward matters).
FLOAT64_MAX_PARAMETERS = 2_000_000
#: Relative size below which a non-zero dependence is UNKNOWN rather than a path (per precision).
_TOLERANCE = {torch.float64: 1e-10, torch.float32: 1e-6}

_KIND_OF_CALL = {"linear": "linear", "conv": "conv", "embedding": "embedding", "recurrent": "recurrent"}


def _default_input(model: nn.Module, weights: list[PrunableWeight]) -> torch.Tensor:
    module = model.get_submodule(weights[0].module) if weights[0].module else model
    if isinstance(module, nn.Linear):
        return torch.zeros(1, module.in_features)
    raise ValueError(
        f"analyze_structure needs an example_input for a model whose first prunable layer is "
        f"{type(module).__name__} (expected a tensor such as torch.zeros(1, 3, 32, 32), a tuple of positional "
        f"arguments or a dict of keyword arguments), got None"
    )


def _tristate(values: torch.Tensor, tolerance: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(certainly non-zero, undecidable) per unit: exact zeros are structural, tiny values UNKNOWN."""
    reference = float(values.max()) if values.numel() else 0.0
    certain = values > tolerance * reference
    unknown = (values > 0) & ~certain
    return certain, unknown


def _resolve_final(name: str, weights: list[PrunableWeight]) -> PrunableWeight:
    for weight in weights:
        owners = (weight.name, *weight.aliases)
        if name in owners or name in {o.rpartition(".")[0] for o in owners}:
            return weight
    raise ValueError(f"final_layer {name!r} is not a prunable layer; expected one of {[w.name for w in weights]}")


def _precision(model: nn.Module, precision: str) -> torch.dtype:
    if precision == "float64":
        return torch.float64
    if precision == "float32":
        return torch.float32
    if precision != "auto":
        raise ValueError(f"precision must be 'auto', 'float64' or 'float32', got {precision!r}")
    count = sum(p.numel() for p in model.parameters())
    return torch.float64 if count <= FLOAT64_MAX_PARAMETERS else torch.float32


def _connections(weight: PrunableWeight, module: nn.Module, mask: torch.Tensor) -> torch.Tensor:
    """(output units x input features) bool: some kept weight links them."""
    if weight.kind == "conv" and getattr(module, "groups", 1) != 1:
        raise ValueError(f"grouped final layers are not supported, got groups={module.groups} in {weight.name!r}")
    if weight.unit_axis == 1:
        mask = mask.transpose(0, 1)
    if mask.dim() == 2:
        return mask.contiguous()
    return mask.reshape(mask.shape[0], mask.shape[1], -1).any(dim=2)


def _row_counts(matrix: torch.Tensor) -> torch.Tensor:
    """True entries per row of a 2-D bool tensor, as int64.

    A vocabulary-sized head is a 50,000 x 768 bool matrix; torch's bool reductions take ~0.15 s on it. Here
    each run of 8 bools is read as one int64 whose 8 bytes are 0 or 1, the words of a row are summed (each
    byte lane collects at most 255 ones, so lanes never carry into each other), and the 8 lanes are added.
    """
    rows, cols = matrix.shape
    if cols % 8 or cols // 8 > 255 or not matrix.is_contiguous() or matrix.storage_offset() % 8:
        return torch.count_nonzero(matrix, dim=1)
    lanes = matrix.view(torch.uint8).view(torch.int64).sum(dim=1)
    return lanes.view(torch.uint8).reshape(rows, 8).sum(dim=1)


def analyze_structure(
    model: nn.Module,
    example_input: Any = None,
    masks: MaskSet | Mapping[str, torch.Tensor] | None = None,
    *,
    final_layer: str | None = None,
    output_transform: Callable[[Any], torch.Tensor] | None = None,
    prunable: Scope = "layers",
    precision: str = "auto",
    seed: int = 0,
) -> Structure:
    """Analyse a pruned network: alive, dead and UNKNOWN units, collapsed layers, the final layer's fan-in.

    Semantics (per op kind) are in the module docstring; the mechanism in :mod:`prune_landscape.dependence`.

    Args:
        model: any ``nn.Module``; never changed (parameters, parametrizations, hooks, ties, mode).
        example_input: how to feed the model: a tensor (its first sample is used), a tuple of positional
            arguments, or a dict of keyword arguments; token ids are integer tensors (positional argument 0
            or a key ending in ``input_ids``). Only shapes, dtypes and non-id integer tensors (attention
            masks, offsets) are used; values are replaced by generic ones. May be omitted when the first
            prunable layer is Linear.
        masks: the masks to analyse; default ``MaskSet.from_module(model)``. Prunable weights without a
            mask count as dense.
        final_layer: the head's weight or module name, when the automatic choice (the last prunable layer
            on the output's path, logged at INFO) is not the one meant.
        output_transform: the model's raw output -> "the" output tensor; default: the tensor itself, the
            ``logits`` of a dict / HF ModelOutput, else the first floating tensor found.
        prunable: the prunable set, as in ``pl.prune``: ``"layers"`` (Linear, Conv, fused attention
            projections, HF Conv1D) or ``"all"`` (plus embeddings and recurrent weights); masks naming
            weights outside ``"layers"`` switch to ``"all"``. See :mod:`prune_landscape.layers`.
        precision: ``"auto"`` (float64 up to ``FLOAT64_MAX_PARAMETERS`` parameters, float32 above),
            ``"float64"`` or ``"float32"``.
        seed: seeds the generic values.

    Returns:
        A frozen :class:`Structure`.

    Raises:
        ValueError: if the model has no prunable layer, a mask does not fit, or the final layer is unknown.
    """
    weights = prunable_weights(model, scope=prunable)
    mask_set = MaskSet.for_model(model, masks)
    known = {owner: w for w in weights for owner in (w.name, *w.aliases)}
    if prunable == "layers" and any(name not in known for name in mask_set):
        extended = prunable_weights(model, scope="all")
        if all(name in {o for w in extended for o in (w.name, *w.aliases)} for name in mask_set):
            weights = extended
            known = {owner: w for w in weights for owner in (w.name, *w.aliases)}
    canonical_masks = {known[name].name if name in known else name: mask for name, mask in mask_set.items()}
    if example_input is None:
        example_input = _default_input(model, weights)
    if isinstance(example_input, torch.Tensor) and example_input.dim() >= 2:
        example_input = example_input[:1]
    dtype = _precision(model, precision)
    try:
        result = run_dependence(model, example_input, weights, canonical_masks, output_transform=output_transform,
                                dtype=dtype, seed=seed)
    except RuntimeError as error:
        # Tensors the model keeps outside parameters and buffers stay in their dtype: retry in float32.
        if dtype != torch.float64 or not any(w in str(error) for w in ("dtype", "Double", "double", "scalar type")):
            raise
        dtype = torch.float32
        result = run_dependence(model, example_input, weights, canonical_masks, output_transform=output_transform,
                                dtype=dtype, seed=seed)
    tolerance = _TOLERANCE[dtype]

    calls_of: dict[str, list] = {}
    for record in result.calls:
        calls_of.setdefault(record.weight, []).append(record)
    by_name = {w.name: w for w in weights}

    if final_layer is not None:
        final = _resolve_final(final_layer, weights)
        source = "explicit"
    else:
        reaching = [r for r in result.calls if r.kind in ("linear", "conv") and bool((r.to_selected > 0).any())]
        candidates = reaching or [r for r in result.calls if r.kind in ("linear", "conv")]
        if not candidates:
            raise ValueError(f"no Linear or Conv layer of {type(model).__name__} ran in the forward pass")
        final = by_name[max(candidates, key=lambda r: r.index).weight]
        source = "auto"
        _LOG.info("final layer: %s (automatic: the last prunable layer on the output's path; pass final_layer= to "
                  "choose another)", final.name)
    final_calls = [r for r in calls_of.get(final.name, []) if r.kind == final.kind and r.input_change is not None]
    if not final_calls:
        raise ValueError(f"the final layer {final.name!r} never ran in the forward pass as a {final.kind} layer")

    layers: list[LayerStructure] = []
    first_call: dict[str, int] = {}
    for weight in weights:
        records = [r for r in calls_of.get(weight.name, []) if r.kind == weight.kind] or calls_of.get(weight.name, [])
        owners_ran = any(o.rpartition(".")[0] in result.ran_modules for o in (weight.name, *weight.aliases))
        if not records and not owners_ran:
            continue  # not part of this forward pass (an unused head, a branch not taken)
        module = model.get_submodule(weight.module) if weight.module else model
        mask = mask_set.get(weight.name)
        if mask is None:
            for alias in weight.aliases:
                mask = mask_set.get(alias, mask)
        shape = tuple(current_tensor(module, weight.attr).shape) if mask is None else tuple(mask.shape)
        total = int(torch.Size(shape).numel())
        kept = total if mask is None else int(torch.count_nonzero(mask))
        if records:
            alive = torch.zeros(records[0].from_input.numel(), dtype=torch.bool)
            unsure = torch.zeros_like(alive)
            for record in records:
                depends, depends_unknown = _tristate(record.from_input, tolerance)
                if weight.name == final.name:
                    reaches, reaches_unknown = torch.ones_like(depends), torch.zeros_like(depends)
                else:
                    reaches, reaches_unknown = _tristate(record.to_output, tolerance)
                alive |= depends & reaches
                unsure |= (depends | depends_unknown) & (reaches | reaches_unknown) & ~(depends & reaches)
            unsure &= ~alive
            first_call[weight.name] = min(r.index for r in records)
        else:  # its module ran but the weight was read in a way the pass does not observe (a slice)
            units = shape[weight.unit_axis] if weight.kind in ("linear", "conv") else shape[0]
            alive = torch.zeros(units, dtype=torch.bool)
            unsure = torch.ones(units, dtype=torch.bool)
            first_call[weight.name] = len(result.calls)
        layers.append(
            LayerStructure(
                name=weight.name, module=weight.module, kind=weight.kind, shape=shape, kept=kept, total=total,
                density=kept / total if total else 1.0, units=int(alive.numel()), alive_units=int(alive.sum()),
                alive=alive, unknown_units=int(unsure.sum()), unknown=unsure if bool(unsure.any()) else None,
            )
        )
    layers.sort(key=lambda layer: (layer.name == final.name, first_call[layer.name]))

    final_module = model.get_submodule(final.module) if final.module else model
    final_mask = canonical_masks.get(final.name)
    if final_mask is None:
        final_mask = torch.ones(layers[-1].shape, dtype=torch.bool)
    connections = _connections(final, final_module, final_mask)
    change = final_calls[0].input_change
    for record in final_calls[1:]:
        change = torch.maximum(change, record.input_change)
    fed, fed_unknown = _tristate(change, tolerance)
    if fed.numel() != connections.shape[1]:
        raise ValueError(f"the final layer {final.name!r} reads {fed.numel()} features but its weight has "
                         f"{connections.shape[1]} inputs; pass final_layer= to name the head")
    fed = fed | fed_unknown  # an undecidable input counts as fed: fan-in is an upper bound, flagged by unknown_units
    effective = fed & connections.any(dim=0)
    fan_in = _row_counts(connections if bool(effective.all()) else connections & effective.unsqueeze(0))
    dense = bool(effective.any()) and bool((fan_in == int(effective.sum())).all())
    return Structure(
        layers=tuple(layers),
        final_layer=final.name,
        final_layer_dense=dense,
        fan_in=tuple(fan_in.tolist()),
        last_hidden_units=int(fed.numel()),
        last_hidden_width=int(effective.sum()),
        dead_units={layer.name: layer.dead_units for layer in layers},
        collapsed_layers=tuple(layer.name for layer in layers if layer.collapsed),
        connected=bool(layers[-1].alive_units > 0),
        call_order=result.call_order,
        inferred=mask_set.inferred,
        unknown_units={layer.name: layer.unknown_units for layer in layers if layer.unknown_units},
        final_layer_source=source,
        precision=str(dtype).replace("torch.", ""),
    )


def final_layer_name(
    model: nn.Module,
    example_input: Any = None,
    *,
    output_transform: Callable[[Any], torch.Tensor] | None = None,
) -> str:
    """The head's weight name (the final layer :func:`analyze_structure` chooses), from the cheap forward pass
    of :func:`prune_landscape.layers.final_layer_name`, where it now lives; kept here so old imports work."""
    return layers.final_layer_name(model, example_input, output_transform=output_transform)
