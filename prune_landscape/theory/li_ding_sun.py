"""Rules from Li, Ding & Sun: width and the disappearance of sub-optimal basins.

Citation:
    Dawei Li, Tian Ding, Ruoyu Sun. "On the Benefit of Width for Neural Networks: Disappearance of
    Basins." SIAM Journal on Optimization 32(3), 2022; arXiv:1812.11039. Abstract: for any continuous
    activation, a class of wide networks has no sub-optimal basins (set-wise strict local minima); below
    a width threshold, strict local minima that are not global are constructed - a phase transition.
    Related: Tian Ding, Dawei Li, Ruoyu Sun. "Sub-optimal Local Minima Exist for Neural Networks with
    Almost All Non-linear Activations." arXiv:1911.01413 (why "no spurious local minimum" is never
    promised for non-linear nets).

Rules (THEORY.md section 3): NL-2 (masked version, DERIVED; certified through condition G, see
rank_condition.py) and NL-4 (the narrow side of the phase transition; its threshold is RECALLED).
"""

from __future__ import annotations

from prune_landscape.theory.facts import NetworkFacts
from prune_landscape.theory.findings import Axis, Finding, Landscape, Provenance
from prune_landscape.theory.rules import Rule, cite

__all__ = ["NL_2", "NL_4", "RULES"]


def nl_2(rule: Rule, facts: NetworkFacts) -> Finding | None:
    """NL-2: real-analytic activation, every output fan-in >= n, condition G certified -> no sub-optimal basin."""
    if facts.scope != "mlp" or facts.activation != "smooth":
        return None
    if facts.n is None:
        return rule.undecided(Axis.LANDSCAPE, facts, "n")
    if min(facts.fan_in) < facts.n:
        return None
    if facts.rank is None or not facts.rank.ranks:
        reason = facts.rank.reason if facts.rank is not None else "rank condition not computed"
        return rule.undecided(Axis.LANDSCAPE, facts, "rank_condition", reason)
    if not facts.rank.certified:
        return None
    data = "generic data (Gaussian inputs of the same n and d)" if facts.rank.generic else "the real data"
    return rule.finding(
        Axis.LANDSCAPE, Landscape.NO_SUBOPTIMAL_BASIN,
        cite(facts, ("rank_condition", "certified"), ("rank_data", "generic" if facts.rank.generic else "real"),
             ("rank_tolerance", facts.rank.tolerance_rule)),
        f"every output has fan-in >= n = {facts.n} and condition G holds on {data}: no sub-optimal basin",
    )


def nl_4(rule: Rule, facts: NetworkFacts) -> Finding | None:
    """NL-4: non-linear, last-hidden effective width < n (dense or not) -> RISKY."""
    if not facts.nonlinear:
        return rule.undecided(Axis.LANDSCAPE, facts, "activation") if facts.activation == "unknown" else None
    if facts.n is None:
        return rule.undecided(Axis.LANDSCAPE, facts, "n")
    if facts.last_hidden_width >= facts.n:
        return None
    return rule.finding(
        Axis.LANDSCAPE, Landscape.RISKY, cite(facts),
        f"narrow net: {facts.last_hidden_width} effective last-hidden units < n = {facts.n}; sub-optimal basins "
        "are possible (RECALLED: the width threshold is recalled from Li-Ding-Sun, not checked against its full "
        "text)",
    )


NL_2 = Rule("NL-2", "DERIVED (masked Li-Ding-Sun)", Provenance.DERIVED, nl_2)
NL_4 = Rule("NL-4", "Li-Ding-Sun READ (phase transition); threshold RECALLED", Provenance.RECALLED, nl_4)

#: This paper's rules, in THEORY.md order.
RULES = (NL_2, NL_4)
