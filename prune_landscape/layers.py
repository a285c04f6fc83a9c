"""Model introspection in one place: which weights are prunable, where they live, what they hold now.

The prunable set comes in two sizes (one switch, ``prunable=``; ``scope=`` is its deprecated name, since
"scope" also names how a pruning budget is shared):

* ``"layers"`` (default, the papers' set): the ``weight`` of every Linear and Conv (transposed too), the
  fused attention projections of ``nn.MultiheadAttention`` (``in_proj_weight`` or the separate
  ``q/k/v_proj_weight``; its ``out_proj`` is a Linear), and HuggingFace's ``Conv1D`` (GPT-2).
* ``"all"``: additionally ``nn.Embedding`` / ``nn.EmbeddingBag`` weights and every recurrent weight matrix
  of ``nn.RNN`` / ``nn.LSTM`` / ``nn.GRU`` (``weight_ih_l*``, ``weight_hh_l*``).

A *tied* tensor (``lm_head.weight is tok.weight``) is one prunable parameter, listed once under its
*canonical* name: the name of its first owner of the ``"layers"`` kinds (``lm_head.weight``), else its
first owner in registration order. :func:`tensor_owners` gives every ``(module, attribute)`` holding it.

Names are the ones the user sees (``fc.weight``), whatever holds the tensor: a plain parameter,
``torch.nn.utils.prune`` (``weight_orig`` + ``weight_mask``) or a parametrization.

Example:
    >>> from torch import nn
    >>> from prune_landscape.layers import prunable_parameters
    >>> prunable_parameters(nn.Sequential(nn.Embedding(10, 4), nn.Linear(4, 2)))
    ['1.weight']
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import nn
from torch.nn.utils import parametrize

from prune_landscape.checks import renamed_keyword
from prune_landscape.tracing.forward_order import layer_calls

__all__ = [
    "PRUNABLE_TYPES",
    "PrunableWeight",
    "PrunableSet",
    "Scope",
    "current_tensor",
    "final_layer_name",
    "find_parameter",
    "prunable_parameters",
    "prunable_weights",
    "tensor_owners",
]

PrunableSet = Literal["layers", "all"]
#: The old name of :data:`PrunableSet` (not to be confused with the allocation scope of
#: :class:`prune_landscape.pruning.allocation.Scope`).
Scope = PrunableSet

#: Module types whose ``weight`` is prunable in the default scope.
PRUNABLE_TYPES: tuple[type[nn.Module], ...] = (
    nn.Linear,
    nn.Conv1d,
    nn.Conv2d,
    nn.Conv3d,
    nn.ConvTranspose1d,
    nn.ConvTranspose2d,
    nn.ConvTranspose3d,
)
_TRANSPOSED = (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)
_EMBEDDINGS = (nn.Embedding, nn.EmbeddingBag)


@dataclass(frozen=True)
class PrunableWeight:
    """One prunable tensor.

    Attributes:
        name: canonical user-visible name (``"blocks.0.fc1.weight"``).
        module: the owning module's name (``"blocks.0.fc1"``).
        attr: the attribute on that module (``"weight"``, ``"in_proj_weight"``).
        kind: ``"linear"``, ``"conv"``, ``"embedding"`` or ``"recurrent"``.
        unit_axis: the weight axis that indexes output units (0 for Linear/Conv, 1 for transposed convs,
            HF Conv1D and embeddings).
        aliases: the other user-visible names of the same (tied) tensor.
    """

    name: str
    module: str
    attr: str
    kind: str
    unit_axis: int
    aliases: tuple[str, ...] = ()


def _is_hf_conv1d(module: nn.Module) -> bool:
    # transformers.pytorch_utils.Conv1D without importing transformers: weight is (in, out).
    return type(module).__name__ == "Conv1D" and hasattr(module, "nf") and hasattr(module, "nx")


def _candidates(module: nn.Module, scope: Scope) -> list[tuple[str, str, int, bool]]:
    """``(attr, kind, unit_axis, default_scope)`` of the module's own prunable tensors."""
    found: list[tuple[str, str, int, bool]] = []
    if isinstance(module, PRUNABLE_TYPES):
        kind = "linear" if isinstance(module, nn.Linear) else "conv"
        found.append(("weight", kind, 1 if isinstance(module, _TRANSPOSED) else 0, True))
    elif isinstance(module, nn.MultiheadAttention):
        names = ("in_proj_weight",) if module._qkv_same_embed_dim else ("q_proj_weight", "k_proj_weight", "v_proj_weight")
        found.extend((n, "linear", 0, True) for n in names)
    elif _is_hf_conv1d(module):
        found.append(("weight", "linear", 1, True))
    elif scope == "all" and isinstance(module, _EMBEDDINGS):
        found.append(("weight", "embedding", 1, False))
    elif scope == "all" and isinstance(module, nn.RNNBase):
        found.extend((n, "recurrent", 0, False) for n in module._flat_weights_names if n.startswith("weight_"))
    return [f for f in found if _holds(module, f[0])]


def _holds(module: nn.Module, attr: str) -> bool:
    return (
        module._parameters.get(attr) is not None
        or module._parameters.get(f"{attr}_orig") is not None
        or parametrize.is_parametrized(module, attr)
    )


def _raw_tensor(module: nn.Module, attr: str) -> torch.Tensor:
    """The stored tensor behind ``module.<attr>`` (the one a tie shares)."""
    if parametrize.is_parametrized(module, attr):
        plist = module.parametrizations[attr]
        return plist.original if hasattr(plist, "original") else plist.original0
    if module._parameters.get(f"{attr}_orig") is not None:
        return module._parameters[f"{attr}_orig"]
    return module._parameters[attr]


def _prunable_keyword(prunable: PrunableSet, renamed: dict[str, Any], where: str) -> PrunableSet:
    """``prunable``, or the deprecated ``scope=`` it replaced (the word also names the allocation scope)."""
    given = None if prunable == "layers" else prunable
    value, _ = renamed_keyword(renamed, "scope", "prunable", given, where=where, stacklevel=4)
    if renamed:
        raise TypeError(f"{where}() got unexpected keyword arguments {sorted(renamed)}; expected prunable=")
    return "layers" if value is None else value


def prunable_weights(model: nn.Module, *, prunable: PrunableSet = "layers", **renamed: Any) -> list[PrunableWeight]:
    """The prunable tensors of ``model``, tied ones once, in registration order (see the module docstring).

    ``prunable``: ``"layers"`` (default) or ``"all"`` (embeddings and RNN weights too); ``scope=`` is its
    deprecated name.

    Raises:
        ValueError: for an unknown prunable set, or a model with no prunable tensor.
    """
    scope = _prunable_keyword(prunable, dict(renamed), "prunable_weights") if renamed else prunable
    if scope not in ("layers", "all"):
        raise ValueError(f"prunable must be 'layers' or 'all', got {scope!r}")
    entries: list[tuple[str, str, str, int, bool, torch.Tensor]] = []
    for module_name, module in model.named_modules():
        for attr, kind, axis, default in _candidates(module, scope):
            entries.append((module_name, attr, kind, axis, default, _raw_tensor(module, attr)))
    if not entries:
        raise ValueError(
            f"expected a model with at least one prunable layer ({', '.join(t.__name__ for t in PRUNABLE_TYPES)}, "
            f"nn.MultiheadAttention, HF Conv1D), got {type(model).__name__} with none"
        )
    # A tied tensor takes the name of its first "layers"-kind owner, so its name does not depend on scope.
    by_tensor: dict[int, list[tuple[str, str, str, int, bool]]] = {}
    for module_name, attr, kind, axis, default, tensor in entries:
        by_tensor.setdefault(id(tensor), []).append((module_name, attr, kind, axis, default))
    canonical = {key: next((o for o in owners if o[4]), owners[0]) for key, owners in by_tensor.items()}
    owners_of = _owner_names(model)  # one walk over the modules, not one per weight
    result = []
    for module_name, attr, _, _, _, tensor in entries:
        chosen = canonical[id(tensor)]
        if (chosen[0], chosen[1]) != (module_name, attr):
            continue
        name = _join(module_name, attr)
        aliases = tuple(_join(m, a) for m, a in owners_of.get(id(tensor), []) if _join(m, a) != name)
        result.append(PrunableWeight(name, module_name, attr, chosen[2], chosen[3], aliases))
    return result


def _join(module_name: str, attr: str) -> str:
    return f"{module_name}.{attr}" if module_name else attr


def _owner_names(model: nn.Module) -> dict[int, list[tuple[str, str]]]:
    """id(stored tensor) -> every ``(module name, user-visible attr)`` holding it, in registration order."""
    owners: dict[int, list[tuple[str, str]]] = {}
    for module_name, module in model.named_modules(remove_duplicate=False):
        if ".parametrizations." in f".{module_name}.":
            continue
        for attr in list(module._parameters) + (list(module.parametrizations) if parametrize.is_parametrized(module) else []):
            user_attr = attr[: -len("_orig")] if attr.endswith("_orig") else attr
            if module._parameters.get(attr) is None and not parametrize.is_parametrized(module, attr):
                continue
            found = owners.setdefault(id(_raw_tensor(module, user_attr)), [])
            if (module_name, user_attr) not in found:
                found.append((module_name, user_attr))
    return owners


def prunable_parameters(model: nn.Module, *, prunable: PrunableSet = "layers", **renamed: Any) -> list[str]:
    """Canonical names of the prunable tensors (see :func:`prunable_weights`), in registration order.

    Raises:
        ValueError: if the model has no prunable tensor.
    """
    chosen = _prunable_keyword(prunable, dict(renamed), "prunable_parameters") if renamed else prunable
    return [w.name for w in prunable_weights(model, prunable=chosen)]


def find_parameter(model: nn.Module, name: str) -> tuple[nn.Module, str]:
    """Resolve ``"block.conv.weight"`` to ``(module, "weight")``, for plain, pruned or parametrized tensors.

    Raises:
        ValueError: naming the unknown parameter and the closest valid names.
    """
    module_name, _, attr = name.rpartition(".")
    try:
        module = model.get_submodule(module_name) if module_name else model
    except AttributeError:
        module = None
    if module is not None and _holds(module, attr):
        return module, attr
    known = _user_visible_names(model)
    raise ValueError(
        f"unknown parameter {name!r} for {type(model).__name__}; expected one of: {', '.join(known[:12])}"
        + (f", ... ({len(known)} in all)" if len(known) > 12 else "")
    )


def tensor_owners(model: nn.Module, name: str) -> list[tuple[nn.Module, str]]:
    """Every ``(module, attr)`` holding the tensor called ``name`` (more than one when it is tied)."""
    module, attr = find_parameter(model, name)
    tensor = _raw_tensor(module, attr)
    owners = [(model.get_submodule(m) if m else model, a) for m, a in _owner_names(model).get(id(tensor), [])]
    return owners or [(module, attr)]


def _user_visible_names(model: nn.Module) -> list[str]:
    names = []
    for module_name, module in model.named_modules():
        prefix = f"{module_name}." if module_name else ""
        for attr in module._parameters:
            names.append(prefix + (attr[: -len("_orig")] if attr.endswith("_orig") else attr))
        if parametrize.is_parametrized(module):
            names.extend(prefix + attr for attr in module.parametrizations)
    return [n for n in names if ".parametrizations." not in f".{n}"]


def current_tensor(module: nn.Module, attr: str) -> torch.Tensor:
    """The tensor the forward pass uses now, detached (``orig * mask`` for torch.nn.utils.prune).

    A parametrization is evaluated with its modules in eval mode, so reading a spectral-normalised weight
    never runs a power iteration on the user's buffers.
    """
    if hasattr(module, f"{attr}_orig") and hasattr(module, f"{attr}_mask"):
        return getattr(module, f"{attr}_orig").detach() * getattr(module, f"{attr}_mask")
    if parametrize.is_parametrized(module, attr):
        plist = module.parametrizations[attr]
        modes = [(m, m.training) for m in plist.modules()]
        try:
            for m, _ in modes:
                m.training = False
            with torch.no_grad():
                return getattr(module, attr).detach()
        finally:
            for m, flag in modes:
                m.training = flag
    return getattr(module, attr).detach()


def final_layer_name(
    model: nn.Module,
    example_inputs: Any = None,
    *,
    output_transform: Callable[[Any], torch.Tensor] | None = None,
    prunable: Scope = "layers",
) -> str:
    """The head's weight name: the last prunable Linear/Conv call, in forward order, whose output reaches
    the model's output (the last one called when none does), from one forward pass that records the calls
    and reads the autograd graph (:mod:`prune_landscape.tracing.forward_order`; masks and weight values play no part).

    This is the final layer :func:`prune_landscape.analyze_structure` chooses, at the cost of one forward.

    Args:
        model: any ``nn.Module``; never changed.
        example_inputs: a tensor (its first sample is used), a tuple of positional arguments or a dict of
            keyword arguments. Without it: zeros of the first layer's width when that layer is a Linear,
            else the last prunable layer in registration order (the classifier of every built-in and
            torchvision model).
        output_transform: raw output -> "the" output tensor (default: the tensor, ``logits``, or the first
            floating tensor).
        prunable: the prunable set (see :func:`prunable_weights`).

    Raises:
        ValueError: if no Linear or Conv layer of the model runs in its forward pass.
    """
    weights = prunable_weights(model, prunable=prunable)
    given = example_inputs is not None
    if not given:
        first = model.get_submodule(weights[0].module) if weights[0].module else model
        if not isinstance(first, nn.Linear):
            return weights[-1].name
        reference = current_tensor(first, "weight")
        example_inputs = torch.zeros(1, first.in_features, dtype=reference.dtype, device=reference.device)
    elif isinstance(example_inputs, torch.Tensor) and example_inputs.dim() >= 2:
        example_inputs = example_inputs[:1]
    watched = {w.name: [(w.module, w.attr)] + [(a.rpartition(".")[0], a.rpartition(".")[2]) for a in w.aliases]
               for w in weights}
    try:
        calls = [(name, reaches) for name, _, reaches in layer_calls(model, example_inputs, watched, output_transform)]
        if not calls:
            raise ValueError(f"no Linear or Conv layer of {type(model).__name__} ran in the forward pass")
    except ValueError:
        if given:
            raise
        return weights[-1].name  # zeros did not fit the model: registration order, as documented
    reaching = [name for name, reaches in calls if reaches]
    return reaching[-1] if reaching else calls[-1][0]
