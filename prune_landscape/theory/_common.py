"""Shared helpers for the rule modules: the standard facts a finding cites, and the UNKNOWN finding."""

from __future__ import annotations

from typing import Any

from prune_landscape.theory.facts import NetworkFacts
from prune_landscape.theory.findings import Axis, Existence, Finding, Landscape, Provenance

__all__ = ["cite", "undecided"]


def cite(facts: NetworkFacts, *extra: tuple[str, Any]) -> tuple[tuple[str, Any], ...]:
    """The facts every verdict names: activation, n, widths, final-layer fan-ins, whitening; plus ``extra``."""
    fan = sorted(facts.fan_in)
    median = float(fan[len(fan) // 2]) if len(fan) % 2 else (fan[len(fan) // 2 - 1] + fan[len(fan) // 2]) / 2
    base = [
        ("scope", facts.scope),
        ("activation", facts.activation),
        ("n", facts.n),
        ("widths", facts.widths),
        ("effective_widths", facts.effective_widths),
        ("fan_in_min", min(fan) if fan else 0),
        ("fan_in_median", median if fan else 0.0),
        ("fan_in_max", max(fan) if fan else 0),
        ("last_hidden_width", facts.last_hidden_width),
        ("final_layer_dense", facts.final_dense),
    ]
    if facts.scope == "mlp":
        base += [("hidden_layers", facts.hidden_layers), ("hidden_biases", facts.hidden_biases), ("whitened", facts.whitened)]
    return tuple(base) + tuple(extra)


def undecided(rule: str, axis: Axis, provenance: Provenance, facts: NetworkFacts, missing: str, basis: str) -> Finding:
    """A rule whose other hypotheses hold but one fact is unknown: UNKNOWN, with the reason."""
    verdict = Landscape.UNKNOWN if axis is Axis.LANDSCAPE else Existence.UNKNOWN
    return Finding(rule, axis, verdict, provenance, cite(facts), f"cannot decide: {facts.note(missing)}", basis, (missing,))
