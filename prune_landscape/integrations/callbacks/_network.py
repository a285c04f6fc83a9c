"""Which network inside a LightningModule the audit looks at.

Lightning adapter. Lightning does not require ``forward`` (many modules call ``self.net(x)`` in
``training_step``), and a ``forward`` may return a dict, generate text or take other arguments than a
batch holds. The audit needs one ``nn.Module`` mapping a batch's inputs to the outputs whose final layer
is audited. :func:`choose_network` picks it:

1. **explicit**: ``network="student"`` (a submodule name, ``""`` for the LightningModule itself) or a
   callable ``pl_module -> nn.Module``;
2. **forward**: the LightningModule itself, when its class defines ``forward`` and, on a copy in eval
   mode, ``forward(inputs)`` runs on a batch's inputs, returns a tensor and reaches every prunable weight
   (a forward that skips a teacher network does not describe the whole module);
3. **single child**: otherwise the one direct child that holds every pruned weight (every prunable weight
   when nothing is pruned yet);
4. **undecided**: otherwise; the caller warns with the fix and audits what it can without a forward.

"Pruned" means a mask with at least one zero, from pruning hooks or exact zeros. Inputs follow
Lightning's ``example_input_array`` convention: a tuple is passed as positional arguments, a dict as
keyword arguments, anything else as the single argument.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from prune_landscape.layers import prunable_parameters
from prune_landscape.masks import current_masks
from prune_landscape.modelcopy import plain_copy

__all__ = ["NetworkChoice", "NetworkSpec", "check_network_spec", "choose_network", "call_with_inputs"]

#: What ``LandscapeAudit(network=...)`` accepts.
NetworkSpec = str | Callable[[nn.Module], nn.Module] | None

_LIBRARY_PREFIXES = ("torch.", "pytorch_lightning.", "lightning.", "lightning_fabric.")


@dataclass(frozen=True)
class NetworkChoice:
    """The network the audit reads, and why.

    Attributes:
        module: the chosen network, or None when undecided.
        name: its submodule path (``""``: the LightningModule itself; ``"<callable>"``: from a callable).
        rule: ``"argument"``, ``"forward"``, ``"single child"`` or ``"undecided"``.
        reason: one sentence on how the choice was made (or why none could be).
        fix: for an undecided choice, the argument that settles it.
        provisional: undecided while nothing is pruned yet; worth trying again once masks appear (a
            teacher that is never pruned stops counting then).
    """

    module: nn.Module | None
    name: str
    rule: str
    reason: str
    fix: str = ""
    provisional: bool = False

    @property
    def decided(self) -> bool:
        return self.module is not None

    def describe(self) -> str:
        target = "the LightningModule itself" if self.name == "" else repr(self.name)
        if not self.decided:
            return f"no network chosen ({self.reason}); {self.fix}"
        return f"auditing {target} (rule: {self.rule}; {self.reason})"

    def to_dict(self) -> dict[str, str]:
        return {"name": self.name, "rule": self.rule, "reason": self.reason, "fix": self.fix}


def check_network_spec(network: Any) -> None:
    """Raise at construction unless ``network`` is None, a string or a callable."""
    if network is not None and not isinstance(network, str) and not callable(network):
        raise ValueError(
            "network must be a submodule name (str), a callable pl_module -> nn.Module, or None, "
            f"got {type(network).__name__}"
        )


def _resolve_explicit(pl_module: nn.Module, network: str | Callable[[nn.Module], nn.Module]) -> NetworkChoice:
    if isinstance(network, str):
        try:
            module = pl_module.get_submodule(network) if network else pl_module
        except AttributeError:
            children = [name for name, _ in pl_module.named_children()]
            raise ValueError(
                f"network={network!r} is not a submodule of {type(pl_module).__name__}; expected one of {children} "
                "(or a dotted path below them, or '' for the module itself)"
            ) from None
        name, how = network, "the network= argument"
    else:
        module = network(pl_module)
        if not isinstance(module, nn.Module):
            raise ValueError(f"network callable must return an nn.Module, got {type(module).__name__}")
        name = next((n for n, m in pl_module.named_modules() if m is module), "<callable>")
        how = f"the network= callable {getattr(network, '__name__', type(network).__name__)}"
    if not prunable_parameters(module):
        raise ValueError(f"network={name!r} holds no prunable (linear or conv) weight; choose the network that is pruned")
    return NetworkChoice(module, name, "argument", f"given by {how}")


def _own_forward(pl_module: nn.Module) -> bool:
    """True when a user class (not Lightning's or torch's base) defines ``forward``."""
    for klass in type(pl_module).__mro__:
        if "forward" in vars(klass):
            return not klass.__module__.startswith(_LIBRARY_PREFIXES)
    return False


def _to_device(value: Any, device: torch.device) -> Any:
    if isinstance(value, torch.Tensor):
        return value.to(device)
    if isinstance(value, Mapping):
        return {key: _to_device(item, device) for key, item in value.items()}
    if isinstance(value, (tuple, list)):
        return type(value)(_to_device(item, device) for item in value)
    return value


def call_with_inputs(module: nn.Module, inputs: Any) -> Any:
    """``module(inputs)`` with Lightning's convention: a tuple spreads as arguments, a dict as keywords."""
    parameter = next(iter(module.parameters()), None)
    if parameter is not None:
        inputs = _to_device(inputs, parameter.device)
    if isinstance(inputs, tuple):
        return module(*inputs)
    if isinstance(inputs, Mapping):
        return module(**inputs)
    return module(inputs)


def _owner(name: str, module: nn.Module) -> nn.Module:
    return module.get_submodule(name.rpartition(".")[0])


def _forward_problem(pl_module: nn.Module, inputs: Any, prunable: list[str]) -> str | None:
    """Why ``forward`` cannot be the audited network (None: it can)."""
    if not _own_forward(pl_module):
        return f"{type(pl_module).__name__} defines no forward"
    if inputs is None:
        return "no batch inputs to try forward on"
    twin = plain_copy(pl_module)
    twin.eval()  # no BatchNorm statistics or dropout draws from a trial call
    reached: set[int] = set()
    handles = [m.register_forward_pre_hook(lambda m, _args: reached.add(id(m))) for m in twin.modules()]
    try:
        with torch.no_grad():
            output = call_with_inputs(twin, inputs)
    except Exception as error:  # any failure only means forward is not the network to audit
        return f"forward(inputs) raised {type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"
    finally:
        for handle in handles:
            handle.remove()
    if not isinstance(output, torch.Tensor):
        return f"forward returns a {type(output).__name__}, not a tensor"
    missed = [name for name in prunable if id(_owner(name, twin)) not in reached]
    if missed:
        return f"forward does not reach the weights {missed[:3]}{' ...' if len(missed) > 3 else ''}"
    return None


def choose_network(pl_module: nn.Module, network: NetworkSpec, inputs: Any) -> NetworkChoice:
    """Pick the network to audit (module docstring: the rules, in order).

    Args:
        pl_module: the LightningModule.
        network: the ``network=`` argument (None: automatic).
        inputs: one batch's inputs (from the ``batch_to_inputs`` hook), or None when there are none.

    Raises:
        ValueError: for an explicit ``network`` that names no submodule or holds no prunable weight.
    """
    if network is not None:
        return _resolve_explicit(pl_module, network)
    masks = current_masks(pl_module)
    pruned = [name for name, mask in masks.items() if not bool(mask.all())] or list(masks)
    what = "pruned" if any(not bool(mask.all()) for mask in masks.values()) else "prunable"
    problem = _forward_problem(pl_module, inputs, list(masks))
    if problem is None:
        return NetworkChoice(pl_module, "", "forward", "forward runs on a batch's inputs and reaches every prunable weight")
    owners = sorted({name.split(".", 1)[0] for name in pruned})
    children = dict(pl_module.named_children())
    direct = [name for name in pruned if "." not in name]
    if len(owners) == 1 and not direct and owners[0] in children:
        return NetworkChoice(
            children[owners[0]], owners[0], "single child", f"{problem}; {owners[0]!r} holds every {what} weight"
        )
    holders = [name for name in owners if name in children]
    suggestion = " or ".join(f"network={name!r}" for name in holders) or "network=lambda m: m.<your network>"
    return NetworkChoice(
        None, "", "undecided",
        f"{problem}, and the {what} weights lie in {len(owners)} places ({', '.join(owners)})",
        f"pass LandscapeAudit({suggestion}) to choose",
        provisional=what == "prunable",
    )
