"""The result types of the structure analysis (:func:`prune_landscape.structure.analyze_structure`): one
:class:`LayerStructure` per prunable layer and the :class:`Structure` of the whole network, with a JSON
view (``to_dict``) and a console table (``table``, also ``str()``).
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch

__all__ = ["LayerStructure", "Structure"]


@dataclass(frozen=True)
class LayerStructure:
    """One prunable layer under its mask.

    Attributes:
        name: the weight's parameter name (``"blocks.0.conv1.weight"``).
        module: the module's name (``"blocks.0.conv1"``).
        kind: ``"linear"``, ``"conv"``, ``"embedding"`` or ``"recurrent"``.
        shape: the weight's shape.
        kept: kept weights; ``total``: all weights; ``density``: their ratio.
        units: output units (neurons or channels); ``alive_units`` of them carry an input-to-output path.
        alive: bool tensor over the output units.
        unknown_units: units the analysis cannot decide (neither alive nor dead; see the module docstring).
        unknown: bool tensor over the output units marking those (None when there are none).
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
    unknown_units: int = 0
    unknown: torch.Tensor | None = field(default=None, repr=False, compare=False)

    @property
    def dead_units(self) -> int:
        """Output units certainly on no input-to-output path (UNKNOWN ones excluded)."""
        return self.units - self.alive_units - self.unknown_units

    @property
    def collapsed(self) -> bool:
        """True when no unit of the layer is alive and none is UNKNOWN."""
        return self.alive_units == 0 and self.unknown_units == 0

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
            "unknown_units": self.unknown_units,
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
        unknown_units: layer weight name -> units the analysis cannot decide (only layers with some).
        final_layer_source: ``"auto"`` (last prunable layer on the output's path) or ``"explicit"``.
        precision: the dtype of the generic passes (``"float64"`` or ``"float32"``).
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
    unknown_units: Mapping[str, int] = field(default_factory=dict)
    final_layer_source: str = "auto"
    precision: str = "float64"

    @property
    def total_unknown_units(self) -> int:
        """UNKNOWN units over all layers."""
        return int(sum(self.unknown_units.values()))

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
            "unknown_units": dict(self.unknown_units),
            "final_layer_source": self.final_layer_source,
            "precision": self.precision,
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
            f"of {self.last_hidden_width} effective last-hidden units ({self.last_hidden_units} in all)"
            + (" [chosen automatically; pass final_layer= to change]" if self.final_layer_source == "auto" else ""),
            f"global density {self.density:.4f} ({self.num_kept:,} of {self.num_total:,} weights); "
            f"dead units {self.total_dead_units}"
            + (f"; UNKNOWN units {self.total_unknown_units}" if self.total_unknown_units else "")
            + f"; collapsed layers: {', '.join(self.collapsed_layers) or 'none'}"
            + ("" if self.connected else "; NO input-to-output path"),
            "",
        ]
        width = max(len(layer.name) for layer in self.layers)
        header = f"{'layer':<{width}}  {'kind':<9} {'shape':<18} {'kept':>10} {'density':>8} {'alive':>11}"
        lines += [header, "-" * len(header)]
        for layer in self.layers:
            alive = f"{layer.alive_units}/{layer.units}"
            flag = "  COLLAPSED" if layer.collapsed else (f"  ({layer.unknown_units} UNKNOWN)" if layer.unknown_units else "")
            shape = "x".join(map(str, layer.shape))
            lines.append(
                f"{layer.name:<{width}}  {layer.kind:<9} {shape:<18} {layer.kept:>10,} {layer.density:>8.4f} {alive:>11}{flag}"
            )
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.table()
