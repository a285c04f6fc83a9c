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

The analysis is two steps: trace connectivity (every layer's alive / dead / UNKNOWN units, from the
passes of :mod:`prune_landscape.dependence`) and the final layer's fan-in (below). The result types live
in :mod:`prune_landscape.structure_types`.

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
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from prune_landscape import layers
from prune_landscape.dependence import CallRecord, DependencePass, run_dependence
from prune_landscape.layers import PrunableWeight, Scope, current_tensor, prunable_weights
from prune_landscape.masks import MaskSet
from prune_landscape.structure_types import LayerStructure, Structure

__all__ = ["LayerStructure", "Structure", "analyze_structure", "final_layer_name"]


_LOG = logging.getLogger("prune_landscape.structure")
#: Parameter count up to which the passes run in float64 (above: float32, the cost of a plain forward matters).
FLOAT64_MAX_PARAMETERS = 2_000_000
#: Relative size below which a non-zero dependence is UNKNOWN rather than a path (per precision).
_TOLERANCE = {torch.float64: 1e-10, torch.float32: 1e-6}


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
    setup = _setup(model, example_input, masks, prunable)
    result = _run(setup, output_transform, _precision(model, precision), seed)
    tolerance = _TOLERANCE[result.dtype]
    final, source = _choose_final(setup, result, final_layer)
    found = _trace_connectivity(setup, result, final, tolerance)
    fan = _final_fan_in(setup, result, final, found[-1].shape, tolerance)
    return _assemble(setup, result, final.name, source, found, fan)


def _assemble(setup: _Setup, result: DependencePass, final: str, source: str, found: tuple[LayerStructure, ...],
              fan: _FanIn) -> Structure:
    return Structure(
        layers=found,
        final_layer=final,
        final_layer_dense=fan.dense,
        fan_in=fan.fan_in,
        last_hidden_units=fan.units,
        last_hidden_width=fan.width,
        dead_units={layer.name: layer.dead_units for layer in found},
        collapsed_layers=tuple(layer.name for layer in found if layer.collapsed),
        connected=bool(found[-1].alive_units > 0),
        call_order=result.call_order,
        inferred=setup.mask_set.inferred,
        unknown_units={layer.name: layer.unknown_units for layer in found if layer.unknown_units},
        final_layer_source=source,
        precision=str(result.dtype).replace("torch.", ""),
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


# ---------------------------------------------------------------------------------------------------
# Inputs: the prunable set, the masks by canonical name, the example
# ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Setup:
    model: nn.Module
    example: Any
    weights: list[PrunableWeight]
    mask_set: MaskSet
    masks: dict[str, torch.Tensor]  # by canonical weight name (a tie's other names resolved)


def _setup(model: nn.Module, example: Any, masks: Any, prunable: Scope) -> _Setup:
    weights = prunable_weights(model, prunable=prunable)
    mask_set = MaskSet.for_model(model, masks)
    known = {owner: w for w in weights for owner in (w.name, *w.aliases)}
    if prunable == "layers" and any(name not in known for name in mask_set):
        extended = prunable_weights(model, prunable="all")
        if all(name in {o for w in extended for o in (w.name, *w.aliases)} for name in mask_set):
            weights = extended
            known = {owner: w for w in weights for owner in (w.name, *w.aliases)}
    canonical = {known[name].name if name in known else name: mask for name, mask in mask_set.items()}
    if example is None:
        example = _default_input(model, weights)
    if isinstance(example, torch.Tensor) and example.dim() >= 2:
        example = example[:1]
    return _Setup(model, example, weights, mask_set, canonical)


def _default_input(model: nn.Module, weights: list[PrunableWeight]) -> torch.Tensor:
    module = model.get_submodule(weights[0].module) if weights[0].module else model
    if isinstance(module, nn.Linear):
        return torch.zeros(1, module.in_features)
    raise ValueError(
        f"analyze_structure needs an example_input for a model whose first prunable layer is "
        f"{type(module).__name__} (expected a tensor such as torch.zeros(1, 3, 32, 32), a tuple of positional "
        f"arguments or a dict of keyword arguments), got None"
    )


def _precision(model: nn.Module, precision: str) -> torch.dtype:
    if precision == "float64":
        return torch.float64
    if precision == "float32":
        return torch.float32
    if precision != "auto":
        raise ValueError(f"precision must be 'auto', 'float64' or 'float32', got {precision!r}")
    count = sum(p.numel() for p in model.parameters())
    return torch.float64 if count <= FLOAT64_MAX_PARAMETERS else torch.float32


def _run(setup: _Setup, output_transform: Callable[[Any], torch.Tensor] | None, dtype: torch.dtype,
         seed: int) -> DependencePass:
    def run(dtype: torch.dtype) -> DependencePass:
        return run_dependence(setup.model, setup.example, setup.weights, setup.masks,
                              output_transform=output_transform, dtype=dtype, seed=seed)

    try:
        return run(dtype)
    except RuntimeError as error:
        # Tensors the model keeps outside parameters and buffers stay in their dtype: retry in float32.
        if dtype != torch.float64 or not any(w in str(error) for w in ("dtype", "Double", "double", "scalar type")):
            raise
        return run(torch.float32)


# ---------------------------------------------------------------------------------------------------
# Trace connectivity: the final layer and every layer's alive / dead / UNKNOWN units
# ---------------------------------------------------------------------------------------------------


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


def _choose_final(setup: _Setup, result: DependencePass, final_layer: str | None) -> tuple[PrunableWeight, str]:
    """The named final layer, else the last Linear/Conv call whose output reaches "the" output."""
    if final_layer is not None:
        return _resolve_final(final_layer, setup.weights), "explicit"
    reaching = [r for r in result.calls if r.kind in ("linear", "conv") and bool((r.to_selected > 0).any())]
    candidates = reaching or [r for r in result.calls if r.kind in ("linear", "conv")]
    if not candidates:
        raise ValueError(f"no Linear or Conv layer of {type(setup.model).__name__} ran in the forward pass")
    by_name = {w.name: w for w in setup.weights}
    final = by_name[max(candidates, key=lambda r: r.index).weight]
    _LOG.info("final layer: %s (automatic: the last prunable layer on the output's path; pass final_layer= to "
              "choose another)", final.name)
    return final, "auto"


def _trace_connectivity(setup: _Setup, result: DependencePass, final: PrunableWeight,
                        tolerance: float) -> tuple[LayerStructure, ...]:
    """Every prunable layer the forward ran, in forward order, the final layer last."""
    calls_of: dict[str, list[CallRecord]] = {}
    for record in result.calls:
        calls_of.setdefault(record.weight, []).append(record)
    found: list[tuple[int, LayerStructure]] = []
    for weight in setup.weights:
        records = [r for r in calls_of.get(weight.name, []) if r.kind == weight.kind] or calls_of.get(weight.name, [])
        owners_ran = any(o.rpartition(".")[0] in result.ran_modules for o in (weight.name, *weight.aliases))
        if not records and not owners_ran:
            continue  # not part of this forward pass (an unused head, a branch not taken)
        first_call = min(r.index for r in records) if records else len(result.calls)
        found.append((first_call, _layer(setup, weight, records, weight.name == final.name, tolerance)))
    found.sort(key=lambda item: (item[1].name == final.name, item[0]))
    return tuple(layer for _, layer in found)


def _layer(setup: _Setup, weight: PrunableWeight, records: list[CallRecord], is_final: bool,
           tolerance: float) -> LayerStructure:
    """One layer's counts and alive / UNKNOWN units (a unit alive in any call is alive)."""
    module = setup.model.get_submodule(weight.module) if weight.module else setup.model
    mask = setup.mask_set.get(weight.name)
    if mask is None:
        for alias in weight.aliases:
            mask = setup.mask_set.get(alias, mask)
    shape = tuple(current_tensor(module, weight.attr).shape) if mask is None else tuple(mask.shape)
    total = int(torch.Size(shape).numel())
    kept = total if mask is None else int(torch.count_nonzero(mask))
    if records:
        alive = torch.zeros(records[0].from_input.numel(), dtype=torch.bool)
        unsure = torch.zeros_like(alive)
        for record in records:
            depends, depends_unknown = _tristate(record.from_input, tolerance)
            if is_final:  # the final layer's units: alive iff they depend on the input
                reaches, reaches_unknown = torch.ones_like(depends), torch.zeros_like(depends)
            else:
                reaches, reaches_unknown = _tristate(record.to_output, tolerance)
            alive |= depends & reaches
            unsure |= (depends | depends_unknown) & (reaches | reaches_unknown) & ~(depends & reaches)
        unsure &= ~alive
    else:  # its module ran but the weight was read in a way the pass does not observe (a slice)
        units = shape[weight.unit_axis] if weight.kind in ("linear", "conv") else shape[0]
        alive = torch.zeros(units, dtype=torch.bool)
        unsure = torch.ones(units, dtype=torch.bool)
    return LayerStructure(
        name=weight.name, module=weight.module, kind=weight.kind, shape=shape, kept=kept, total=total,
        density=kept / total if total else 1.0, units=int(alive.numel()), alive_units=int(alive.sum()),
        alive=alive, unknown_units=int(unsure.sum()), unknown=unsure if bool(unsure.any()) else None,
    )


# ---------------------------------------------------------------------------------------------------
# The final layer's fan-in
# ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _FanIn:
    fan_in: tuple[int, ...]  # per output: kept weights from effective last-hidden units
    units: int  # last-hidden units (features entering the final layer)
    width: int  # effective ones: fed by the input and read by a kept weight
    dense: bool  # every output reads every effective unit


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


def _final_fan_in(setup: _Setup, result: DependencePass, final: PrunableWeight, shape: tuple[int, ...],
                  tolerance: float) -> _FanIn:
    """Per output of the final layer: kept weights from inputs that depend on the model input."""
    final_calls = [r for r in result.calls
                   if r.weight == final.name and r.kind == final.kind and r.input_change is not None]
    if not final_calls:
        raise ValueError(f"the final layer {final.name!r} never ran in the forward pass as a {final.kind} layer")
    module = setup.model.get_submodule(final.module) if final.module else setup.model
    mask = setup.masks.get(final.name)
    connections = _connections(final, module, torch.ones(shape, dtype=torch.bool) if mask is None else mask)
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
    return _FanIn(tuple(fan_in.tolist()), int(fed.numel()), int(effective.sum()), dense)
