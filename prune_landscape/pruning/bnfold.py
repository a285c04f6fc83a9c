"""Eval-mode BatchNorm folded into the layer that feeds it, for functional forward passes.

In eval mode ``BN(conv(x; W, b)) = conv(x; W * s, (b - mean) * s + beta)`` with ``s = gamma / sqrt(var + eps)``
per output channel. NTK-SAP runs two eval-mode forwards and a backward per noise batch; folding removes
every BatchNorm from them (a quarter of the time on ResNet-20), and the mask gradient flows through
``W * s`` unchanged. The result equals the unfolded network in exact arithmetic; in float32 the two differ
by rounding (about 1e-6 relative).

The twin network comes from ``torch.fx``: each BatchNorm whose only input is a Conv/Linear output used
nowhere else is removed, and that layer gets a bias. Unfolded modules are shared with the source, so
BatchNorm statistics recomputed in the source are what the twin reads. A model ``torch.fx`` cannot trace,
or whose folded twin disagrees with it on a check batch, is not folded (:meth:`FoldedNetwork.build`
returns None).

Example:
    >>> import torch
    >>> from torch import nn
    >>> net = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2), nn.ReLU()).eval()
    >>> x = torch.randn(4, 1, 5, 5)
    >>> folded = FoldedNetwork.build(net, x)
    >>> folded.pairs
    {'0': '1'}
    >>> weights = {"0.weight": net[0].weight.detach()}
    >>> bool(torch.allclose(folded(weights, x), net(x), atol=1e-6))
    True
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import fx, nn
from torch.func import functional_call

__all__ = ["FoldedNetwork"]

_PRODUCERS = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)


@dataclass(frozen=True)
class FoldedNetwork:
    """``source`` with its eval-mode BatchNorms folded away.

    Attributes:
        source: the network whose parameters and BatchNorm statistics are read at every call.
        twin: the traced network without the folded BatchNorms.
        pairs: producer module name -> the BatchNorm folded into it.
    """

    source: nn.Module
    twin: nn.Module
    pairs: dict[str, str]

    @classmethod
    def build(cls, source: nn.Module, check_inputs: torch.Tensor) -> FoldedNetwork | None:
        """The folded twin of ``source`` (in eval mode, statistics set), or None when nothing can be folded."""
        try:
            twin = fx.symbolic_trace(source)
        except Exception:  # noqa: BLE001 - any tracing failure just means: run unfolded
            return None
        modules = dict(twin.named_modules())
        pairs: dict[str, str] = {}
        for node in list(twin.graph.nodes):
            norm = modules.get(node.target) if node.op == "call_module" else None
            if not isinstance(norm, nn.modules.batchnorm._BatchNorm) or norm.running_mean is None:
                continue  # no running statistics: eval mode normalises with the batch, nothing to fold
            producer = node.args[0] if node.args else None
            if not (isinstance(producer, fx.Node) and producer.op == "call_module" and len(producer.users) == 1):
                continue
            layer = modules[producer.target]
            if type(layer) not in _PRODUCERS or layer.weight.shape[0] != norm.num_features:
                continue
            node.replace_all_uses_with(producer)
            twin.graph.erase_node(node)
            pairs[producer.target] = node.target
            # A private copy of the layer that owns a bias; its own tensors are never read (see _weights).
            replacement = copy.deepcopy(layer)
            if replacement.bias is None:
                replacement.bias = nn.Parameter(torch.zeros_like(layer.weight[:, 0].flatten()), requires_grad=False)
            parent, _, leaf = producer.target.rpartition(".")
            setattr(twin.get_submodule(parent) if parent else twin, leaf, replacement)
        if not pairs:
            return None
        twin.graph.lint()
        twin.recompile()
        folded = cls(source, twin, pairs)
        return folded if folded._agrees(check_inputs[:2]) else None

    def __call__(self, weights: Mapping[str, torch.Tensor], inputs: torch.Tensor) -> torch.Tensor:
        """``source`` in eval mode with the named parameters replaced by ``weights``, BatchNorms folded."""
        return functional_call(self.twin, self._weights(weights), (inputs,), strict=False)

    def folded_parameters(self, weights: Mapping[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
        """The folded layers' weights and biases (twin names), from ``weights`` or the source's own tensors.

        Callers whose weights and statistics stay fixed (SynFlow's |theta|) fold once with this and call the
        twin directly instead of folding at every call.
        """
        out = self._weights(dict(weights or {}))
        return {f"{layer}.{kind}": out[f"{layer}.{kind}"] for layer in self.pairs for kind in ("weight", "bias")}

    def _weights(self, weights: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        out = dict(weights)
        for layer_name, norm_name in self.pairs.items():
            layer, norm = self.source.get_submodule(layer_name), self.source.get_submodule(norm_name)
            scale = torch.rsqrt(norm.running_var + norm.eps)
            shift = -norm.running_mean * scale
            if norm.weight is not None:  # the affine parameters may be given too (e.g. along an interpolation)
                gamma = out.get(f"{norm_name}.weight", norm.weight.detach())
                scale, shift = scale * gamma, shift * gamma + out.get(f"{norm_name}.bias", norm.bias.detach())
            weight = out.get(f"{layer_name}.weight", layer.weight.detach())
            out[f"{layer_name}.weight"] = weight * scale.reshape(-1, *([1] * (weight.dim() - 1)))
            bias = out.get(f"{layer_name}.bias", layer.bias.detach() if layer.bias is not None else None)
            out[f"{layer_name}.bias"] = shift if bias is None else shift + bias * scale
        return out

    def _agrees(self, inputs: torch.Tensor) -> bool:
        """A guard against layouts the rule cannot see (e.g. a Linear on 3-D inputs before a BatchNorm1d)."""
        with torch.no_grad():
            expected = self.source(inputs)
            folded = self(dict(self.source.named_parameters()), inputs)
        if not isinstance(expected, torch.Tensor) or expected.shape != folded.shape:
            return False
        tolerance = 1e-3 * float(expected.abs().max()) + 1e-6
        return bool((expected - folded).abs().max() <= tolerance)
