"""Two-factor closedness check (THEORY.md section 4): is ``{W2 @ W1 : supp W2 <= M2, supp W1 <= M1}`` closed?

If the linear counterpart of a one-hidden-layer masked network is not closed, some finite data set has
an infimum that no weights attain: training drives weights to infinity (Le, Riccietti & Gribonval 2023
relate the ReLU case to this linear one). Deciding closedness exactly needs quantifier elimination, so
this module implements the polynomial, sound-but-incomplete test of THEORY.md section 4: it answers
CLOSED or NOT_CLOSED only with a proof, and UNKNOWN otherwise. Every step is a handful of integer matrix
products over the masks.

Example:
    >>> import numpy as np
    >>> result = check_closedness(np.array([[1, 1], [0, 1]]), np.array([[1, 0], [1, 1]]))
    >>> result.status.name, result.certificate.kind, result.certificate.unit
    ('NOT_CLOSED', 'LU', 1)
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

import numpy as np

__all__ = ["Certificate", "Closedness", "ClosednessResult", "check_closedness", "equivalence_classes"]

# The parallel-columns search is the only super-linear step; past this many candidate row pairs it stops
# and answers UNKNOWN (never a guess) so that a 512 x 512 layer pair stays well under a second.
_MAX_PAIR_CANDIDATES = 4096


class Closedness(enum.Enum):
    """Outcome of :func:`check_closedness`."""

    CLOSED = "closed"
    NOT_CLOSED = "not_closed"
    UNKNOWN = "unknown"


@dataclass(frozen=True)
class Certificate:
    """Why a pattern is not closed: a sub-block whose restriction is a known non-closed pattern.

    Attributes:
        kind: ``"LU"`` (a 2x2 block fully covered by ``unit`` where the other units cover exactly one
            entry) or ``"parallel-columns"`` (two units sharing two rows and one column, 2x3; or its
            transpose, 3x2).
        unit: the hidden unit covering the block (the first of the two for ``"parallel-columns"``).
        rows: output indices of the block; ``columns``: input indices of the block.
        units: every hidden unit the certificate uses.
    """

    kind: str
    unit: int
    rows: tuple[int, ...]
    columns: tuple[int, ...]
    units: tuple[int, ...]

    def to_dict(self) -> dict:
        return {"kind": self.kind, "unit": self.unit, "rows": list(self.rows), "columns": list(self.columns), "units": list(self.units)}

    def __str__(self) -> str:
        return f"{self.kind} certificate: unit {self.unit}, rows {self.rows}, columns {self.columns}"


@dataclass(frozen=True)
class ClosednessResult:
    """The verdict, its certificate (NOT_CLOSED only) and the step of section 4 that decided it.

    ``disjoint_family`` is True when every non-complete class is disjoint from every other class (the
    closed family that rule LIN-2 needs); ``non_complete_classes`` counts classes with ``r_P < min(|R|, |C|)``.
    """

    status: Closedness
    certificate: Certificate | None
    reason: str
    classes: int
    non_complete_classes: int
    disjoint_family: bool = False

    def to_dict(self) -> dict:
        return {
            "status": self.status.name,
            "disjoint_family": self.disjoint_family,
            "certificate": None if self.certificate is None else self.certificate.to_dict(),
            "reason": self.reason,
            "classes": self.classes,
            "non_complete_classes": self.non_complete_classes,
        }


def _as_mask(mask, name: str) -> np.ndarray:
    array = np.asarray(mask.detach().cpu().numpy() if hasattr(mask, "detach") else mask)
    if array.ndim != 2:
        raise ValueError(f"{name} must be a 2-D mask (rows = outputs, columns = inputs), got shape {array.shape}")
    return array != 0


def equivalence_classes(m2, m1) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Classes of effective units with equal rectangles ``R_j x C_j`` (section 4, steps 1-2).

    Returns:
        ``(units, class_of_unit, rows, columns)``: indices of the effective units, the class index of each,
        and per class the bool row set ``R_P`` (classes x outputs) and column set ``C_P`` (classes x inputs).
    """
    m2, m1 = _as_mask(m2, "M2"), _as_mask(m1, "M1")
    units = np.flatnonzero(m2.any(axis=0) & m1.any(axis=1))
    if units.size == 0:
        return units, units, np.zeros((0, m2.shape[0]), bool), np.zeros((0, m1.shape[1]), bool)
    keys = np.concatenate([m2[:, units].T, m1[units, :]], axis=1)
    unique, class_of_unit = np.unique(keys, axis=0, return_inverse=True)
    return units, class_of_unit.reshape(-1), unique[:, : m2.shape[0]], unique[:, m2.shape[0] :]


def _single_entry_block(overlapped: np.ndarray) -> tuple[int, int, int, int] | None:
    """A 2x2 sub-block with exactly one True entry, as ``(a, b, p, q)`` with the True entry at (a, p)."""
    free = (~overlapped).astype(np.float64)  # float: BLAS products, exact for counts below 2**53
    # (a, p) True needs a row b with free[b, p], a column q with free[a, q], and free[b, q]: Z Z^T Z > 0.
    if free.shape[0] <= free.shape[1]:
        reach = (free @ free.T) @ free
    else:
        reach = free @ (free.T @ free)
    hits = np.argwhere(overlapped & (reach > 0))
    if hits.size == 0:
        return None
    a, p = (int(v) for v in hits[0])
    rows_b = np.flatnonzero(free[:, p])
    columns_q = np.flatnonzero(free[a])
    sub = free[np.ix_(rows_b, columns_q)]
    b_index, q_index = (int(v) for v in np.argwhere(sub)[0])
    return a, int(rows_b[b_index]), p, int(columns_q[q_index])


def _lu_by_row_pairs(m2: np.ndarray, m1: np.ndarray, paths: np.ndarray) -> tuple[int, int, int, int, int] | None:
    """Step 4 vectorised over ordered row pairs (a, b): a unit j covering rows a, b and columns p, q with
    paths[a, p] > 1 and paths == 1 at (a, q), (b, p), (b, q). Returns ``(j, a, b, p, q)`` or None."""
    single = paths == 1
    rows = m2.shape[0]
    # All ordered pairs at once (rows <= 64 here): s[a, b, p] = p overlapped on row a and single on row b;
    # t[a, b, q] = q single on both rows. float32 products are exact for these counts (< 2**24).
    s = ((paths > 1)[:, None, :] & single[None, :, :]).reshape(rows * rows, -1).astype(np.float32)
    t = (single[:, None, :] & single[None, :, :]).reshape(rows * rows, -1).astype(np.float32)
    f1 = m1.astype(np.float32)
    covers = (m2.T[:, :, None] & m2.T[:, None, :]).reshape(m2.shape[1], rows * rows)
    covers[:, np.arange(rows) * (rows + 1)] = False  # a == b
    ok = covers & (f1 @ s.T > 0) & (f1 @ t.T > 0)
    hits = np.argwhere(ok)
    if hits.size == 0:
        return None
    j, pair = (int(v) for v in hits[0])
    a, b = divmod(pair, rows)
    p = int(np.flatnonzero(m1[j] & (s[pair] > 0))[0])
    q = int(np.flatnonzero(m1[j] & (t[pair] > 0))[0])
    return j, a, b, p, q


def _lu_certificate(m2: np.ndarray, m1: np.ndarray, paths: np.ndarray, units: np.ndarray) -> Certificate | None:
    """Step 4 on whichever side (outputs or inputs) is smaller; the LU property is transpose-invariant."""
    if min(m2.shape[0], m1.shape[1]) <= 64:
        if m2.shape[0] <= m1.shape[1]:
            found = _lu_by_row_pairs(m2, m1, paths)
            if found is None:
                return None
            j, a, b, p, q = found
        else:
            found = _lu_by_row_pairs(m1.T, m2.T, paths.T)
            if found is None:
                return None
            j, p, q, a, b = found
    else:
        for j in units:
            row_set, column_set = np.flatnonzero(m2[:, j]), np.flatnonzero(m1[j])
            if row_set.size < 2 or column_set.size < 2:
                continue
            block = _single_entry_block(paths[np.ix_(row_set, column_set)] > 1)
            if block is not None:
                a, b, p, q = int(row_set[block[0]]), int(row_set[block[1]]), int(column_set[block[2]]), int(column_set[block[3]])
                break
        else:
            return None
    rows_out, cols_out = tuple(sorted((a, b))), tuple(sorted((p, q)))
    others = tuple(int(k) for k in units if k != j and m2[list(rows_out), k].any() and m1[k, list(cols_out)].any())
    return Certificate("LU", int(j), rows_out, cols_out, (int(j), *others))


def _parallel_columns(m2: np.ndarray, m1: np.ndarray, paths: np.ndarray) -> tuple[Certificate | None, bool]:
    """Step 5: units j, j' sharing rows i1, i2 and columns k1 (j only), k2 (both), k3 (j' only) with
    path counts (1, 2, 1) on both rows. Returns the certificate (or None) and whether the search was cut."""
    once = (paths == 1).astype(np.float64)
    twice = (paths == 2).astype(np.float64)
    candidates = np.argwhere(np.triu((once @ once.T >= 2) & (twice @ twice.T >= 1), k=1))
    truncated = len(candidates) > _MAX_PAIR_CANDIDATES
    for i1, i2 in candidates[:_MAX_PAIR_CANDIDATES]:
        units = np.flatnonzero(m2[i1] & m2[i2])
        if units.size < 2:
            continue
        shared_once = (paths[i1] == 1) & (paths[i2] == 1)
        shared_twice = (paths[i1] == 2) & (paths[i2] == 2)
        has_own = m1[np.ix_(units, shared_once)].any(axis=1)
        both = m1[np.ix_(units, shared_twice)].astype(np.float64)
        pair = (both @ both.T > 0) & has_own[:, None] & has_own[None, :]
        np.fill_diagonal(pair, False)
        found = np.argwhere(pair)
        if found.size:
            j, jp = (int(units[v]) for v in found[0])
            k1 = int(np.flatnonzero(m1[j] & shared_once)[0])
            k2 = int(np.flatnonzero(m1[j] & m1[jp] & shared_twice)[0])
            k3 = int(np.flatnonzero(m1[jp] & shared_once)[0])
            return Certificate("parallel-columns", j, (int(i1), int(i2)), (k1, k2, k3), (j, jp)), truncated
    return None, truncated


def check_closedness(m2, m1) -> ClosednessResult:
    """Decide whether the masked product set ``{W2 W1}`` is closed, soundly (THEORY.md section 4).

    Args:
        m2: output x hidden mask (like ``nn.Linear.weight`` of the second layer); bool/0-1 array or tensor.
        m1: hidden x input mask of the first layer.

    Returns:
        A :class:`ClosednessResult`: CLOSED (steps 3), NOT_CLOSED with an LU or parallel-columns
        :class:`Certificate` (steps 4-5), or UNKNOWN when no step decides.

    Raises:
        ValueError: if the masks are not 2-D or their hidden sizes differ.

    Example:
        >>> import numpy as np
        >>> check_closedness(np.ones((3, 2)), np.ones((2, 4))).status.name
        'CLOSED'
    """
    m2, m1 = _as_mask(m2, "M2"), _as_mask(m1, "M1")
    if m2.shape[1] != m1.shape[0]:
        raise ValueError(f"M2 has {m2.shape[1]} hidden columns but M1 has {m1.shape[0]} hidden rows; expected equal")
    units, class_of_unit, rows, columns = equivalence_classes(m2, m1)
    n_classes = rows.shape[0]
    if n_classes == 0:
        return ClosednessResult(Closedness.CLOSED, None, "no effective unit: the set is {0}", 0, 0, True)
    sizes = np.bincount(class_of_unit, minlength=n_classes)
    complete = sizes >= np.minimum(rows.sum(axis=1), columns.sum(axis=1))
    non_complete = int((~complete).sum())
    paths = np.rint(m2.astype(np.float64) @ m1.astype(np.float64)).astype(np.int64)
    settled, disjoint = _settled_classes(rows, columns, sizes, complete, paths)
    if settled:
        return ClosednessResult(
            Closedness.CLOSED, None,
            "every non-complete class is disjoint from the others, or of size 1 overlapped only by complete "
            "classes without a lone overlapped 2x2 entry (section 4 step 3)", n_classes, non_complete, disjoint,
        )

    # Step 4: an LU 2x2 block inside one unit's rectangle.
    certificate = _lu_certificate(m2, m1, paths, units)
    if certificate is not None:
        return ClosednessResult(
            Closedness.NOT_CLOSED, certificate,
            "a 2x2 block covered by one unit, the other units covering exactly one of its entries (step 4)",
            n_classes, non_complete,
        )
    certificate, cut = _parallel_columns_either_way(m2, m1, paths)
    if certificate is not None:
        return ClosednessResult(
            Closedness.NOT_CLOSED, certificate,
            "two units share two rows and one column with path counts (1, 2, 1): a non-closed 2x3 block (step 5)",
            n_classes, non_complete,
        )
    reason = "no step of section 4 decides this pattern"
    if cut:
        reason += f" (parallel-columns search stopped after {_MAX_PAIR_CANDIDATES} candidate pairs)"
    return ClosednessResult(Closedness.UNKNOWN, None, reason, n_classes, non_complete)


def _settled_classes(rows: np.ndarray, columns: np.ndarray, sizes: np.ndarray, complete: np.ndarray,
                     paths: np.ndarray) -> tuple[bool, bool]:
    """Step 3: ``(every class settled, every non-complete class disjoint from the others)``.

    A class is settled when it is complete, meets no other class, or has size 1, is met only by complete
    classes and has no lone overlapped 2x2 entry.
    """
    # Rectangles intersect iff they share a row and a column.
    r, c = rows.astype(np.float32), columns.astype(np.float32)  # exact: counts < 2**24
    meets = (r @ r.T > 0) & (c @ c.T > 0)
    np.fill_diagonal(meets, False)
    settled = complete | ~meets.any(axis=1)
    disjoint = bool(settled.all())
    for cls in np.flatnonzero(~settled):
        if sizes[cls] != 1 or not complete[meets[cls]].all():
            break
        overlapped = paths[np.ix_(rows[cls], columns[cls])] > 1
        if _single_entry_block(overlapped) is not None:
            break
        settled[cls] = True
    return bool(settled.all()), disjoint


def _parallel_columns_either_way(m2: np.ndarray, m1: np.ndarray, paths: np.ndarray) -> tuple[Certificate | None, bool]:
    """Step 5: parallel columns, then the transposed pattern on the transposed product; and whether a search was cut."""
    certificate, cut = _parallel_columns(m2, m1, paths)
    if certificate is not None:
        return certificate, cut
    transposed, cut_t = _parallel_columns(m1.T, m2.T, paths.T)
    if transposed is None:
        return None, cut or cut_t
    return Certificate("parallel-columns", transposed.unit, transposed.columns, transposed.rows, transposed.units), cut or cut_t
