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

from prune_landscape.theory._common import cite, undecided
from prune_landscape.theory.closedness import Closedness
from prune_landscape.theory.facts import NetworkFacts
from prune_landscape.theory.findings import Axis, Existence, Finding, Landscape, Provenance

__all__ = ["RULES"]

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


_LIN1 = f"DERIVED; {_PAPER} 'scalar output, any sparsity' READ"


def lin_1(facts: NetworkFacts) -> Finding | None:
    """LIN-1: linear, one hidden layer, every equivalence class complete -> no spurious local minimum."""
    if not _one_hidden_classes(facts) or facts.closedness.non_complete_classes:
        return None
    return Finding(
        "LIN-1", Axis.LANDSCAPE, Landscape.NO_SPURIOUS_LOCAL_MIN, Provenance.DERIVED,
        cite(facts, ("classes", facts.closedness.classes), ("non_complete_classes", 0)),
        "linear one-hidden-layer net whose equivalence classes are all complete: every local minimum is "
        "global, for any data and convex loss", _LIN1,
    )


def lin_1_existence(facts: NetworkFacts) -> Finding | None:
    """LIN-1 (existence): complete classes make the product set a subspace, so the optimum is attained."""
    if not _one_hidden_classes(facts) or facts.closedness.non_complete_classes:
        return None
    return Finding(
        "LIN-1", Axis.EXISTENCE, Existence.OPTIMUM_EXISTS, Provenance.DERIVED,
        cite(facts, ("closedness", facts.closedness.status.name)),
        "all classes complete: the reachable matrices form a closed subspace, so the squared-loss optimum "
        "is attained", _LIN1,
    )


def lin_1d(facts: NetworkFacts) -> Finding | None:
    """LIN-1d: linear, any depth, scalar output -> no spurious local minimum."""
    if not _linear(facts) or facts.d_y != 1:
        return None
    return Finding(
        "LIN-1d", Axis.LANDSCAPE, Landscape.NO_SPURIOUS_LOCAL_MIN, Provenance.READ, cite(facts, ("d_y", 1)),
        "linear net with scalar output: every local minimum is global for any depth and sparse structure",
        f"{_PAPER} READ (claim)",
    )


def lin_1d_existence(facts: NetworkFacts) -> Finding | None:
    """LIN-1d (existence): scalar-output linear nets attain their optimum."""
    if not _linear(facts) or facts.d_y != 1:
        return None
    return Finding(
        "LIN-1d", Axis.EXISTENCE, Existence.OPTIMUM_EXISTS, Provenance.READ, cite(facts, ("d_y", 1)),
        "linear net with scalar output: the squared-loss optimum is attained", f"{_PAPER} READ (claim)",
    )


def lin_2(facts: NetworkFacts) -> Finding | None:
    """LIN-2: linear, one hidden layer, closed family (non-complete classes disjoint), whitened data."""
    if not _one_hidden_classes(facts) or not facts.closedness.disjoint_family:
        return None
    basis = f"DERIVED; {_PAPER} 'non-intersected first layer, dense others, orthogonal data' READ"
    if facts.whitened is None:
        return undecided("LIN-2", Axis.LANDSCAPE, Provenance.DERIVED, facts, "data", basis)
    if not facts.whitened:
        return None
    return Finding(
        "LIN-2", Axis.LANDSCAPE, Landscape.NO_SPURIOUS_LOCAL_MIN, Provenance.DERIVED,
        cite(facts, ("non_complete_classes", facts.closedness.non_complete_classes)),
        "linear net whose non-complete classes are disjoint from all others, on whitened data (X X^T ∝ I): "
        "every local minimum is global", basis,
    )


def lin_2d(facts: NetworkFacts) -> Finding | None:
    """LIN-2d: linear, deep, non-intersected first layer, dense other layers, whitened data."""
    if not _linear(facts) or (facts.hidden_layers or 0) < 2:
        return None
    if not facts.first_layer_non_intersected or not all(facts.dense_layers[1:]):
        return None
    if facts.whitened is None:
        return undecided("LIN-2d", Axis.LANDSCAPE, Provenance.READ, facts, "data", f"{_PAPER} READ (claim)")
    if not facts.whitened:
        return None
    return Finding(
        "LIN-2d", Axis.LANDSCAPE, Landscape.NO_SPURIOUS_LOCAL_MIN, Provenance.READ, cite(facts),
        "deep linear net, each input feeding at most one first-layer unit, other layers dense, whitened data: "
        "every local minimum is global", f"{_PAPER} READ (claim)",
    )


def lin_3(facts: NetworkFacts) -> Finding | None:
    """LIN-3: linear, sparse first layer with >= 2 non-complete classes, data not whitened -> RISKY."""
    if not _one_hidden_classes(facts) or facts.dense_layers[0] or facts.closedness.non_complete_classes < 2:
        return None
    basis = f"{_PAPER} READ ('low-rank constraint'); exact counterexample DERIVED"
    if facts.whitened is None:
        return undecided("LIN-3", Axis.LANDSCAPE, Provenance.READ, facts, "data", basis)
    if facts.whitened:
        return None
    return Finding(
        "LIN-3", Axis.LANDSCAPE, Landscape.RISKY, Provenance.READ,
        cite(facts, ("non_complete_classes", facts.closedness.non_complete_classes)),
        f"sparse first layer with {facts.closedness.non_complete_classes} non-complete classes on non-whitened "
        "data: the low-rank constraint allows sub-optimal local minima", basis,
    )


def lin_4(facts: NetworkFacts) -> Finding | None:
    """LIN-4: linear, d_y >= 3, a sparse layer beyond the first -> RISKY."""
    if not _linear(facts) or facts.d_y < 3 or not facts.sparse_beyond_first:
        return None
    sparse = [name for name, dense in zip(facts.layer_names[1:], facts.dense_layers[1:]) if not dense]
    return Finding(
        "LIN-4", Axis.LANDSCAPE, Landscape.RISKY, Provenance.READ, cite(facts, ("d_y", facts.d_y), ("sparse_layers", tuple(sparse))),
        f"{facts.d_y} outputs and sparse layers beyond the first ({', '.join(sparse)}): a sub-network's global "
        "minimum can be a sub-optimal local minimum of the whole", f"{_PAPER} READ (claim)",
    )


_CONTINUOUS_NON_POLYNOMIAL = ("relu", "smooth", "nonlinear")


def nl_1(facts: NetworkFacts) -> Finding | None:
    """NL-1: one hidden layer, continuous non-polynomial activation, biases, DENSE final layer, width >= n,
    distinct restricted inputs -> no spurious valley."""
    if facts.scope != "mlp" or facts.hidden_layers != 1 or facts.activation not in _CONTINUOUS_NON_POLYNOMIAL:
        return None
    if not facts.hidden_biases or not facts.final_dense:
        return None
    basis = f"DERIVED (masked Venturi-Bandeira-Bruna); {_PAPER} READ"
    if facts.n is None:
        return undecided("NL-1", Axis.LANDSCAPE, Provenance.DERIVED, facts, "n", basis)
    if facts.last_hidden_width < facts.n:
        return None
    if facts.distinct_restricted_inputs is None:
        return undecided("NL-1", Axis.LANDSCAPE, Provenance.DERIVED, facts, "data", basis)
    if not facts.distinct_restricted_inputs:
        return None
    return Finding(
        "NL-1", Axis.LANDSCAPE, Landscape.NO_SPURIOUS_VALLEY, Provenance.DERIVED,
        cite(facts, ("distinct_restricted_inputs", True)),
        f"dense final layer over {facts.last_hidden_width} >= n = {facts.n} effective hidden units with biases "
        "and distinct restricted inputs: no spurious valley", basis,
    )


def nl_3(facts: NetworkFacts) -> Finding | None:
    """NL-3: non-linear, last-hidden width >= n, but some output's fan-in < n -> RISKY."""
    if not facts.nonlinear:
        if facts.activation == "unknown":
            return undecided("NL-3", Axis.LANDSCAPE, Provenance.READ, facts, "activation", f"{_PAPER} READ")
        return None
    basis = f"{_PAPER} READ; exact construction DERIVED"
    if facts.n is None:
        return undecided("NL-3", Axis.LANDSCAPE, Provenance.READ, facts, "n", basis)
    if facts.last_hidden_width < facts.n or min(facts.fan_in) >= facts.n:
        return None
    narrow = sum(1 for m in facts.fan_in if m < facts.n)
    return Finding(
        "NL-3", Axis.LANDSCAPE, Landscape.RISKY, Provenance.READ, cite(facts, ("narrow_outputs", narrow)),
        f"wide net ({facts.last_hidden_width} >= n = {facts.n} effective last-hidden units) but a sparse final "
        f"layer leaves {narrow} output(s) with fan-in < n (min {min(facts.fan_in)}): spurious valleys and "
        "minima are possible", basis,
    )


RULES = (lin_1, lin_1_existence, lin_1d, lin_1d_existence, lin_2, lin_2d, lin_3, lin_4, nl_1, nl_3)
