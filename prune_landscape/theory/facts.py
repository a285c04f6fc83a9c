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

from prune_landscape.batching import call_model, iter_batches, map_tensors, num_samples
from prune_landscape.masks import MaskSet, find_parameter
from prune_landscape.modelcopy import copy_model
from prune_landscape.structure import Structure
from prune_landscape.theory.closedness import ClosednessResult, check_closedness
from prune_landscape.theory.rank_condition import MAX_RANK_SAMPLES, RankResult, check_rank_condition

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
_MAX_COLLECT = MAX_RANK_SAMPLES  # inputs kept in memory for distinctness and rank checks


@dataclass(frozen=True)
class NetworkFacts:
    """The facts the rules read (see the module docstring). ``None`` means unknown; ``notes`` say why."""

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
    fan_in: tuple[int, ...]
    last_hidden_width: int
    final_dense: bool
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
    notes: Mapping[str, str] = field(default_factory=dict)
    masks: tuple[np.ndarray, ...] = field(default=(), repr=False, compare=False)

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


def _chain(model: nn.Module, structure: Structure) -> list[tuple[str, nn.Module]]:
    return [(name, model.get_submodule(name)) for name, _ in structure.call_order if name != "?"]


def _single_float_input(example) -> torch.Tensor | None:
    """The one floating-point input tensor of ``example``, or None (token ids, several inputs, kwargs)."""
    if isinstance(example, (tuple, list)) and len(example) == 1:
        example = example[0]
    if isinstance(example, torch.Tensor) and example.is_floating_point() and example.dim() >= 1:
        return example
    return None


def _is_plain_chain(model: nn.Module, chain: list[tuple[str, nn.Module]], example: torch.Tensor) -> bool:
    """True when applying the leaf modules in call order reproduces the model's output (float64).

    A leaf module that cannot take the previous module's output (a recurrence returning a tuple, a gate
    whose two branches read the same input, a shape that does not chain) means the forward pass is not a
    chain: False, never an error.
    """
    twin = copy_model(model).double().cpu().eval()  # a CPU float64 twin: exact comparison, any device
    x = example.detach().cpu().to(torch.float64)
    x = x + torch.linspace(-1.0, 1.0, x.numel(), dtype=torch.float64).reshape(x.shape)  # not all zeros
    with torch.no_grad():
        expected = twin(x)
        if not isinstance(expected, torch.Tensor):
            return False  # tuple / dict outputs: not the f(x) in R^{d_y} of the MLP theorems
        out = x
        try:
            for name, _ in chain:
                out = twin.get_submodule(name)(out)
        except (RuntimeError, TypeError, ValueError, IndexError):
            return False  # the replay itself shows the modules do not compose in call order
    return isinstance(out, torch.Tensor) and expected.shape == out.shape and torch.allclose(expected, out, rtol=1e-9, atol=1e-12)


def _feeds_head(model: nn.Module, chain: list[tuple[str, nn.Module]], prev: str, final: str, example) -> bool:
    """True when the head's input is exactly the module ``prev``'s output passed through the modules between them.

    Checked on a CPU eval-mode twin, in the model's own dtype (a float64 pass through a conv body costs
    seconds), with forward hooks during one real forward pass (any input structure): the head's recorded
    input must equal, to rounding, the in-between modules (activations, dropout, flatten) applied in call
    order to ``prev``'s recorded output (the same kernels on the same tensor: equal bits in practice). Anything else (a concat of branches, a residual add, a gate, a
    module run twice, a forward that fails on the twin) is False: the pair is not established.
    """
    if example is None:
        return False
    names = [n for n, _ in chain]
    between = names[names.index(prev) + 1: names.index(final)]
    twin = copy_model(model).cpu().eval()
    records: dict[str, list] = {prev: [], final: []}
    handles = [
        twin.get_submodule(prev).register_forward_hook(lambda _m, _i, o: records[prev].append(o)),
        twin.get_submodule(final).register_forward_hook(lambda _m, i, _o: records[final].append(i)),
    ]
    x = map_tensors(lambda t: t.detach().cpu(), example)
    try:
        with torch.no_grad():
            call_model(twin, x)
            if len(records[prev]) != 1 or len(records[final]) != 1:
                return False  # a shared or repeated module: which call feeds the head is not one answer
            out, head_in = records[prev][0], records[final][0]
            if not (isinstance(head_in, tuple) and len(head_in) == 1 and isinstance(out, torch.Tensor)):
                return False
            for name in between:
                out = twin.get_submodule(name)(out)
    except (RuntimeError, TypeError, ValueError, IndexError):
        return False
    finally:
        for handle in handles:
            handle.remove()
    head_in = head_in[0]
    return (isinstance(out, torch.Tensor) and out.shape == head_in.shape
            and torch.allclose(out.double(), head_in.double(), rtol=1e-5, atol=1e-6))


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


def _mask_of(masks: MaskSet, model: nn.Module, weight: str) -> np.ndarray:
    if weight in masks:
        return masks[weight].numpy().astype(bool)
    module, _ = find_parameter(model, weight)
    return np.ones(tuple(module.weight.shape), bool)


def _read_inputs(data, n: int | None, centre: bool) -> tuple[np.ndarray | None, torch.Tensor | None, str]:
    """Stream the data once: the input Gram matrix (for whitening) and, when small, the inputs."""
    gram, total, count, kept = None, None, 0, []
    for x, _ in iter_batches(data, batch_size=1024, max_samples=n):
        if not (isinstance(x, torch.Tensor) and x.is_floating_point()):
            # token ids, tuple or dict batches: no input Gram matrix to speak of, the facts stay unknown
            return None, None, f"the data's inputs are {type(x).__name__} batches, not one float tensor"
        flat = x.detach().cpu().to(torch.float64).reshape(x.shape[0], -1)
        gram = flat.T @ flat if gram is None else gram + flat.T @ flat
        total = flat.sum(0) if total is None else total + flat.sum(0)
        count += flat.shape[0]
        if count <= _MAX_COLLECT:
            kept.append(flat)
    if count == 0:
        return None, None, "the data is empty"
    if centre:
        gram = gram - torch.outer(total, total) / count
    inputs = torch.cat(kept) if count <= _MAX_COLLECT else None
    return gram.numpy(), inputs, ""


def _whitened(gram: np.ndarray) -> bool:
    scale = np.trace(gram) / gram.shape[0]
    return bool(scale > 0 and np.linalg.norm(gram - scale * np.eye(gram.shape[0])) <= 1e-8 * np.linalg.norm(gram))


def _distinct(inputs: torch.Tensor, m1: np.ndarray, alive: np.ndarray) -> bool:
    x = inputs.numpy()
    for support in np.unique(m1[alive], axis=0):
        if np.unique(x[:, support], axis=0).shape[0] < x.shape[0]:
            return False
    return True


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
    from prune_landscape.structure import analyze_structure

    masks = MaskSet.from_module(model) if masks is None else masks
    if structure is None:
        structure = analyze_structure(model, example_input, masks)
    notes: dict[str, str] = {}
    data_n = num_samples(data)
    n = n_samples if n_samples is not None else data_n
    if data_n is not None and n_samples is not None and n_samples <= data_n:
        data_n = n_samples  # the first n_samples samples are the training set
    if n is None:
        notes["n"] = "n unknown: pass data or n_samples"
    chain = _chain(model, structure)
    classes = [type(m).__name__ for _, m in chain]
    final_module = structure.final.module
    unrecognised = tuple(sorted({c for c in classes if c not in ACTIVATION_KINDS and c not in _STRUCTURAL}))
    linear_positions = [i for i, c in enumerate(classes) if c == "Linear"]
    mlp_like = (
        bool(linear_positions)
        and chain[linear_positions[-1]][0] == final_module
        and all(c in ACTIVATION_KINDS or c in _PASSTHROUGH or c == "Linear" or c in unrecognised for c in classes)
        and len({chain[i][0] for i in linear_positions}) == len(linear_positions)
        and all(classes[i] in _PASSTHROUGH or classes[i] == "Identity" for i in range(linear_positions[-1] + 1, len(classes)))
    )
    if mlp_like:
        first = model.get_submodule(chain[linear_positions[0]][0])
        example = example_input if example_input is not None else torch.zeros(2, first.in_features)
        example = _single_float_input(example)
        # The MLP theorems model f(x) for one real input x: token ids, several inputs or keyword inputs
        # are outside them, so such a model is modelled from its head only.
        mlp_like = example is not None and _is_plain_chain(model, chain, example[:2])
    final_mask = _mask_of(masks, model, structure.final_layer)
    d_y = final_mask.shape[0]
    output_bias = getattr(model.get_submodule(final_module), "bias", None) is not None
    common = dict(
        d_y=d_y, fan_in=structure.fan_in, last_hidden_width=structure.last_hidden_width,
        final_dense=structure.final_layer_dense, n=n, weight_decay=float(weight_decay), output_bias=output_bias,
    )

    if not mlp_like:
        notes["scope"] = ("the forward pass is not a chain of Linear layers with elementwise activations "
                          "(conv, normalisation, residual or functional ops): only the classifier head is modelled; "
                          "no theorem covers the body")
        acts = tuple(c for c in classes if c in ACTIVATION_KINDS and c != "Identity")
        kind = "unknown" if unrecognised else _combine([ACTIVATION_KINDS[c] for c in acts]) if acts else "unknown"
        if unrecognised:
            notes["activation"] = f"unrecognised modules {list(unrecognised)}: activation unknown"
        elif not acts:
            notes["activation"] = "no activation module in the forward pass (functional activations are invisible)"
        closedness, pair = None, ()
        before = [name for name, m in chain[: [n_ for n_, _ in chain].index(final_module)] if not (
            type(m).__name__ in ACTIVATION_KINDS or type(m).__name__ in _PASSTHROUGH)]
        if before and isinstance(model.get_submodule(before[-1]), nn.Linear):
            prev = f"{before[-1]}.weight"
            prev_mask = _mask_of(masks, model, prev)
            # The pair (M1, M2) is the product M2 M1 only when the head reads that Linear's output through
            # elementwise modules alone; otherwise (concat, residual, gate) closedness is not defined here.
            if prev_mask.shape[0] == final_mask.shape[1] and _feeds_head(model, chain, before[-1], final_module, example_input):
                closedness, pair = check_closedness(final_mask, prev_mask), (prev, structure.final_layer)
            else:
                notes["closedness"] = (f"the head's input is not {before[-1]}'s output through elementwise modules "
                                       "alone: the two-factor closedness check does not apply")
        return NetworkFacts(
            scope="head", activation=kind, activation_modules=acts, unrecognised=unrecognised, hidden_layers=None,
            hidden_biases=None, layer_names=(structure.final_layer,), widths=(structure.last_hidden_units, d_y),
            effective_widths=(structure.last_hidden_width, d_y), d=None, whitened=None, distinct_restricted_inputs=None,
            closedness=closedness, closedness_layers=pair, rank=None, sparse_beyond_first=None,
            first_layer_non_intersected=None, dense_layers=(structure.final_layer_dense,), notes=notes,
            masks=(final_mask,), **common,
        )

    linear_names = [chain[i][0] for i in linear_positions]
    weights = [f"{name}.weight" for name in linear_names]
    layer_masks = [_mask_of(masks, model, w) for w in weights]
    gaps = [[classes[k] for k in range(a + 1, b)] for a, b in zip(linear_positions[:-1], linear_positions[1:])]
    kind = _combine([_gap_kind(g) for g in gaps]) if gaps else "linear"
    if kind == "unknown":
        notes["activation"] = f"unrecognised activation modules {list(unrecognised)}"
    acts = tuple(c for g in gaps for c in g if c not in _PASSTHROUGH)
    hidden_biases = all(model.get_submodule(name).bias is not None for name in linear_names[:-1])
    alive = [structure.layer(w).alive.numpy() for w in weights]
    widths = (layer_masks[0].shape[1], *(m.shape[0] for m in layer_masks))
    effective = (int(layer_masks[0][alive[0]].any(axis=0).sum()), *(int(a.sum()) for a in alive[:-1]), d_y)
    dense_layers = tuple(bool(m.all()) for m in layer_masks)
    m1_alive = layer_masks[0][alive[0]] if len(layer_masks) > 1 else layer_masks[0]
    non_intersected = bool((m1_alive.sum(axis=0) <= 1).all()) if len(layer_masks) > 1 else None
    closedness, pair = None, ()
    if len(layer_masks) >= 2:
        upstream = alive[-3] if len(layer_masks) >= 3 else np.ones(layer_masks[-2].shape[1], bool)
        closedness = check_closedness(layer_masks[-1], layer_masks[-2] & upstream[None, :])
        pair = (weights[-2], weights[-1])

    # Linear theorems are bias-free: an output bias reduces the problem to centred data; a hidden bias
    # without one does not.
    centre = output_bias
    whitened = distinct = None
    inputs = None
    if data is None:
        notes["data"] = "no data: whitening, distinct restricted inputs and real-data rank are unknown"
    elif data_n is not None and n is not None and data_n != n:
        notes["data"] = f"the data holds {data_n} samples but n = {n}: data-dependent facts are unknown"
    else:
        gram, inputs, problem = _read_inputs(data, n, centre)
        if gram is None:
            notes["data"] = problem
        else:
            whitened = _whitened(gram)
            if inputs is not None and len(layer_masks) == 2:
                distinct = _distinct(inputs, layer_masks[0], alive[0])
            elif len(layer_masks) == 2:
                notes["distinct_restricted_inputs"] = f"more than {_MAX_COLLECT} samples: distinctness not checked"
    rank = None
    if kind in ("smooth",) and n is not None and structure.fan_in and min(structure.fan_in) >= n:
        rank = check_rank_condition(chain, {nm: mk for nm, mk in zip(linear_names, layer_masks)}, inputs, n, widths[0], seed=seed)
    return NetworkFacts(
        scope="mlp", activation=kind, activation_modules=acts, unrecognised=unrecognised,
        hidden_layers=len(layer_masks) - 1, hidden_biases=hidden_biases, layer_names=tuple(weights), widths=widths,
        effective_widths=effective, d=widths[0], whitened=whitened, distinct_restricted_inputs=distinct,
        closedness=closedness, closedness_layers=pair, rank=rank,
        sparse_beyond_first=any(not dense for dense in dense_layers[1:]), first_layer_non_intersected=non_intersected,
        dense_layers=dense_layers, notes=notes, masks=tuple(layer_masks), **common,
    )
