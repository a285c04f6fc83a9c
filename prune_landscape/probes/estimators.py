"""Spectral estimators for a symmetric linear operator: eigenvalues, Hutchinson's trace, the spectral density.

Each takes a ``scipy.sparse.linalg.LinearOperator`` (float64 NumPy in and out), so the Hessian of
:mod:`.hessian_operator`, a curvlinops operator's ``to_scipy()`` or a plain matrix work alike; none of
them knows about networks. Randomness is explicit: a seed for ARPACK's start vector, a
``torch.Generator`` for the Rademacher probes (the same generator, drawn in the same order, gives the
same numbers).

- :func:`dense_spectrum`: every eigenvalue of the materialised matrix (for small operators).
- :func:`top_eigenvalues` / :func:`smallest_eigenvalue`: ARPACK (implicitly restarted Lanczos, ``eigsh``).
- :func:`hutchinson_trace`: Hutchinson's estimator with Rademacher probes and its standard error.
- :func:`spectral_density`: stochastic Lanczos quadrature (Papyan 2020), full re-orthogonalisation,
  explicit bounds (no boundary search is run).

Example:
    >>> import numpy as np, torch
    >>> from scipy.sparse.linalg import aslinearoperator
    >>> A = aslinearoperator(np.diag([3.0, 1.0, -2.0]))
    >>> round(top_eigenvalues(A, 1).value, 9), round(smallest_eigenvalue(A).value, 9)
    (3.0, -2.0)
    >>> hutchinson_trace(A, 10, torch.Generator().manual_seed(0)).mean
    2.0
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from scipy.sparse.linalg import ArpackError, ArpackNoConvergence, LinearOperator, eigsh

__all__ = [
    "Eigenvalues",
    "SpectralDensity",
    "TraceEstimate",
    "dense_spectrum",
    "hutchinson_trace",
    "lanczos",
    "smallest_eigenvalue",
    "spectral_density",
    "top_eigenvalues",
]


@dataclass(frozen=True)
class Eigenvalues:
    """Eigenvalues found by ARPACK, and whether it converged (else they are its best estimates)."""

    values: tuple[float, ...]
    converged: bool = True

    @property
    def value(self) -> float:
        """The single eigenvalue asked for (NaN when ARPACK stopped before finding any)."""
        return self.values[0] if self.values else math.nan


@dataclass(frozen=True)
class TraceEstimate:
    """Hutchinson's trace: the mean over probes and its standard error (NaN with one probe)."""

    mean: float
    std_error: float
    probes: int


@dataclass(frozen=True)
class SpectralDensity:
    """A smoothed eigenvalue density on a grid (it integrates to about 1)."""

    grid: tuple[float, ...]
    density: tuple[float, ...]


def dense_spectrum(operator: LinearOperator) -> np.ndarray:
    """Every eigenvalue (ascending) of the symmetrised matrix ``operator @ I``: exact, n products."""
    n = operator.shape[0]
    dense = torch.as_tensor(operator @ np.eye(n), dtype=torch.float64)
    return torch.linalg.eigvalsh((dense + dense.T) / 2).numpy()


def _arpack(operator: LinearOperator, k: int, which: str, tol: float, seed: int) -> Eigenvalues:
    v0 = np.random.default_rng(seed).standard_normal(operator.shape[0])
    try:
        values = eigsh(operator, k=k, which=which, tol=tol, v0=v0, return_eigenvectors=False)
        converged = True
    except ArpackNoConvergence as error:
        values, converged = error.eigenvalues, False
    except ArpackError as error:  # e.g. non-finite products: say what was probed, not ARPACK's info code
        raise RuntimeError(f"ARPACK failed on the {operator.shape[0]}-dimensional operator ({error}); check that "
                           f"its products are finite") from error
    ordered = np.sort(values)[::-1] if which == "LA" else np.sort(values)
    return Eigenvalues(tuple(float(v) for v in ordered), converged)


def top_eigenvalues(operator: LinearOperator, k: int, *, tol: float = 1e-6, seed: int = 0) -> Eigenvalues:
    """The ``k`` largest (algebraic) eigenvalues, largest first (ARPACK, start vector from ``seed``).

    Raises:
        RuntimeError: when ARPACK fails (not merely stops early: then ``converged`` is False).
    """
    return _arpack(operator, k, "LA", tol, seed)


def smallest_eigenvalue(operator: LinearOperator, *, tol: float = 1e-6, seed: int = 0) -> Eigenvalues:
    """The smallest algebraic eigenvalue (clearly negative at a saddle), as a one-value :class:`Eigenvalues`."""
    found = _arpack(operator, 1, "SA", tol, seed)
    return Eigenvalues((min(found.values),) if found.values else (), found.converged)


def _rademacher(shape: tuple[int, ...], generator: torch.Generator) -> torch.Tensor:
    return (torch.randint(0, 2, shape, generator=generator) * 2 - 1).to(torch.float64)


def hutchinson_trace(operator: LinearOperator, probes: int, generator: torch.Generator, *, block: int = 64) -> TraceEstimate:
    """``mean_i z_i^T A z_i`` over ``probes`` Rademacher vectors, drawn and multiplied ``block`` at a time.

    The standard error is the sample standard deviation over ``sqrt(probes)``; for Rademacher probes
    its expectation is ``sqrt(2 * sum_{i != j} A_ij^2 / probes)``.
    """
    if probes < 1 or block < 1:
        raise ValueError(f"expected probes >= 1 and block >= 1, got {probes}, {block}")
    n, estimates = operator.shape[0], []
    for start in range(0, probes, block):
        z = _rademacher((n, min(block, probes - start)), generator)
        estimates.append((z * torch.as_tensor(operator @ z.numpy(), dtype=torch.float64)).sum(0))
    values = torch.cat(estimates)
    error = float(values.std() / math.sqrt(len(values))) if len(values) > 1 else math.nan
    return TraceEstimate(float(values.mean()), error, probes)


def lanczos(operator: LinearOperator, steps: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """``steps`` Lanczos iterations from a Rademacher start, fully re-orthogonalised: eigh of the tridiagonal T."""
    n = operator.shape[0]
    steps = min(steps, n)
    basis = torch.zeros(n, steps, dtype=torch.float64)
    alphas, betas = torch.zeros(steps, dtype=torch.float64), torch.zeros(max(steps - 1, 0), dtype=torch.float64)
    v = _rademacher((n,), generator) / math.sqrt(n)
    for m in range(steps):
        basis[:, m] = v
        w = torch.as_tensor(operator @ v.numpy(), dtype=torch.float64).reshape(-1)
        alphas[m] = w @ v
        w = w - basis[:, : m + 1] @ (basis[:, : m + 1].T @ w)  # two passes keep the basis orthogonal
        w = w - basis[:, : m + 1] @ (basis[:, : m + 1].T @ w)
        if m + 1 < steps:
            betas[m] = w.norm()
            if betas[m] < 1e-12:  # an invariant subspace: T is complete
                alphas, betas = alphas[: m + 1], betas[:m]
                break
            v = w / betas[m]
    tridiagonal = torch.diag(alphas) + torch.diag(betas, 1) + torch.diag(betas, -1)
    return torch.linalg.eigh(tridiagonal)


def spectral_density(
    operator: LinearOperator,
    steps: int,
    bounds: tuple[float, float],
    generator: torch.Generator,
    *,
    repeats: int = 1,
    grid_points: int = 512,
) -> SpectralDensity:
    """Stochastic Lanczos quadrature: ``repeats`` runs of ``steps`` Lanczos steps, Gaussian-smoothed and averaged.

    ``bounds`` (smallest, largest eigenvalue, e.g. from :func:`top_eigenvalues`) fix the grid, padded by
    5 % on each side.
    """
    # Imported on use: curvlinops loads linear_operator, which runs torch.jit.script at import (about 1 s
    # and a FutureWarning for every user of the package, probes or not).
    from curvlinops.papyan2020traces.spectrum import lanczos_approximate_spectrum_from_iter

    if steps < 1 or repeats < 1:
        raise ValueError(f"expected steps >= 1 and repeats >= 1, got {steps}, {repeats}")
    total = None
    for _ in range(repeats):
        grid, values = lanczos_approximate_spectrum_from_iter(lanczos(operator, steps, generator), bounds, grid_points,
                                                              3.0, 0.05)
        total = values if total is None else total + values
    return SpectralDensity(tuple(grid.tolist()), tuple((total / repeats).tolist()))
