"""How NTK-SAP re-draws a network from its initial distribution before every noise batch.

Order of preference:

1. the user's ``init_fn(model, generator)``;
2. the model's own ``init_weights(generator)`` when it takes a parameter called ``generator`` (every
   built-in model: kaiming-normal fan_in for ResNet-20/VGG, PyTorch's default for MLP/LeNet). Methods
   called ``init_weights`` with other signatures (HuggingFace's ``init_weights()``, timm's
   ``init_weights(mode)``) are not this contract and are not called;
3. otherwise every submodule's own ``reset_parameters()`` (``_reset_parameters()`` for
   ``nn.MultiheadAttention``: its fused ``in_proj_weight``), children before parents as at construction,
   so a parent's rule (MHA zeroing ``out_proj.bias``) has the last word. The draws come from the global
   RNG seeded from the generator inside ``torch.random.fork_rng``: the generator alone decides, and the
   caller's global RNG state is left as it was.

In case 3, a *prunable* weight owned by a module without such a method makes re-initialisation
impossible: :func:`resolve_init_fn` says so before any work, naming the modules and the fix (``init_fn=``).
Parameters outside the prunable set that no rule can re-draw (a ViT's class token and position
embedding, ConvNeXt's layer scale, Swin's relative position bias) keep the values they have: NTK-SAP's
weight-agnosticism concerns the weights it scores. :func:`fixed_parameters` lists them.

Example:
    >>> import torch
    >>> from prune_landscape import models
    >>> net = models.mlp([3, 2])
    >>> before = net.fc1.weight.clone()
    >>> redraw_initial_weights(net, seed=0)
    >>> bool(torch.equal(net.fc1.weight, before))
    False
"""

from __future__ import annotations

import inspect
from collections.abc import Callable

import torch
from torch import nn

from prune_landscape.checks import check_callable
from prune_landscape.masks import prunable_parameters

__all__ = ["InitFn", "fixed_parameters", "redraw_initial_weights", "reset_every_module", "resolve_init_fn"]

InitFn = Callable[[nn.Module, torch.Generator], None]


def _takes_generator(method: Callable) -> bool:
    try:
        return "generator" in inspect.signature(method).parameters
    except (TypeError, ValueError):
        return False


def _own_init_weights(model: nn.Module) -> bool:
    method = getattr(model, "init_weights", None)
    return callable(method) and _takes_generator(method)


def _reset_method(module: nn.Module) -> Callable[[], None] | None:
    for attr in ("reset_parameters", "_reset_parameters"):
        method = getattr(module, attr, None)
        if callable(method):
            return method
    return None


def _post_order(module: nn.Module) -> list[nn.Module]:
    ordered: list[nn.Module] = []
    seen: set[int] = set()

    def visit(node: nn.Module) -> None:
        if id(node) in seen:
            return
        seen.add(id(node))
        for child in node.children():
            visit(child)
        ordered.append(node)

    visit(module)
    return ordered


def _call_init_weights(model: nn.Module, generator: torch.Generator) -> None:
    model.init_weights(generator=generator)  # type: ignore[operator]


def reset_every_module(model: nn.Module, generator: torch.Generator) -> None:
    """Rule 3 as an ``init_fn``: every submodule's ``reset_parameters()``, children first, seeded by ``generator``.

    Models whose own ``init_weights(generator)`` is PyTorch's default initialisation call this through
    :func:`redraw_initial_weights` (``init_fn=reset_every_module``).
    """
    seed = int(torch.randint(0, 2**62, (1,), generator=generator))
    devices = [p.device for p in model.parameters() if p.device.type == "cuda"]
    with torch.random.fork_rng(devices=sorted({d.index or 0 for d in devices})), torch.no_grad():
        torch.manual_seed(seed)
        for module in _post_order(model):
            reset = _reset_method(module)
            if reset is not None:
                reset()


def _owners_without_reset(model: nn.Module) -> list[tuple[str, str]]:
    """(module name, parameter name) for every directly owned parameter no module rule re-draws."""
    covered: set[int] = set()
    for module in model.modules():
        if _reset_method(module) is not None:
            covered.update(id(p) for p in module.parameters())
    stuck = []
    for module_name, module in model.named_modules():
        for attr, parameter in module._parameters.items():
            if parameter is not None and id(parameter) not in covered:
                stuck.append((module_name, f"{module_name}.{attr}" if module_name else attr))
    return stuck


def fixed_parameters(model: nn.Module) -> list[str]:
    """Parameters that the ``reset_parameters()`` rule leaves at their current values (none are prunable)."""
    if _own_init_weights(model):
        return []
    return [name for _, name in _owners_without_reset(model)]


def resolve_init_fn(model: nn.Module, init_fn: InitFn | None = None) -> InitFn:
    """The re-initialiser for ``model`` (see module docstring).

    Raises:
        ValueError: if ``init_fn`` is not callable, or a prunable weight has no rule that re-draws it.
    """
    if init_fn is not None:
        return check_callable("init_fn", init_fn, "a callable init_fn(model, generator)")  # type: ignore[return-value]
    if _own_init_weights(model):
        return _call_init_weights
    prunable = set(prunable_parameters(model))
    stuck = [(owner or type(model).__name__, name) for owner, name in _owners_without_reset(model) if name in prunable]
    if stuck:
        owners = sorted({owner for owner, _ in stuck})
        raise ValueError(
            f"ntk_sap re-initialises the network before every noise batch, but {type(model).__name__} has no "
            f"init_weights(generator) method and these modules own prunable weights without reset_parameters(): "
            f"{owners[:5]}{' ...' if len(owners) > 5 else ''}. Pass init_fn=my_init to prune(), where "
            "my_init(model, generator) re-draws every weight from its init distribution using the generator."
        )
    return reset_every_module


def redraw_initial_weights(model: nn.Module, seed: int | torch.Generator, init_fn: InitFn | None = None) -> None:
    """Re-draw ``model``'s weights in place from its initial distribution (the rule of :func:`resolve_init_fn`).

    Args:
        model: the module to re-draw (NTK-SAP calls this on its private copy only).
        seed: an integer seed or a ``torch.Generator``; the same seed gives the same weights.
        init_fn: an explicit ``init_fn(model, generator)``.

    Raises:
        ValueError: as :func:`resolve_init_fn`, or when ``seed`` is neither an int nor a Generator.
    """
    if isinstance(seed, torch.Generator):
        generator = seed
    elif isinstance(seed, int) and not isinstance(seed, bool):
        generator = torch.Generator().manual_seed(seed)
    else:
        raise ValueError(f"seed must be an integer or a torch.Generator, got {seed!r}")
    resolve_init_fn(model, init_fn)(model, generator)

