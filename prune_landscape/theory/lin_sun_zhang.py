"""Rules from Lin, Sun & Zhang: sparse linear networks and the final layer of sparse one-hidden-layer nets.

Citations:
    Dachao Lin, Ruoyu Sun, Zhihua Zhang. "On the Landscape of One-hidden-layer Sparse Networks and
    Beyond." arXiv:2009.07439 (2020; v4 2022). Earlier version: "Landscape of Sparse Linear Network: A
    Brief Investigation" (2020).
    Anonymous (same group). "On the Landscape of Sparse Linear Networks." ICLR 2021 submission
    (OpenReview). Abstract: every local minimum is global for scalar output with any sparse structure, or
    for a non-intersected sparse first layer with dense other layers and orthogonal data; sub-optimal
    local minima exist for a sparse first layer (low-rank constraint) or outputs of dimension >= 3.

Rules (THEORY.md section 3): LIN-1, LIN-1d, LIN-2, LIN-2d, LIN-3, LIN-4 (linear nets), NL-1 and NL-3
(the final layer of non-linear nets). Linear rules are stated for bias-free networks; an output bias
reduces a linear net with biases to the bias-free problem on centred data (facts.whitened is computed
on centred inputs then), a hidden bias without an output bias does not, and the rules then stay silent.
"""

from __future__ import annotations

from prune_landscape.theory.facts import NetworkFacts
from prune_landscape.theory.findings import Axis, Existence, Finding, Landscape, Provenance
from prune_landscape.theory.rules import Rule, cite

__all__ = ["LIN_1", "LIN_1_EXISTENCE", "LIN_1D", "LIN_1D_EXISTENCE", "LIN_2", "LIN_2D", "LIN_3", "LIN_4", "NL_1", "NL_3",
           "RULES"]

_PAPER = "Lin-Sun-Zhang"


def _linear(facts: NetworkFacts) -> bool:
    return (
        facts.scope == "mlp"
        and facts.activation == "linear"
        and (facts.hidden_layers or 0) >= 1
        and (facts.output_bias or not facts.hidden_biases)
    )


def _one_hidden_classes(facts: NetworkFacts) -> bool:
    return _linear(facts) and facts.hidden_layers == 1 and facts.closedness is not None


def _without_the_data_it_needs(rule: Rule, facts: NetworkFacts) -> Finding | None:
    """A data-dependent rule whose data condition (whitened or not) fails: undecided when the data is
    unknown (``whitened is None``), else the rule does not apply."""
    return rule.undecided(Axis.LANDSCAPE, facts, "data") if facts.whitened is None else None


def lin_1(rule: Rule, facts: NetworkFacts) -> Finding | None:
    """LIN-1: linear, one hidden layer, every equivalence class complete -> no spurious local minimum."""
    if not _one_hidden_classes(facts) or facts.closedness.non_complete_classes:
        return None
    return rule.finding(
        Axis.LANDSCAPE, Landscape.NO_SPURIOUS_LOCAL_MIN,
        cite(facts, ("classes", facts.closedness.classes), ("non_complete_classes", 0)),
        "linear one-hidden-layer net whose equivalence classes are all complete: every local minimum is "
        "global, for any data and convex loss",
    )


def lin_1_existence(rule: Rule, facts: NetworkFacts) -> Finding | None:
    """LIN-1 (existence): complete classes make the product set a subspace, so the optimum is attained."""
    if not _one_hidden_classes(facts) or facts.closedness.non_complete_classes:
        return None
    return rule.finding(
        Axis.EXISTENCE, Existence.OPTIMUM_EXISTS, cite(facts, ("closedness", facts.closedness.status.name)),
        "all classes complete: the reachable matrices form a closed subspace, so the squared-loss optimum "
        "is attained",
    )


def lin_1d(rule: Rule, facts: NetworkFacts) -> Finding | None:
    """LIN-1d: linear, any depth, scalar output -> no spurious local minimum."""
    if not _linear(facts) or facts.d_y != 1:
        return None
    return rule.finding(
        Axis.LANDSCAPE, Landscape.NO_SPURIOUS_LOCAL_MIN, cite(facts, ("d_y", 1)),
        "linear net with scalar output: every local minimum is global for any depth and sparse structure",
    )


def lin_1d_existence(rule: Rule, facts: NetworkFacts) -> Finding | None:
    """LIN-1d (existence): scalar-output linear nets attain their optimum."""
    if not _linear(facts) or facts.d_y != 1:
        return None
    return rule.finding(Axis.EXISTENCE, Existence.OPTIMUM_EXISTS, cite(facts, ("d_y", 1)),
                        "linear net with scalar output: the squared-loss optimum is attained")


def lin_2(rule: Rule, facts: NetworkFacts) -> Finding | None:
    """LIN-2: linear, one hidden layer, closed family (non-complete classes disjoint), whitened data."""
    if not _one_hidden_classes(facts) or not facts.closedness.disjoint_family:
        return None
    if not facts.whitened:
        return _without_the_data_it_needs(rule, facts)
    return rule.finding(
        Axis.LANDSCAPE, Landscape.NO_SPURIOUS_LOCAL_MIN,
        cite(facts, ("non_complete_classes", facts.closedness.non_complete_classes)),
        "linear net whose non-complete classes are disjoint from all others, on whitened data (X X^T ∝ I): "
        "every local minimum is global",
    )


def lin_2d(rule: Rule, facts: NetworkFacts) -> Finding | None:
    """LIN-2d: linear, deep, non-intersected first layer, dense other layers, whitened data."""
    if not _linear(facts) or (facts.hidden_layers or 0) < 2:
        return None
    if not facts.first_layer_non_intersected or not all(facts.dense_layers[1:]):
        return None
    if not facts.whitened:
        return _without_the_data_it_needs(rule, facts)
    return rule.finding(
        Axis.LANDSCAPE, Landscape.NO_SPURIOUS_LOCAL_MIN, cite(facts),
        "deep linear net, each input feeding at most one first-layer unit, other layers dense, whitened data: "
        "every local minimum is global",
    )


def lin_3(rule: Rule, facts: NetworkFacts) -> Finding | None:
    """LIN-3: linear, sparse first layer with >= 2 non-complete classes, data not whitened -> RISKY."""
    if not _one_hidden_classes(facts) or facts.dense_layers[0] or facts.closedness.non_complete_classes < 2:
        return None
    if facts.whitened is None or facts.whitened:
        return _without_the_data_it_needs(rule, facts)
    return rule.finding(
        Axis.LANDSCAPE, Landscape.RISKY, cite(facts, ("non_complete_classes", facts.closedness.non_complete_classes)),
        f"sparse first layer with {facts.closedness.non_complete_classes} non-complete classes on non-whitened "
        "data: the low-rank constraint allows sub-optimal local minima",
    )


def lin_4(rule: Rule, facts: NetworkFacts) -> Finding | None:
    """LIN-4: linear, d_y >= 3, a sparse layer beyond the first -> RISKY."""
    if not _linear(facts) or facts.d_y < 3 or not facts.sparse_beyond_first:
        return None
    sparse = [name for name, dense in zip(facts.layer_names[1:], facts.dense_layers[1:]) if not dense]
    return rule.finding(
        Axis.LANDSCAPE, Landscape.RISKY, cite(facts, ("d_y", facts.d_y), ("sparse_layers", tuple(sparse))),
        f"{facts.d_y} outputs and sparse layers beyond the first ({', '.join(sparse)}): a sub-network's global "
        "minimum can be a sub-optimal local minimum of the whole",
    )


_CONTINUOUS_NON_POLYNOMIAL = ("relu", "smooth", "nonlinear")


def nl_1(rule: Rule, facts: NetworkFacts) -> Finding | None:
    """NL-1: one hidden layer, continuous non-polynomial activation, biases, DENSE final layer, width >= n,
    distinct restricted inputs -> no spurious valley."""
    if facts.scope != "mlp" or facts.hidden_layers != 1 or facts.activation not in _CONTINUOUS_NON_POLYNOMIAL:
        return None
    if not facts.hidden_biases or not facts.final_dense:
        return None
    if facts.n is None:
        return rule.undecided(Axis.LANDSCAPE, facts, "n")
    if facts.last_hidden_width < facts.n:
        return None
    if facts.distinct_restricted_inputs is None:
        return rule.undecided(Axis.LANDSCAPE, facts, "data")
    if not facts.distinct_restricted_inputs:
        return None
    return rule.finding(
        Axis.LANDSCAPE, Landscape.NO_SPURIOUS_VALLEY, cite(facts, ("distinct_restricted_inputs", True)),
        f"dense final layer over {facts.last_hidden_width} >= n = {facts.n} effective hidden units with biases "
        "and distinct restricted inputs: no spurious valley",
    )


def nl_3(rule: Rule, facts: NetworkFacts) -> Finding | None:
    """NL-3: non-linear, last-hidden width >= n, but some output's fan-in < n -> RISKY."""
    if not facts.nonlinear:
        return rule.undecided(Axis.LANDSCAPE, facts, "activation") if facts.activation == "unknown" else None
    if facts.n is None:
        return rule.undecided(Axis.LANDSCAPE, facts, "n")
    if facts.last_hidden_width < facts.n or min(facts.fan_in) >= facts.n:
        return None
    narrow = sum(1 for m in facts.fan_in if m < facts.n)
    return rule.finding(
        Axis.LANDSCAPE, Landscape.RISKY, cite(facts, ("narrow_outputs", narrow)),
        f"wide net ({facts.last_hidden_width} >= n = {facts.n} effective last-hidden units) but a sparse final "
        f"layer leaves {narrow} output(s) with fan-in < n (min {min(facts.fan_in)}): spurious valleys and "
        "minima are possible",
    )


_LIN1_CITATION = f"DERIVED; {_PAPER} 'scalar output, any sparsity' READ"
_CLAIM = f"{_PAPER} READ (claim)"

LIN_1 = Rule("LIN-1", _LIN1_CITATION, Provenance.DERIVED, lin_1)
LIN_1_EXISTENCE = Rule("LIN-1", _LIN1_CITATION, Provenance.DERIVED, lin_1_existence)
LIN_1D = Rule("LIN-1d", _CLAIM, Provenance.READ, lin_1d)
LIN_1D_EXISTENCE = Rule("LIN-1d", _CLAIM, Provenance.READ, lin_1d_existence)
LIN_2 = Rule("LIN-2", f"DERIVED; {_PAPER} 'non-intersected first layer, dense others, orthogonal data' READ",
             Provenance.DERIVED, lin_2)
LIN_2D = Rule("LIN-2d", _CLAIM, Provenance.READ, lin_2d)
LIN_3 = Rule("LIN-3", f"{_PAPER} READ ('low-rank constraint'); exact counterexample DERIVED", Provenance.READ, lin_3)
LIN_4 = Rule("LIN-4", _CLAIM, Provenance.READ, lin_4)
NL_1 = Rule("NL-1", f"DERIVED (masked Venturi-Bandeira-Bruna); {_PAPER} READ", Provenance.DERIVED, nl_1)
NL_3 = Rule("NL-3", f"{_PAPER} READ; exact construction DERIVED", Provenance.READ, nl_3)

#: This paper's rules, in THEORY.md order.
RULES = (LIN_1, LIN_1_EXISTENCE, LIN_1D, LIN_1D_EXISTENCE, LIN_2, LIN_2D, LIN_3, LIN_4, NL_1, NL_3)
