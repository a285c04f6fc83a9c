"""The pruned network as a graph: prunable layers, the final layer, alive and dead units.

Connectivity comes from one forward and one backward pass (THEORY.md section 6) through the model itself
with its weights replaced by the 0/1 masks, biases 0, normalisation layers as the identity, max-pooling
as average pooling and activations that are non-zero at 0 (sigmoid, softplus) as the identity. A unit
(output channel or neuron) is *alive* iff it carries a path from the input (forward value > 0) and a path
to the output (gradient of the output sum > 0). This works for any topology: residuals, pooling,
BatchNorm. Only the sign matters, so every prunable layer's output, and the gradient arriving at it, is
reset to 0/1: path counts can then neither overflow nor underflow at any depth, and float32 is exact,
which keeps the pass as fast as a plain forward and backward.

Example:
    >>> import torch
    >>> from prune_landscape import analyze_structure, models
    >>> s = analyze_structure(models.mlp([4, 8, 3]), torch.zeros(1, 4))
    >>> s.final_layer, s.final_layer_dense, s.fan_in_min
    ('fc2.weight', True, 8)
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.func import functional_call
from torch.nn.utils import parametrize

from prune_landscape.masks import MaskSet, _current_tensor, find_parameter, prunable_parameters

__all__ = ["LayerStructure", "Structure", "analyze_structure", "final_layer_name"]

_NORM_TYPES = (nn.modules.batchnorm._BatchNorm, nn.LayerNorm, nn.GroupNorm, nn.modules.instancenorm._InstanceNorm)
# Non-zero at 0 (or negative): would create paths that the masks do not have.
_OFFSET_ACTIVATIONS = (nn.Sigmoid, nn.Softplus, nn.Hardsigmoid, nn.LogSigmoid)
_MAX_POOLS = {
    nn.MaxPool1d: nn.functional.avg_pool1d,
    nn.MaxPool2d: nn.functional.avg_pool2d,
    nn.MaxPool3d: nn.functional.avg_pool3d,
}
_ADAPTIVE_MAX_POOLS = {
    nn.AdaptiveMaxPool1d: nn.functional.adaptive_avg_pool1d,
    nn.AdaptiveMaxPool2d: nn.functional.adaptive_avg_pool2d,
    nn.AdaptiveMaxPool3d: nn.functional.adaptive_avg_pool3d,
}


_DTYPE = torch.float32


class _Indicator(torch.autograd.Function):
    """``x > 0`` as 0/1 in the forward pass, and ``grad > 0`` as 0/1 in the backward pass."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:
        return (x > 0).to(x.dtype)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        return (grad > 0).to(grad.dtype)


@dataclass(frozen=True)
class LayerStructure:
    """One prunable layer under its mask.

    Attributes:
        name: the weight's parameter name (``"blocks.0.conv1.weight"``).
        module: the module's name (``"blocks.0.conv1"``).
        kind: ``"linear"`` or ``"conv"``.
        shape: the weight's shape.
        kept: kept weights; ``total``: all weights; ``density``: their ratio.
        units: output units (neurons or channels); ``alive_units`` of them carry an input-to-output path.
        alive: bool tensor over the output units.
        collapsed: no unit is alive.
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

    @property
    def dead_units(self) -> int:
        """Output units on no input-to-output path."""
        return self.units - self.alive_units

    @property
    def collapsed(self) -> bool:
        """True when no unit of the layer is alive."""
        return self.alive_units == 0

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
            f"of {self.last_hidden_width} effective last-hidden units ({self.last_hidden_units} in all)",
            f"global density {self.density:.4f} ({self.num_kept:,} of {self.num_total:,} weights); "
            f"dead units {self.total_dead_units}; collapsed layers: {', '.join(self.collapsed_layers) or 'none'}"
            + ("" if self.connected else "; NO input-to-output path"),
            "",
        ]
        width = max(len(layer.name) for layer in self.layers)
        header = f"{'layer':<{width}}  {'kind':<6} {'shape':<18} {'kept':>10} {'density':>8} {'alive':>11}"
        lines += [header, "-" * len(header)]
        for layer in self.layers:
            alive = f"{layer.alive_units}/{layer.units}"
            flag = "  COLLAPSED" if layer.collapsed else ""
            shape = "x".join(map(str, layer.shape))
            lines.append(
                f"{layer.name:<{width}}  {layer.kind:<6} {shape:<18} {layer.kept:>10,} {layer.density:>8.4f} {alive:>11}{flag}"
            )
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.table()


def _connectivity_tensors(model: nn.Module, masks: Mapping[str, torch.Tensor], prunable: set[str]) -> dict[str, torch.Tensor]:
    """Replacement tensors for ``functional_call``: masks as weights, zero biases, identity norms."""
    replaced: dict[str, torch.Tensor] = {}

    def masked_weight(user_name: str, like: torch.Tensor) -> torch.Tensor:
        mask = masks.get(user_name)
        if mask is None:
            return torch.ones(like.shape, dtype=_DTYPE, device=like.device)
        return mask.to(device=like.device, dtype=_DTYPE)

    def by_role(module: nn.Module, base: str, tensor: torch.Tensor) -> torch.Tensor:
        if not tensor.is_floating_point():
            return tensor
        if base in ("bias", "running_mean"):
            return torch.zeros_like(tensor, dtype=_DTYPE)
        if isinstance(module, _NORM_TYPES) and base in ("weight", "running_var"):
            return torch.ones_like(tensor, dtype=_DTYPE)
        return tensor.detach().abs().to(_DTYPE)

    for module_name, module in model.named_modules():
        prefix = f"{module_name}." if module_name else ""
        owner_attr = None
        if type(module).__name__ == "ParametrizationList":
            owner_prefix, _, owner_attr = module_name.rpartition(".parametrizations.")
            owner_attr = (f"{owner_prefix}." if owner_prefix else "") + owner_attr
        for name, tensor in module._parameters.items():
            if tensor is None:
                continue
            if owner_attr is not None and name == "original":
                user_name = owner_attr
            else:
                user_name = prefix + (name[: -len("_orig")] if name.endswith("_orig") else name)
            if user_name in prunable:
                replaced[prefix + name] = masked_weight(user_name, tensor)
            else:
                base = user_name.rpartition(".")[2]
                owner = model.get_submodule(user_name.rpartition(".")[0]) if "." in user_name else model
                replaced[prefix + name] = by_role(owner, base, tensor)
        for name, tensor in module._buffers.items():
            if tensor is None:
                continue
            is_prune_mask = name.endswith("_mask") and f"{name[: -len('_mask')]}_orig" in module._parameters
            is_param_mask = name == "mask" and ".parametrizations." in prefix
            if is_prune_mask or is_param_mask:
                replaced[prefix + name] = torch.ones_like(tensor, dtype=_DTYPE)
            else:
                replaced[prefix + name] = by_role(module, name, tensor)
    return replaced


def _channel_sums(tensor: torch.Tensor) -> torch.Tensor:
    """Sum over every dimension but the channel one (dim 1); (batch, features) -> features."""
    dims = [d for d in range(tensor.dim()) if d != 1]
    return tensor.sum(dim=dims) if dims else tensor


def _default_input(model: nn.Module, prunable: list[str]) -> torch.Tensor:
    module, _ = find_parameter(model, prunable[0])
    if isinstance(module, nn.Linear):
        return torch.zeros(1, module.in_features)
    raise ValueError(
        f"analyze_structure needs an example_input for a model whose first prunable layer is "
        f"{type(module).__name__} (expected a tensor such as torch.zeros(1, 3, 32, 32)), got None"
    )


def analyze_structure(
    model: nn.Module,
    example_input: torch.Tensor | tuple | list | None = None,
    masks: MaskSet | Mapping[str, torch.Tensor] | None = None,
    *,
    final_layer: str | None = None,
) -> Structure:
    """Analyse a pruned network: alive units, dead units, collapsed layers and the final layer's fan-in.

    Args:
        model: any module with conv/linear layers; its weights, mode and hooks are left as they were.
        example_input: one input (or a batch; only its shape is used, the values never); an
            ``(inputs, targets)`` pair is accepted. May be omitted when the first prunable layer is Linear.
        masks: the masks to analyse; default ``MaskSet.from_module(model)``. Prunable weights without a
            mask count as dense.
        final_layer: the classifier's weight name, when it is not the last prunable layer the forward runs.

    Returns:
        A frozen :class:`Structure`.

    Raises:
        ValueError: if the model has no prunable layer, a mask does not fit, or the final layer is unknown.
    """
    prunable = prunable_parameters(model)
    mask_set = MaskSet.for_model(model, masks)
    if isinstance(example_input, (tuple, list)):
        example_input = example_input[0]
    if example_input is None:
        example_input = _default_input(model, prunable)
    if not isinstance(example_input, torch.Tensor):
        raise ValueError(f"example_input must be a tensor or an (inputs, targets) pair, got {type(example_input).__name__}")

    module_of = {name: find_parameter(model, name)[0] for name in prunable}
    name_of_module = {id(m): n for n, m in module_of.items()}
    device = next(iter(model.parameters())).device
    x = torch.ones((1, *example_input.shape[1:]), dtype=_DTYPE, device=device, requires_grad=True)

    outputs: dict[str, list[torch.Tensor]] = {}
    inputs: dict[str, torch.Tensor] = {}
    order: list[str] = []
    calls: list[tuple[str, str]] = []
    handles = []
    module_names = {id(m): n for n, m in model.named_modules()}

    def capture(module: nn.Module, args: tuple, output: torch.Tensor) -> torch.Tensor:
        name = name_of_module[id(module)]
        if name not in outputs:
            order.append(name)
            outputs[name] = []
            inputs[name] = torch.zeros(args[0].shape[1], dtype=_DTYPE, device=device)
        inputs[name] = inputs[name] + _channel_sums(args[0].detach())
        indicator = _Indicator.apply(output)
        outputs[name].append(indicator)
        return indicator

    def record(module: nn.Module, args: tuple, output: Any) -> Any:
        calls.append((module_names.get(id(module), "?"), type(module).__name__))
        if isinstance(module, _OFFSET_ACTIVATIONS):
            return args[0]
        if type(module) in _MAX_POOLS:
            return _MAX_POOLS[type(module)](args[0], module.kernel_size, module.stride, module.padding, module.ceil_mode)
        if type(module) in _ADAPTIVE_MAX_POOLS:
            return _ADAPTIVE_MAX_POOLS[type(module)](args[0], module.output_size)
        return None

    training = {m: m.training for m in model.modules()}
    pruned_attrs = [(m, attr) for m in model.modules() for attr in list(m._parameters) if attr.endswith("_orig")]
    try:
        for name, module in module_of.items():
            handles.append(module.register_forward_hook(capture))
        for module in model.modules():
            if not list(module.children()) and not parametrize.is_parametrized(module):
                handles.append(module.register_forward_hook(record))
        model.eval()
        replacements = _connectivity_tensors(model, mask_set, set(prunable))
        with torch.enable_grad():
            result = functional_call(model, replacements, (x,), strict=False)
            if isinstance(result, (tuple, list)):
                result = result[0]
            captured = [t for name in order for t in outputs[name]]
            grads = torch.autograd.grad(result.sum(), captured, allow_unused=True)
    finally:
        for handle in handles:
            handle.remove()
        for module, flag in training.items():
            module.training = flag
        for module, attr in pruned_attrs:  # the prune pre-hook left our replacement in `module.<attr>`
            base = attr[: -len("_orig")]
            if f"{base}_mask" in module._buffers:
                setattr(module, base, module._parameters[attr] * module._buffers[f"{base}_mask"])

    if final_layer is None:
        final_name = order[-1] if order else prunable[-1]
    else:
        candidates = [n for n in prunable if final_layer in (n, n.rpartition(".")[0])]
        if not candidates:
            raise ValueError(f"final_layer {final_layer!r} is not a prunable layer; expected one of {prunable}")
        final_name = candidates[0]
    if final_name not in outputs:
        raise ValueError(f"the final layer {final_name!r} never ran in the forward pass")

    grad_iter = iter(grads)
    alive_of: dict[str, torch.Tensor] = {}
    for name in order:
        forward = sum(_channel_sums(t.detach()) for t in outputs[name])
        backward = sum(_channel_sums(g) if g is not None else torch.zeros_like(forward) for g in (next(grad_iter) for _ in outputs[name]))
        alive_of[name] = ((forward > 0) & (backward > 0)).cpu() if name != final_name else (forward > 0).cpu()

    layers = []
    forward_order = [n for n in order if n != final_name] + [final_name]
    for name in forward_order:
        module = module_of[name]
        mask = mask_set.get(name)
        if mask is None:
            shape = tuple(_current_tensor(module, name.rpartition(".")[2]).shape)
            kept = total = int(torch.Size(shape).numel())
        else:
            shape, kept, total = tuple(mask.shape), int(mask.sum()), mask.numel()
        alive = alive_of[name]
        layers.append(
            LayerStructure(
                name=name,
                module=name.rpartition(".")[0],
                kind="linear" if isinstance(module, nn.Linear) else "conv",
                shape=shape,
                kept=kept,
                total=total,
                density=kept / total if total else 1.0,
                units=int(alive.numel()),
                alive_units=int(alive.sum()),
                alive=alive,
            )
        )

    final_module = module_of[final_name]
    final_mask = mask_set.get(final_name)
    if final_mask is None:
        final_mask = torch.ones(layers[-1].shape, dtype=torch.bool)
    if isinstance(final_module, (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)):
        final_mask = final_mask.transpose(0, 1)
    connections = final_mask.reshape(final_mask.shape[0], final_mask.shape[1], -1).any(dim=2)
    groups = getattr(final_module, "groups", 1)
    if groups != 1:
        raise ValueError(f"grouped final layers are not supported, got groups={groups} in {final_name!r}")
    fed = (inputs[final_name] > 0).cpu()
    effective = fed & connections.any(dim=0)
    fan_in = (connections & effective.unsqueeze(0)).sum(dim=1)
    dense = bool(effective.any()) and bool(connections[:, effective].all())

    return Structure(
        layers=tuple(layers),
        final_layer=final_name,
        final_layer_dense=dense,
        fan_in=tuple(int(v) for v in fan_in),
        last_hidden_units=int(fed.numel()),
        last_hidden_width=int(effective.sum()),
        dead_units={layer.name: layer.dead_units for layer in layers},
        collapsed_layers=tuple(layer.name for layer in layers if layer.collapsed),
        connected=bool(layers[-1].alive_units > 0),
        call_order=tuple(calls),
        inferred=mask_set.inferred,
    )



def final_layer_name(model: nn.Module, example_input: torch.Tensor | None = None) -> str:
    """The classifier's weight name: the last prunable layer the forward pass runs.

    Without ``example_input`` (and a conv first layer) this falls back to the last prunable layer in
    registration order, which is the classifier for every built-in and torchvision model.
    """
    try:
        return analyze_structure(model, example_input, MaskSet({})).final_layer
    except ValueError:
        if example_input is not None:
            raise
        return prunable_parameters(model)[-1]
