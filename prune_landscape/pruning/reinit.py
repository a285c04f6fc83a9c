"""How NTK-SAP re-draws a network from its initial distribution before every noise batch.

Order of preference: the user's ``init_fn(model, generator)``; the model's own
``init_weights(generator)`` (every built-in model has one: kaiming-normal fan_in for ResNet-20/VGG,
PyTorch's default for MLP/LeNet); otherwise every submodule's ``reset_parameters()`` (PyTorch's default
init, seeded from the generator). A model with a parameter-owning module that has no
``reset_parameters()`` cannot be re-initialised: :func:`resolve_init_fn` says so before any work.

Example:
    >>> import torch
    >>> from prune_landscape import models
    >>> init = resolve_init_fn(models.mlp([3, 2]))
    >>> net = models.mlp([3, 2])
    >>> init(net, torch.Generator().manual_seed(0))
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

__all__ = ["InitFn", "resolve_init_fn"]

InitFn = Callable[[nn.Module, torch.Generator], None]


def _call_init_weights(model: nn.Module, generator: torch.Generator) -> None:
    model.init_weights(generator)  # type: ignore[operator]


def _reset_every_module(model: nn.Module, generator: torch.Generator) -> None:
    # reset_parameters() draws from the global RNG: fork it and seed it from the generator, so the
    # generator alone decides and the caller's global RNG state is left as it was.
    seed = int(torch.randint(0, 2**62, (1,), generator=generator))
    devices = [p.device for p in model.parameters() if p.device.type == "cuda"]
    with torch.random.fork_rng(devices=sorted({d.index or 0 for d in devices})):
        torch.manual_seed(seed)
        for module in model.modules():
            reset = getattr(module, "reset_parameters", None)
            if callable(reset):
                reset()


def resolve_init_fn(model: nn.Module, init_fn: InitFn | None = None) -> InitFn:
    """The re-initialiser for ``model`` (see module docstring).

    Raises:
        ValueError: if ``init_fn`` is not callable, or the model has parameters no rule can re-draw.
    """
    if init_fn is not None:
        if not callable(init_fn):
            raise ValueError(f"init_fn must be a callable init_fn(model, generator), got {type(init_fn).__name__}")
        return init_fn
    if callable(getattr(model, "init_weights", None)):
        return _call_init_weights
    stuck = [
        name or type(model).__name__
        for name, module in model.named_modules()
        if any(p is not None for p in module._parameters.values()) and not callable(getattr(module, "reset_parameters", None))
    ]
    if stuck:
        raise ValueError(
            f"ntk_sap re-initialises the network before every noise batch, but {type(model).__name__} has no "
            f"init_weights(generator) method and these modules own parameters without reset_parameters(): "
            f"{stuck[:5]}{' ...' if len(stuck) > 5 else ''}. Pass init_fn=my_init to prune(), where "
            "my_init(model, generator) re-draws every weight from its init distribution using the generator."
        )
    return _reset_every_module
