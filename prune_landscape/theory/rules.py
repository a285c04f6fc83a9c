"""A rule of docs/THEORY.md section 3 as a value: its id, its citation, its provenance and its check.

Each paper module declares its rules as :class:`Rule` values and lists them in its ``RULES`` tuple;
:mod:`prune_landscape.theory.classify` runs them. A rule's check reads the facts and returns the finding
it proves (built with :meth:`Rule.finding`, so the id, provenance and citation come from the value and a
report can never disagree with the declaration), a finding that says which fact it lacked
(:meth:`Rule.undecided`), or None when its hypotheses do not hold.

Example:
    >>> from prune_landscape import models
    >>> from prune_landscape.theory.facts import collect_facts
    >>> from prune_landscape.theory.findings import Axis, Existence
    >>> def coercive(rule, facts):
    ...     if facts.weight_decay > 0:
    ...         return rule.finding(Axis.EXISTENCE, Existence.OPTIMUM_EXISTS_WITH_WEIGHT_DECAY, cite(facts), "coercive")
    ...     return None
    >>> wd = Rule("WD", "DERIVED", Provenance.DERIVED, coercive)
    >>> finding = wd(collect_facts(models.mlp([2, 3, 1]), weight_decay=1e-4))
    >>> finding.rule, finding.basis, finding.verdict.name
    ('WD', 'DERIVED', 'OPTIMUM_EXISTS_WITH_WEIGHT_DECAY')
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from prune_landscape.theory.facts import NetworkFacts
from prune_landscape.theory.findings import Axis, Existence, Finding, Landscape, Provenance

__all__ = ["Rule", "cite"]


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


@dataclass(frozen=True)
class Rule:
    """One rule of THEORY.md section 3 (one axis of it: LIN-1 has a landscape and an existence value).

    Attributes:
        id: the rule id of THEORY.md section 3 (``"NL-3"``); every finding of the rule carries it.
        citation: the rule's basis as THEORY.md states it (papers and provenance); every finding's ``basis``.
        provenance: the weakest link of the basis (THEORY.md's Provenance field).
        check: ``(rule, facts) -> Finding | None``; None for a rule that :func:`~prune_landscape.theory.classify.evaluate`
            applies itself (DEFAULT).
    """

    id: str
    citation: str
    provenance: Provenance
    check: Callable[[Rule, NetworkFacts], Finding | None] | None = field(default=None, repr=False)

    def __call__(self, facts: NetworkFacts) -> Finding | None:
        """Run the check on ``facts``: the finding, or None when the rule's hypotheses do not hold."""
        return None if self.check is None else self.check(self, facts)

    def finding(self, axis: Axis, verdict: Landscape | Existence | None, facts: tuple[tuple[str, Any], ...],
                explanation: str) -> Finding:
        """The finding this rule proves, with its id, provenance and citation."""
        return Finding(self.id, axis, verdict, self.provenance, facts, explanation, self.citation)

    def undecided(self, axis: Axis, facts: NetworkFacts, missing: str, reason: str | None = None) -> Finding:
        """The other hypotheses hold but the fact ``missing`` is unknown: UNKNOWN, with the reason.

        ``reason`` defaults to the facts' note on ``missing`` (why it is unknown).
        """
        verdict = Landscape.UNKNOWN if axis is Axis.LANDSCAPE else Existence.UNKNOWN
        return Finding(self.id, axis, verdict, self.provenance, cite(facts),
                       f"cannot decide: {reason or facts.note(missing)}", self.citation, (missing,))
