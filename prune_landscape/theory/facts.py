"""What the rules read: the facts of one pruned network (activation kind, widths, masks, n, d, data).

Everything a rule of THEORY.md section 3 checks is computed here once, from the model's modules
(activations are read from ``Structure.call_order``, never guessed from names), the masks, and the data.
A fact that cannot be known is None together with a reason, so a rule can say why it did not decide.

Scope: ``"mlp"`` when the forward pass is exactly the composition of its leaf modules (verified
numerically in float64) and those are Linear layers with elementwise activations, Flatten, Dropout or
Identity between them; otherwise ``"head"``: only the final layer (features -> outputs) is modelled.
The MLP theorems are about f(x) for one real input x and one output tensor, so a model fed token ids, several
positional inputs or keyword inputs, or returning a tuple/dict, is ``"head"`` too (its data-dependent facts
are unknown), and so is one whose leaf modules do not compose in call order (recurrences, gates, branches).
In ``"head"`` scope the two-factor closedness pair (previous Linear, head) is checked only when hooks on a
twin show the head reads that Linear's output through the modules between them alone.

Example:
    >>> import torch
    >>> from prune_landscape import models
    >>> facts = collect_facts(models.mlp([3, 5, 2], activation="linear"), n_samples=10)
    >>> facts.scope, facts.activation, facts.hidden_layers, facts.n
    ('mlp', 'linear', 1, 10)
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from prune_landscape.batching import num_samples
from prune_landscape.masks import MaskSet, find_parameter
from prune_landscape.structure import Structure, analyze_structure
from prune_landscape.theory.closedness import ClosednessResult, check_closedness
from prune_landscape.theory.data_facts import DataFacts
from prune_landscape.theory.forward import call_chain, feeds_head, is_plain_chain, single_float_input
from prune_landscape.theory.rank_condition import RankResult, check_rank_condition

__all__ = ["ACTIVATION_KINDS", "NetworkFacts", "collect_facts"]

#: Activation class name -> kind. "smooth" = real-analytic (THEORY.md SMOOTH list); "nonlinear" =
#: continuous and non-polynomial but neither ReLU nor real-analytic.
ACTIVATION_KINDS: dict[str, str] = {
    "Identity": "linear",
    "ReLU": "relu",
    "Tanh": "smooth", "Sigmoid": "smooth", "Softplus": "smooth", "GELU": "smooth", "SiLU": "smooth",
    "LeakyReLU": "nonlinear", "PReLU": "nonlinear", "ELU": "nonlinear", "CELU": "nonlinear", "SELU": "nonlinear",
    "ReLU6": "nonlinear", "Hardtanh": "nonlinear", "Hardswish": "nonlinear", "Mish": "nonlinear",
    "Softsign": "nonlinear", "LogSigmoid": "nonlinear", "Hardsigmoid": "nonlinear",
}
_PASSTHROUGH = {"Flatten", "Dropout", "Dropout1d", "Dropout2d", "Dropout3d", "AlphaDropout"}
_STRUCTURAL = _PASSTHROUGH | {
    "Linear", "Conv1d", "Conv2d", "Conv3d", "ConvTranspose1d", "ConvTranspose2d", "ConvTranspose3d",
    "BatchNorm1d", "BatchNorm2d", "BatchNorm3d", "LayerNorm", "GroupNorm", "MaxPool1d", "MaxPool2d", "MaxPool3d",
    "AvgPool1d", "AvgPool2d", "AvgPool3d", "AdaptiveAvgPool1d", "AdaptiveAvgPool2d", "AdaptiveAvgPool3d",
    "AdaptiveMaxPool1d", "AdaptiveMaxPool2d", "AdaptiveMaxPool3d", "Softmax", "LogSoftmax",
}


@dataclass(frozen=True)
class NetworkFacts:
    """The facts the rules read (see the module docstring). ``None`` means unknown; ``notes`` say why.

    The final layer's fan-ins, width and density are read from ``structure`` (the properties below), never
    copied out of it.
    """

    scope: str
    activation: str
    activation_modules: tuple[str, ...]
    unrecognised: tuple[str, ...]
    hidden_layers: int | None
    hidden_biases: bool | None
    output_bias: bool
    layer_names: tuple[str, ...]
    widths: tuple[int, ...]
    effective_widths: tuple[int, ...]
    d: int | None
    d_y: int
    n: int | None
    whitened: bool | None
    distinct_restricted_inputs: bool | None
    closedness: ClosednessResult | None
    closedness_layers: tuple[str, ...]
    rank: RankResult | None
    weight_decay: float
    sparse_beyond_first: bool | None
    first_layer_non_intersected: bool | None
    dense_layers: tuple[bool, ...]
    structure: Structure = field(repr=False, compare=False)
    notes: Mapping[str, str] = field(default_factory=dict)
    masks: tuple[np.ndarray, ...] = field(default=(), repr=False, compare=False)

    @property
    def fan_in(self) -> tuple[int, ...]:
        """Per-output fan-in of the final layer over effective last-hidden units."""
        return self.structure.fan_in

    @property
    def last_hidden_width(self) -> int:
        """Effective units entering the final layer."""
        return self.structure.last_hidden_width

    @property
    def final_dense(self) -> bool:
        """Every output connects to every effective last-hidden unit."""
        return self.structure.final_layer_dense

    @property
    def linear(self) -> bool:
        return self.activation == "linear"

    @property
    def nonlinear(self) -> bool:
        """A recognised non-linear activation somewhere (``mixed`` counts)."""
        return self.activation in ("relu", "smooth", "nonlinear", "mixed")

    def note(self, key: str) -> str:
        return self.notes.get(key, f"{key} unknown")

    def to_dict(self) -> dict:
        return {
            "scope": self.scope, "activation": self.activation, "activation_modules": list(self.activation_modules),
            "unrecognised_modules": list(self.unrecognised), "hidden_layers": self.hidden_layers,
            "hidden_biases": self.hidden_biases, "output_bias": self.output_bias, "layers": list(self.layer_names),
            "widths": list(self.widths), "effective_widths": list(self.effective_widths), "d": self.d,
            "d_y": self.d_y, "n": self.n, "whitened": self.whitened,
            "distinct_restricted_inputs": self.distinct_restricted_inputs,
            "closedness": None if self.closedness is None else {**self.closedness.to_dict(), "layers": list(self.closedness_layers)},
            "rank_condition": None if self.rank is None else self.rank.to_dict(),
            "weight_decay": self.weight_decay, "notes": dict(self.notes),
        }


@dataclass(frozen=True)
class _Network:
    """What every fact is read from: the model, its structure and masks, its leaf modules in call order."""

    model: nn.Module
    structure: Structure
    masks: MaskSet
    chain: list[tuple[str, nn.Module]]
    example_input: object

    @property
    def classes(self) -> list[str]:
        return [type(m).__name__ for _, m in self.chain]

    @property
    def names(self) -> list[str]:
        return [name for name, _ in self.chain]

    @property
    def unrecognised(self) -> tuple[str, ...]:
        return tuple(sorted({c for c in self.classes if c not in ACTIVATION_KINDS and c not in _STRUCTURAL}))

    def mask(self, weight: str) -> np.ndarray:
        """The bool mask of ``weight`` (all ones when it is not masked)."""
        if weight in self.masks:
            return self.masks[weight].numpy().astype(bool)
        module, _ = find_parameter(self.model, weight)
        return np.ones(tuple(module.weight.shape), bool)


def _gap_kind(names: list[str]) -> str:
    kinds = {ACTIVATION_KINDS.get(c, "unknown") for c in names if c not in _PASSTHROUGH}
    kinds.discard("linear")
    if not kinds:
        return "linear"
    if "unknown" in kinds:
        return "unknown"
    return kinds.pop() if len(kinds) == 1 else "nonlinear"


def _combine(kinds: list[str]) -> str:
    distinct = set(kinds)
    if "unknown" in distinct:
        return "unknown"
    if len(distinct) == 1:
        return distinct.pop()
    return "mixed" if "linear" in distinct else "nonlinear"



def collect_facts(
    model: nn.Module,
    data=None,
    *,
    structure: Structure | None = None,
    masks: MaskSet | None = None,
    n_samples: int | None = None,
    weight_decay: float = 0.0,
    example_input: torch.Tensor | None = None,
    seed: int = 0,
) -> NetworkFacts:
    """Compute :class:`NetworkFacts` for ``model`` under ``masks`` (default: read from the model).

    Args:
        model: the network; left unchanged.
        data: optional DataLike; gives n and enables whitening, distinctness and real-data rank checks.
        structure: a precomputed :func:`~prune_landscape.structure.analyze_structure` result.
        masks: the masks; default ``MaskSet.from_module(model)``.
        n_samples: the training-set size when ``data`` is a subset or absent (overrides ``len(data)``).
        weight_decay: the training's weight decay (rule WD).
        example_input: one input batch, needed for conv first layers.
        seed: seeds the random draw of the rank condition.
    """
    masks = MaskSet.from_module(model) if masks is None else masks
    if structure is None:
        structure = analyze_structure(model, example_input, masks)
    net = _Network(model, structure, masks, call_chain(model, structure), example_input)
    notes: dict[str, str] = {}
    n, data_n = _sample_counts(data, n_samples, notes)
    final_mask = net.mask(structure.final_layer)
    common = _Common(structure=structure, d_y=final_mask.shape[0], n=n, weight_decay=float(weight_decay),
                     output_bias=getattr(model.get_submodule(structure.final.module), "bias", None) is not None,
                     notes=notes)
    positions = _mlp_linear_positions(net)
    if positions is None:
        return _head_facts(net, final_mask, common)
    return _mlp_facts(net, positions, DataFacts.read(data, data_n, n, common.output_bias), seed, common)


@dataclass(frozen=True)
class _Common:
    """The facts both scopes share (the keyword arguments of :class:`NetworkFacts` they have in common)."""

    structure: Structure
    d_y: int
    n: int | None
    weight_decay: float
    output_bias: bool
    notes: dict[str, str]


def _sample_counts(data, n_samples: int | None, notes: dict[str, str]) -> tuple[int | None, int | None]:
    """``(n, samples of data that belong to the training set)``; ``n_samples`` overrides ``len(data)``."""
    data_n = num_samples(data)
    n = n_samples if n_samples is not None else data_n
    if data_n is not None and n_samples is not None and n_samples <= data_n:
        data_n = n_samples  # the first n_samples samples are the training set
    if n is None:
        notes["n"] = "n unknown: pass data or n_samples"
    return n, data_n


def _mlp_linear_positions(net: _Network) -> list[int] | None:
    """Positions of the Linear layers in the call chain when the model is in ``"mlp"`` scope, else None."""
    classes, unrecognised = net.classes, net.unrecognised
    positions = [i for i, c in enumerate(classes) if c == "Linear"]
    mlp_like = (
        bool(positions)
        and net.chain[positions[-1]][0] == net.structure.final.module
        and all(c in ACTIVATION_KINDS or c in _PASSTHROUGH or c == "Linear" or c in unrecognised for c in classes)
        and len({net.chain[i][0] for i in positions}) == len(positions)
        and all(classes[i] in _PASSTHROUGH or classes[i] == "Identity" for i in range(positions[-1] + 1, len(classes)))
    )
    if not mlp_like:
        return None
    first = net.model.get_submodule(net.chain[positions[0]][0])
    example = net.example_input if net.example_input is not None else torch.zeros(2, first.in_features)
    example = single_float_input(example)
    # The MLP theorems model f(x) for one real input x: token ids, several inputs or keyword inputs
    # are outside them, so such a model is modelled from its head only.
    return positions if example is not None and is_plain_chain(net.model, net.chain, example[:2]) else None


def _head_facts(net: _Network, final_mask: np.ndarray, common: _Common) -> NetworkFacts:
    """``"head"`` scope: only the final layer (features -> outputs) is modelled."""
    notes, structure = common.notes, net.structure
    notes["scope"] = ("the forward pass is not a chain of Linear layers with elementwise activations "
                      "(conv, normalisation, residual or functional ops): only the classifier head is modelled; "
                      "no theorem covers the body")
    unrecognised = net.unrecognised
    acts = tuple(c for c in net.classes if c in ACTIVATION_KINDS and c != "Identity")
    kind = "unknown" if unrecognised else _combine([ACTIVATION_KINDS[c] for c in acts]) if acts else "unknown"
    if unrecognised:
        notes["activation"] = f"unrecognised modules {list(unrecognised)}: activation unknown"
    elif not acts:
        notes["activation"] = "no activation module in the forward pass (functional activations are invisible)"
    closedness, pair = _head_closedness(net, final_mask, notes)
    d_y = common.d_y
    return NetworkFacts(
        scope="head", activation=kind, activation_modules=acts, unrecognised=unrecognised, hidden_layers=None,
        hidden_biases=None, layer_names=(structure.final_layer,), widths=(structure.last_hidden_units, d_y),
        effective_widths=(structure.last_hidden_width, d_y), d=None, whitened=None, distinct_restricted_inputs=None,
        closedness=closedness, closedness_layers=pair, rank=None, sparse_beyond_first=None,
        first_layer_non_intersected=None, dense_layers=(structure.final_layer_dense,), masks=(final_mask,),
        **vars(common),
    )


def _head_closedness(net: _Network, final_mask: np.ndarray,
                     notes: dict[str, str]) -> tuple[ClosednessResult | None, tuple[str, ...]]:
    """The (previous Linear, head) pair's closedness, when the head reads that Linear through elementwise modules."""
    final_module = net.structure.final.module
    before = [name for name, m in net.chain[: net.names.index(final_module)] if not (
        type(m).__name__ in ACTIVATION_KINDS or type(m).__name__ in _PASSTHROUGH)]
    if not before or not isinstance(net.model.get_submodule(before[-1]), nn.Linear):
        return None, ()
    prev = f"{before[-1]}.weight"
    prev_mask = net.mask(prev)
    # The pair (M1, M2) is the product M2 M1 only when the head reads that Linear's output through
    # elementwise modules alone; otherwise (concat, residual, gate) closedness is not defined here.
    if prev_mask.shape[0] == final_mask.shape[1] and feeds_head(net.model, net.chain, before[-1], final_module,
                                                                net.example_input):
        return check_closedness(final_mask, prev_mask), (prev, net.structure.final_layer)
    notes["closedness"] = (f"the head's input is not {before[-1]}'s output through elementwise modules "
                           "alone: the two-factor closedness check does not apply")
    return None, ()


def _mlp_facts(net: _Network, positions: list[int], data: DataFacts, seed: int, common: _Common) -> NetworkFacts:
    """``"mlp"`` scope: every Linear layer, the activations between them, the data's whitening and distinctness."""
    notes, classes = common.notes, net.classes
    linear_names = [net.chain[i][0] for i in positions]
    weights = [f"{name}.weight" for name in linear_names]
    layer_masks = [net.mask(w) for w in weights]
    gaps = [[classes[k] for k in range(a + 1, b)] for a, b in zip(positions[:-1], positions[1:])]
    kind = _combine([_gap_kind(g) for g in gaps]) if gaps else "linear"
    if kind == "unknown":
        notes["activation"] = f"unrecognised activation modules {list(net.unrecognised)}"
    alive = [net.structure.layer(w).alive.numpy() for w in weights]
    widths = (layer_masks[0].shape[1], *(m.shape[0] for m in layer_masks))
    effective = (int(layer_masks[0][alive[0]].any(axis=0).sum()), *(int(a.sum()) for a in alive[:-1]), common.d_y)
    dense_layers = tuple(bool(m.all()) for m in layer_masks)
    m1_alive = layer_masks[0][alive[0]] if len(layer_masks) > 1 else layer_masks[0]
    closedness, pair = None, ()
    if len(layer_masks) >= 2:
        upstream = alive[-3] if len(layer_masks) >= 3 else np.ones(layer_masks[-2].shape[1], bool)
        closedness = check_closedness(layer_masks[-1], layer_masks[-2] & upstream[None, :])
        pair = (weights[-2], weights[-1])
    notes.update(data.notes(one_hidden=len(layer_masks) == 2))
    distinct = data.distinct(layer_masks[0], alive[0]) if len(layer_masks) == 2 else None
    rank = None
    n, fan_in = common.n, net.structure.fan_in
    if kind in ("smooth",) and n is not None and fan_in and min(fan_in) >= n:
        rank = check_rank_condition(net.chain, dict(zip(linear_names, layer_masks)), data.inputs, n, widths[0], seed=seed)
    return NetworkFacts(
        scope="mlp", activation=kind, activation_modules=tuple(c for g in gaps for c in g if c not in _PASSTHROUGH),
        unrecognised=net.unrecognised, hidden_layers=len(layer_masks) - 1,
        hidden_biases=all(net.model.get_submodule(name).bias is not None for name in linear_names[:-1]),
        layer_names=tuple(weights), widths=widths, effective_widths=effective, d=widths[0], whitened=data.whitened,
        distinct_restricted_inputs=distinct, closedness=closedness, closedness_layers=pair, rank=rank,
        sparse_beyond_first=any(not dense for dense in dense_layers[1:]),
        first_layer_non_intersected=bool((m1_alive.sum(axis=0) <= 1).all()) if len(layer_masks) > 1 else None,
        dense_layers=dense_layers, masks=tuple(layer_masks), **vars(common),
    )
