"""Rule from Zhang et al.: expressivity of narrow smooth networks (informational only).

Citation:
    Jiawei Zhang, Yushun Zhang, Mingyi Hong, Ruoyu Sun, Zhi-Quan Luo. "When Expressivity Meets
    Trainability: Fewer than n Neurons Can Work." NeurIPS 2021; arXiv:2210.12001. Abstract: for
    one-hidden-layer networks with a smooth activation and width m >= 2n/d, a global minimiser with zero
    training loss exists; a nice local region has no local minima or saddles, but gradient descent is
    not known to stay in it.

Rule (THEORY.md section 3): NL-5 - informational; it gives no landscape guarantee.
"""

from __future__ import annotations

from prune_landscape.theory.facts import NetworkFacts
from prune_landscape.theory.findings import Axis, Finding, Provenance
from prune_landscape.theory.rules import Rule, cite

__all__ = ["NL_5", "RULES"]


def nl_5(rule: Rule, facts: NetworkFacts) -> Finding | None:
    """NL-5: one hidden layer, smooth activation, dense, m * d >= 2n -> a zero-loss minimiser exists (generic data)."""
    if facts.scope != "mlp" or facts.hidden_layers != 1 or facts.activation != "smooth" or facts.n is None:
        return None
    if not all(facts.dense_layers):
        return None
    m, d = facts.widths[1], facts.widths[0]
    if m * d < 2 * facts.n:
        return None
    return rule.finding(
        Axis.INFO, None, cite(facts, ("m_times_d", m * d)),
        f"dense smooth one-hidden-layer net with m * d = {m * d} >= 2n = {2 * facts.n}: a zero-loss minimiser "
        "exists for generic data; this is no landscape guarantee",
    )


NL_5 = Rule("NL-5", "Zhang et al. READ", Provenance.READ, nl_5)

#: This paper's rule.
RULES = (NL_5,)
