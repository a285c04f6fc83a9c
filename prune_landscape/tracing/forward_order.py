"""One cheap forward pass that lists the calls of chosen weights in forward order and tells which of them
reach the output: what :func:`prune_landscape.layers.final_layer_name` reads.

A weight is seen wherever the forward multiplies by it: ``F.linear`` (``nn.Linear``, and the projections
``nn.MultiheadAttention`` calls without running ``out_proj``), convolutions, and the ``addmm`` of
HuggingFace's ``Conv1D``. A call *reaches* the output iff the autograd graph of "the" output contains it:
a structural test (no values compared), so a ReLU that happens to be off, a zero weight or a max-pool
cannot hide a path. The pass runs on a tensor-sharing shadow in eval mode: the user's model is not touched.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import nn
from torch.overrides import TorchFunctionMode

from prune_landscape.tracing.generic_ops import CONV_NAMES, mha_forward
from prune_landscape.tracing.model_io import default_output, run_model, shadow_copy

__all__ = ["layer_calls", "weight_argument"]


def weight_argument(name: str, args: tuple, kwargs: Mapping[str, Any]) -> tuple[Any, str, Any]:
    """``(weight, kind, input)`` of a call of ``F.linear`` / a convolution / ``F.embedding`` / ``addmm``
    (kind ``"linear"``, ``"conv"`` or ``"embedding"``); ``(None, "", None)`` for any other function."""
    if name == "linear" or name in CONV_NAMES or name in ("embedding", "embedding_bag"):
        weight = args[1] if len(args) > 1 else kwargs.get("weight")
        kind = "linear" if name == "linear" else ("conv" if name in CONV_NAMES else "embedding")
        x = args[0] if args and kind != "embedding" else None
        return weight, kind, x
    if name == "addmm" and len(args) > 2:  # HF Conv1D: addmm(bias, x, weight)
        return args[2], "linear", args[1]
    return None, "", None


class _CallWatcher(TorchFunctionMode):
    """Records ``(weight name, kind, autograd node of the call's output)`` for every watched weight."""

    def __init__(self, names: Mapping[int, str]):
        super().__init__()
        self.names = names  # id(tensor the forward reads) -> weight name; kept current by pre-hooks
        self.anchor = torch.zeros((), requires_grad=True)  # makes every call's output part of a graph
        self.calls: list[tuple[str, str, Any]] = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = getattr(func, "__name__", "")
        if name == "multi_head_attention_forward":
            try:
                with self:  # the re-statement calls F.linear without a torch-function guard: its calls are seen
                    return mha_forward(*args, **kwargs)
            except NotImplementedError:
                return func(*args, **kwargs)
        weight, kind, _ = weight_argument(name, args, kwargs)
        out = func(*args, **kwargs)
        if kind in ("linear", "conv") and isinstance(weight, torch.Tensor) and id(weight) in self.names:
            out = out + self.anchor  # + 0: the value is unchanged, the node is ours
            self.calls.append((self.names[id(weight)], kind, out.grad_fn))
        return out


def _reachable(output: torch.Tensor) -> set[int]:
    """ids of the autograd nodes ``output`` depends on."""
    seen: set[int] = set()
    stack = [output.grad_fn] if output.grad_fn is not None else []
    while stack:
        node = stack.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        stack.extend(next_node for next_node, _ in node.next_functions if next_node is not None)
    return seen


def layer_calls(model: nn.Module, example: Any, watched: Mapping[str, list[tuple[str, str]]],
                output_transform: Callable[[Any], torch.Tensor] | None = None) -> list[tuple[str, str, bool]]:
    """``(weight name, kind, reaches the output)`` per call of a watched weight, in forward order.

    Args:
        model: the model (never changed: the pass runs on a tensor-sharing shadow in eval mode).
        example: its input (a tensor, a tuple of positional or a dict of keyword arguments).
        watched: weight name -> every ``(module name, attribute)`` holding it (tied weights: several).
        output_transform: raw output -> "the" output tensor (default :func:`default_output`).
    """
    shadow = shadow_copy(model)
    holders = [(shadow.get_submodule(m) if m else shadow, attr, name) for name, owners in watched.items()
               for m, attr in owners]
    current: dict[tuple[int, str], int] = {}
    names: dict[int, str] = {}

    def register(module: nn.Module, attr: str, name: str) -> None:
        # Pruning hooks and parametrizations make a new tensor per call: follow the one the forward reads.
        tensor = getattr(module, attr, None)
        names.pop(current.pop((id(module), attr), -1), None)
        if isinstance(tensor, torch.Tensor):
            current[(id(module), attr)] = id(tensor)
            names[id(tensor)] = name

    held: dict[int, list[tuple[nn.Module, str, str]]] = {}
    for holder, attr, name in holders:
        held.setdefault(id(holder), []).append((holder, attr, name))

    def refresh(module: nn.Module, _args: Any) -> None:
        for holder, attr, name in held[id(module)]:
            register(holder, attr, name)

    with torch.nn.utils.parametrize.cached(), torch.enable_grad():
        for holder, attr, name in holders:
            register(holder, attr, name)
        handles = [entries[0][0].register_forward_pre_hook(refresh) for entries in held.values()]
        watcher = _CallWatcher(names)
        try:
            with watcher:
                output = (output_transform or default_output)(run_model(shadow, example))
        finally:
            for handle in handles:
                handle.remove()
    reached = _reachable(output) if isinstance(output, torch.Tensor) else set()
    return [(name, kind, node is not None and id(node) in reached) for name, kind, node in watcher.calls]
