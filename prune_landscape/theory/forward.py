"""Does the model's forward pass compose its leaf modules in call order? Checks on a CPU twin, never on the model.

The MLP theorems are about f(x) = W_L s(... s(W_1 x)): :func:`is_plain_chain` replays the leaf modules
in call order in float64 and compares with the real forward pass; :func:`feeds_head` checks that the
head reads one Linear's output through elementwise modules alone (the two-factor closedness pair of a
``"head"``-scope model). Both answer False, never raise, when the replay does not compose.

Example:
    >>> import torch
    >>> from prune_landscape import analyze_structure, models
    >>> net = models.mlp([3, 4, 2])
    >>> chain = call_chain(net, analyze_structure(net, torch.zeros(1, 3)))
    >>> [name for name, _ in chain], is_plain_chain(net, chain, torch.zeros(2, 3))
    (['flatten', 'fc1', 'act1', 'fc2'], True)
"""

from __future__ import annotations

import torch
from torch import nn

from prune_landscape.batching import call_model, map_tensors
from prune_landscape.modelcopy import copy_model
from prune_landscape.structure import Structure

__all__ = ["call_chain", "feeds_head", "is_plain_chain", "single_float_input"]


def call_chain(model: nn.Module, structure: Structure) -> list[tuple[str, nn.Module]]:
    """The model's leaf modules in the order the forward pass called them, ``(name, module)``."""
    return [(name, model.get_submodule(name)) for name, _ in structure.call_order if name != "?"]


def single_float_input(example) -> torch.Tensor | None:
    """The one floating-point input tensor of ``example``, or None (token ids, several inputs, kwargs)."""
    if isinstance(example, (tuple, list)) and len(example) == 1:
        example = example[0]
    if isinstance(example, torch.Tensor) and example.is_floating_point() and example.dim() >= 1:
        return example
    return None


def is_plain_chain(model: nn.Module, chain: list[tuple[str, nn.Module]], example: torch.Tensor) -> bool:
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


def feeds_head(model: nn.Module, chain: list[tuple[str, nn.Module]], prev: str, final: str, example) -> bool:
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
