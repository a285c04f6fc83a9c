"""The two-factor closedness check against THEORY.md's examples and an exact decision on every small pattern."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from prune_landscape.theory.closedness import Closedness, check_closedness, equivalence_classes


def _exact_small(m2: np.ndarray, m1: np.ndarray) -> bool:
    """Exact closedness when the product has at most 2 rows and 2 columns (the whole matrix is the block).

    Each effective unit j adds ``u_j v_j^T`` on ``R_j x C_j``. A unit whose rectangle is not the full 2x2
    block adds an arbitrary vector on its entries (a subspace). Units covering the full block add rank-1
    matrices: none -> a subspace (closed); two or more -> every 2x2 matrix (closed); exactly one -> the
    set rank1 + span(E), E = union of the other units' entries, which is closed unless |E| == 1
    (|E| = 0: the rank-1 variety; |E| >= 2: everything; |E| = 1: the LU limit [[0,1],[1,e]] -> J).
    """
    units = [j for j in range(m2.shape[1]) if m2[:, j].any() and m1[j].any()]
    if m2.shape[0] < 2 or m1.shape[1] < 2:
        return True
    full = [j for j in units if m2[:, j].all() and m1[j].all()]
    if len(full) != 1:
        return True
    covered = np.zeros((2, 2), bool)
    for j in units:
        if j != full[0]:
            covered |= np.outer(m2[:, j], m1[j])
    return int(covered.sum()) != 1


def _all_patterns():
    for outputs, hidden, inputs in itertools.product((1, 2), (1, 2, 3), (1, 2)):
        for bits2 in itertools.product((0, 1), repeat=outputs * hidden):
            m2 = np.array(bits2, bool).reshape(outputs, hidden)
            for bits1 in itertools.product((0, 1), repeat=hidden * inputs):
                yield m2, np.array(bits1, bool).reshape(hidden, inputs)


def test_exhaustive_against_exact_decision():
    counts = {"patterns": 0, "decided": 0, "not_closed_exact": 0, "not_closed_found": 0}
    for m2, m1 in _all_patterns():
        exact_closed = _exact_small(m2, m1)
        result = check_closedness(m2, m1)
        counts["patterns"] += 1
        counts["not_closed_exact"] += not exact_closed
        if result.status is Closedness.UNKNOWN:
            continue
        counts["decided"] += 1
        # Soundness both ways: never CLOSED for a non-closed pattern, never a certificate for a closed one.
        assert (result.status is Closedness.CLOSED) == exact_closed, (m2.astype(int), m1.astype(int), result)
        if result.status is Closedness.NOT_CLOSED:
            counts["not_closed_found"] += 1
            cert = result.certificate
            assert cert.kind == "LU"
            block = np.ix_(cert.rows, cert.columns)
            assert m2[list(cert.rows), cert.unit].all() and m1[cert.unit, list(cert.columns)].all()
            others = (m2.astype(int) @ m1.astype(int))[block] - 1
            assert int((others > 0).sum()) == 1
    # 2 outputs x 2 inputs: the exact criterion decides every pattern, and so does the check.
    print(counts)
    assert counts["patterns"] == sum(2 ** (o * h + h * i) for o in (1, 2) for h in (1, 2, 3) for i in (1, 2))
    assert counts["decided"] == counts["patterns"]
    assert counts["not_closed_found"] == counts["not_closed_exact"] > 0


@pytest.mark.parametrize(
    ("m2", "m1", "expected"),
    [
        ([[1, 1], [0, 1]], [[1, 0], [1, 1]], Closedness.NOT_CLOSED),
        (np.triu(np.ones((3, 3))), np.tril(np.ones((3, 3))), Closedness.NOT_CLOSED),
        (np.ones((3, 2)), np.ones((2, 4)), Closedness.CLOSED),
        ([[1, 1, 1]], [[1, 0, 1, 1], [0, 1, 0, 0], [1, 1, 1, 0]], Closedness.CLOSED),
        ([[1, 1, 1]], [[1, 0, 1], [1, 1, 0], [0, 1, 1]], Closedness.CLOSED),
    ],
)
def test_theory_closedness_table(m2, m1, expected):
    assert check_closedness(np.array(m2), np.array(m1)).status is expected


def test_lu_certificate_of_section_5():
    result = check_closedness(torch.tensor([[1, 1], [0, 1]]).bool(), torch.tensor([[1, 0], [1, 1]]).bool())
    assert result.status is Closedness.NOT_CLOSED
    cert = result.certificate
    assert (cert.kind, cert.unit, cert.rows, cert.columns) == ("LU", 1, (0, 1), (0, 1))


def test_lu_certificate_really_has_no_attained_infimum():
    # The section 5 family W2(e) W1(e) -> J = [[0,1],[1,0]] while no masked factorisation equals J.
    for e in (1e-1, 1e-3, 1e-6):
        w1 = np.array([[-1 / e, 0.0], [1.0, e]])
        w2 = np.array([[1.0, 1 / e], [0.0, 1.0]])
        assert np.abs(w2 @ w1 - np.array([[0, 1], [1, e]])).max() < 1e-9
    # W2 W1 = [[a p, b q + b' q'], [0, ...]]: entry (1,0) = w2[1,1] w1[1,0]; J needs w2[1,1] w1[1,0] = 1
    # and w2[1,1] w1[1,1] = 0 -> w1[1,1] = 0, then entry (0,1) = w2[0,1] w1[1,1] = 0 != 1.


def test_parallel_columns_certificate_and_its_transpose():
    m2, m1 = np.ones((2, 2), bool), np.array([[1, 1, 0], [0, 1, 1]], bool)
    result = check_closedness(m2, m1)
    assert result.status is Closedness.NOT_CLOSED
    assert result.certificate.kind == "parallel-columns"
    assert result.certificate.rows == (0, 1) and result.certificate.columns == (0, 1, 2)
    transposed = check_closedness(m1.T, m2.T)
    assert transposed.status is Closedness.NOT_CLOSED
    assert transposed.certificate.kind == "parallel-columns"
    assert transposed.certificate.rows == (0, 1, 2) and transposed.certificate.columns == (0, 1)
    # Numerically: [[1,0,1],[0,1,0]] is approached (columns 1 and 3 parallel, middle column independent).
    for eps in (1e-2, 1e-4):
        u, up = np.array([1.0, 0.0]), np.array([1.0, eps])
        w = np.stack([u, -u / eps + up / eps, up], axis=1)
        assert np.abs(w - np.array([[1, 0, 1], [0, 1, eps]])).max() <= eps + 1e-9


def test_equivalence_classes_group_identical_rectangles_and_drop_dead_units():
    m2 = np.array([[1, 1, 0, 1], [1, 1, 0, 0]], bool)
    m1 = np.array([[1, 1], [1, 1], [1, 0], [0, 0]], bool)
    units, class_of_unit, rows, columns = equivalence_classes(m2, m1)
    assert units.tolist() == [0, 1]  # unit 2 has no output, unit 3 no input
    assert class_of_unit[0] == class_of_unit[1] and rows.shape[0] == 1
    assert check_closedness(m2, m1).status is Closedness.CLOSED  # one complete class of size 2


def test_rejects_mismatched_hidden_sizes():
    with pytest.raises(ValueError, match="hidden"):
        check_closedness(np.ones((2, 3)), np.ones((2, 2)))
