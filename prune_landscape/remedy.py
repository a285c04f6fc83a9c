"""The remedy for a sparse final layer, for every pruning pipeline, with its exact cost and never over budget.

The remedy keeps the classifier whole and takes the weights it needs from the other layers, so the total
kept budget K is unchanged. Three pipelines, one budget:

- this package: ``prune(..., final_layer_policy="dense")`` (or ``"min_density=x"``);
- Lightning's ``ModelPruning``: leave the head out of ``parameters_to_prune`` and prune ``T - K``
  weights globally from the rest (an int ``amount`` is an exact count in torch.nn.utils.prune);
- ``torch.nn.utils.prune.global_unstructured`` over the same list with the same count.

Feasibility. A dense head of T_f weights leaves K - T_f to the body. The body needs at least one kept
weight per unit of the layer that feeds the head (a unit without one carries nothing into the head) and
one per other layer (a layer with none has no path): ``body_minimum = units before the head + other
layers - 1``. When ``K - T_f`` is below that, a dense head does not fit, and the remedy is the highest
floor that does, ``min_density = (K - body_minimum) / T_f`` rounded down to 3 digits, with its cost;
when even that floor gives the head nothing, the remedy says which sparsity a dense head needs.

Example:
    >>> remedy = plan_remedy(final_module="fc2", final_total=20, final_kept=8, kept=60, total=100,
    ...                      body=(("fc1", "Linear", 16),))
    >>> remedy.extra_weights, remedy.feasible, remedy.settings["torch"]
    (12, True, 'prune.global_unstructured([(model.fc1, "weight")], pruning_method=prune.L1Unstructured, amount=40)')
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from prune_landscape.pruning.allocation import FinalLayerMode, FinalLayerPolicy, check_final_layer_budget

__all__ = ["PIPELINES", "Remedy", "plan_remedy"]

#: The pipelines a remedy is written for, in the order they are shown.
PIPELINES = ("prune_landscape", "lightning", "torch")


@dataclass(frozen=True)
class Remedy:
    """Keep the final layer dense (or as dense as the budget allows), paying with weights of the other layers.

    Attributes:
        layer: the final layer's module name (``"fc"``).
        extra_weights: weights the final layer gains under this remedy (exact).
        fraction_of_budget: ``extra_weights`` over the kept prunable weights.
        config: this package's setting (kept for the schema-1 key ``remedy.config``).
        feasible: a dense final layer fits the budget; False means the remedy is the floor ``min_density``.
        min_density: the highest final-layer floor the budget allows when a dense one does not fit.
        pipeline: the pipeline whose setting ``setting`` shows (``"prune_landscape"``, ``"lightning"``,
            ``"torch"``).
        settings: pipeline -> the exact setting (call or argument) that applies the remedy there.
        body_minimum: the fewest body weights the feasibility test requires (module docstring).
    """

    layer: str
    extra_weights: int
    fraction_of_budget: float
    config: str = 'prune_landscape.pruning.prune(..., final_layer_policy="dense")'
    feasible: bool = True
    min_density: float | None = None
    pipeline: str = "prune_landscape"
    settings: Mapping[str, str] = field(default_factory=dict)
    body_minimum: int = 0
    dense_sparsity: float | None = None

    @property
    def setting(self) -> str:
        """The setting for ``pipeline``."""
        return self.settings.get(self.pipeline, self.config)

    @property
    def text(self) -> str:
        """One line: what to keep, what it costs, and where the weights come from."""
        cost = (f"+{self.extra_weights:,} weights, {100 * self.fraction_of_budget:.1f} % of the kept budget, "
                f"taken from the other layers")
        if self.feasible:
            return f"keep `{self.layer}` dense: {cost}"
        if self.extra_weights > 0:
            return (f"a dense `{self.layer}` does not fit the budget (the other layers need at least "
                    f"{self.body_minimum:,} weights); floor it at min_density={self.min_density:g}: {cost}")
        needed = "" if self.dense_sparsity is None else f"; a dense `{self.layer}` fits at sparsity <= {self.dense_sparsity:.4g}"
        return (f"a dense `{self.layer}` does not fit the budget (the other layers need at least "
                f"{self.body_minimum:,} weights) and no floor adds to what it keeps{needed}")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready; schema-1 keys (``layer, extra_weights, fraction_of_budget, config, text``) kept."""
        return {"layer": self.layer, "extra_weights": self.extra_weights, "fraction_of_budget": self.fraction_of_budget,
                "config": self.config, "text": self.text, "feasible": self.feasible, "min_density": self.min_density,
                "pipeline": self.pipeline, "setting": self.setting, "settings": dict(self.settings),
                "body_minimum": self.body_minimum, "dense_sparsity": self.dense_sparsity}


def _attribute_path(module: str) -> str:
    """``"blocks.0.conv1"`` -> ``"model.blocks[0].conv1"`` (what a user types)."""
    return "model" + "".join(f"[{part}]" if part.isdigit() else f".{part}" for part in module.split("."))


def _parameter_list(final_module: str, body: Sequence[tuple[str, str, int]]) -> str:
    if len(body) <= 4:
        return "[" + ", ".join(f'({_attribute_path(name)}, "weight")' for name, _, _ in body) + "]"
    kinds = sorted({kind for _, kind, _ in body})
    types = kinds[0] if len(kinds) == 1 else "(" + ", ".join(kinds) + ")"
    types = re.sub(r"\b(\w+)\b", r"nn.\1", types)
    return f'[(m, "weight") for m in model.modules() if isinstance(m, {types}) and m is not {_attribute_path(final_module)}]'


def _floor_count(final_module: str, final_total: int, min_density: float, kept: int) -> int:
    """Weights a head of ``final_total`` keeps under ``prune(..., final_layer="min_density=x")``: the pruning
    package's own budget rule, so the remedy's cost and what the setting does agree by construction."""
    whole = {final_module: torch.ones(final_total, dtype=torch.bool)}
    return check_final_layer_budget(whole, kept, final_module, FinalLayerPolicy(FinalLayerMode.MIN_DENSITY, min_density))


def plan_remedy(*, final_module: str, final_total: int, final_kept: int, kept: int, total: int,
                body: Sequence[tuple[str, str, int]], pipeline: str = "prune_landscape") -> Remedy:
    """The remedy for a sparse final layer, with exact cost, for every pipeline.

    Args:
        final_module: the final layer's module name.
        final_total, final_kept: its weights, all and kept.
        kept, total: the kept and all prunable weights (the budget K and T).
        body: ``(module name, class name, output units)`` of every other prunable layer, in forward order
            (the last one feeds the head).
        pipeline: which pipeline's setting ``Remedy.setting`` shows.

    Raises:
        ValueError: for an unknown pipeline or counts that contradict each other.
    """
    if pipeline not in PIPELINES:
        raise ValueError(f"pipeline must be one of {PIPELINES}, got {pipeline!r}")
    if not 0 <= final_kept <= final_total <= total or not 0 <= kept <= total:
        raise ValueError(f"inconsistent counts: final layer {final_kept}/{final_total}, budget {kept}/{total}")
    body_minimum = (body[-1][2] + len(body) - 1) if body else 0
    spare = kept - body_minimum
    feasible = spare >= final_total
    head = final_total if feasible else max(final_kept, 0)
    min_density = None
    if not feasible:
        min_density = math.floor(1000 * max(spare, 0) / final_total) / 1000
        head = max(_floor_count(final_module, final_total, min_density, kept), final_kept) if min_density > 0 else final_kept
    extra = head - final_kept
    fraction = extra / max(1, kept)
    dense_sparsity = None if feasible else 1 - (final_total + body_minimum) / total
    names = _parameter_list(final_module, body)
    path = _attribute_path(final_module)
    pruned_total = total - kept  # everything pruned; the head loses final_total - head of it
    head_pruned = final_total - head
    body_pruned = pruned_total - head_pruned
    if feasible:
        ours = 'prune_landscape.pruning.prune(..., final_layer_policy="dense")'
        lightning = (f'ModelPruning("l1_unstructured", parameters_to_prune={names}, amount={body_pruned}, '
                     f'use_global_unstructured=True)  # {path} left out: it stays dense')
        torch_call = f"prune.global_unstructured({names}, pruning_method=prune.L1Unstructured, amount={body_pruned})"
    else:
        ours = f'prune_landscape.pruning.prune(..., final_layer="min_density={min_density:g}")'
        lightning = (f'prune.l1_unstructured({path}, "weight", amount={head_pruned}); then ModelPruning("l1_unstructured", '
                     f'parameters_to_prune={names}, amount={body_pruned}, use_global_unstructured=True)')
        torch_call = (f'prune.l1_unstructured({path}, "weight", amount={head_pruned}); '
                      f"prune.global_unstructured({names}, pruning_method=prune.L1Unstructured, amount={body_pruned})")
    settings = {"prune_landscape": ours, "lightning": lightning, "torch": torch_call}
    return Remedy(layer=final_module, extra_weights=extra, fraction_of_budget=fraction, config=ours, feasible=feasible,
                  min_density=min_density, pipeline=pipeline, settings=settings, body_minimum=body_minimum,
                  dense_sparsity=dense_sparsity)
