"""The convex solvers behind :mod:`.final_layer_gap`: the best final layer on fixed features, on a given support.

Squared loss separates by output row: each row is a (ridge) least-squares problem over its own support,
solved as ordinary least squares on the design stacked over the penalty (:func:`least_squares_rows`).
Cross-entropy couples the rows through the softmax: damped Newton on the kept weights for small heads
with a ridge, L-BFGS otherwise (:func:`cross_entropy_fit`). Both work on float64 CPU tensors and never
touch a model.

Example:
    >>> import torch
    >>> features = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]], dtype=torch.float64)
    >>> targets = torch.tensor([[1.0], [2.0], [3.0]], dtype=torch.float64)
    >>> least_squares_rows(features, targets, torch.tensor([[True, True]])).round(decimals=9).tolist()
    [[1.0, 2.0]]
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
import torch.nn.functional as F

__all__ = ["cross_entropy_fit", "few_threads", "least_squares_rows"]


def least_squares_rows(features: torch.Tensor, targets: torch.Tensor, support: torch.Tensor,
                        penalty: torch.Tensor | None = None) -> torch.Tensor:
    """Row k minimises ``||features[:, S_k] w - targets[:, k]||^2 + ||penalty[S_k] * w||^2`` on ``S_k = support[k]``.

    The ridge is solved as ordinary least squares on the design stacked over ``diag(penalty)`` (better
    conditioned than the normal equations).
    """
    weights = torch.zeros(support.shape, dtype=features.dtype)
    for row in range(support.shape[0]):
        columns = support[row].nonzero().reshape(-1)
        if columns.numel():
            design, target = features[:, columns], targets[:, row : row + 1]
            if penalty is not None:
                design = torch.cat([design, torch.diag(penalty[columns])])
                target = torch.cat([target, torch.zeros(columns.numel(), 1, dtype=target.dtype)])
            solution = torch.linalg.lstsq(design, target, driver="gelsd").solution
            weights[row, columns] = solution.reshape(-1)
    return weights


@contextlib.contextmanager
def few_threads(size: int) -> Iterator[None]:
    """One intra-op thread for small solves (restored after).

    A head problem is hundreds of tiny kernels per L-BFGS step; with several threads on a busy machine
    each kernel waits on its workers (measured 30x slower on 2 shared cores), and one thread is as fast
    on an idle one. Large problems (CIFAR-size feature matrices) keep the caller's setting.
    """
    previous = torch.get_num_threads()
    small = size < 2_000_000
    if small:
        torch.set_num_threads(1)
    try:
        yield
    finally:
        if small:
            torch.set_num_threads(previous)


#: Newton's method (exact Hessian) for heads with at most this many weights; L-BFGS above.
_NEWTON_MAX_WEIGHTS = 1500


def _cross_entropy_value(features, labels, w, penalised, ridge) -> torch.Tensor:
    return F.cross_entropy(features @ w.T, labels) + 0.5 * ridge * (w[:, penalised] ** 2).sum()


def _cross_entropy_hessian(features: torch.Tensor, probabilities: torch.Tensor, support: torch.Tensor) -> torch.Tensor:
    """Hessian of mean softmax cross-entropy in the kept weights (row-major order of ``support``).

    Block (a, b) is ``X[:, J_a]^T diag(p_a (delta_ab - p_b)) X[:, J_b] / n`` with J_a the kept columns of
    row a: the cost is n * kept^2 (half of it, by symmetry), never n * (K p)^2 for a sparse head.
    """
    n = features.shape[0]
    columns = [support[a].nonzero().reshape(-1) for a in range(support.shape[0])]
    offsets = [0]
    for c in columns:
        offsets.append(offsets[-1] + c.numel())
    hessian = torch.zeros(offsets[-1], offsets[-1], dtype=features.dtype)
    for a, cols_a in enumerate(columns):
        if not cols_a.numel():
            continue
        rows = slice(offsets[a], offsets[a + 1])
        for b in range(a, len(columns)):
            if not columns[b].numel():
                continue
            weight = probabilities[:, a] * ((1.0 if a == b else 0.0) - probabilities[:, b])
            block = (features[:, cols_a] * weight[:, None]).T @ features[:, columns[b]] / n
            hessian[rows, offsets[b] : offsets[b + 1]] = block
            hessian[offsets[b] : offsets[b + 1], rows] = block.T
    return hessian


def _newton_fit(features, labels, support, start, max_iter, penalised, ridge) -> tuple[torch.Tensor, bool]:
    """Damped Newton on the kept weights (strictly convex for ridge > 0, so it converges quadratically).

    The softmax is unchanged when one constant is added to every class's bias, so the bias block of the
    Hessian is singular along that direction; the gradient is orthogonal to it, and a 1e-10 damping
    picks the minimum-norm step.
    """
    index = support.reshape(-1).nonzero().reshape(-1)
    w = start * support
    onehot = F.one_hot(labels, support.shape[0]).to(features.dtype)
    penalty = (penalised[None, :].expand_as(support)).reshape(-1)[index].to(features.dtype) * ridge
    value = _cross_entropy_value(features, labels, w, penalised, ridge)
    for _ in range(max_iter):
        probabilities = torch.softmax(features @ w.T, 1)
        gradient = ((probabilities - onehot).T @ features / features.shape[0] + ridge * w * penalised).reshape(-1)[index]
        if gradient.abs().max() <= 1e-10:
            return w, True
        hessian = _cross_entropy_hessian(features, probabilities, support) + torch.diag(penalty + 1e-10)
        step = torch.zeros(support.numel(), dtype=features.dtype)
        step[index] = -torch.linalg.solve(hessian, gradient)
        step = step.reshape(support.shape)
        slope, scale = float(gradient @ step.reshape(-1)[index]), 1.0
        for _ in range(40):  # Armijo backtracking: a full Newton step is taken near the optimum
            trial = _cross_entropy_value(features, labels, w + scale * step, penalised, ridge)
            if trial <= value + 1e-4 * scale * slope:
                break
            scale /= 2
        else:
            return w, False
        w, value = w + scale * step, trial
    probabilities = torch.softmax(features @ w.T, 1)
    gradient = ((probabilities - onehot).T @ features / features.shape[0] + ridge * w * penalised).reshape(-1)[index]
    return w, bool(gradient.abs().max() <= 1e-6)


def cross_entropy_fit(features, labels, support, start, max_iter, penalised, ridge) -> tuple[torch.Tensor, bool]:
    """Minimise mean cross-entropy + ridge/2 ||W[:, penalised]||^2 over weights on ``support`` from ``start``.

    Newton for small heads with a ridge (tens of steps instead of hundreds of L-BFGS iterations on these
    ill-conditioned problems); L-BFGS otherwise (within ``max_iter``; the only option for ``ridge=0``,
    where the optimum may lie at infinity).
    """
    if ridge > 0 and support.numel() <= _NEWTON_MAX_WEIGHTS:
        with few_threads(features.numel()):
            return _newton_fit(features, labels, support, start, min(max_iter, 100), penalised, ridge)
    index = support.reshape(-1).nonzero().reshape(-1)
    free = start.reshape(-1)[index].clone().requires_grad_(True)

    def weights() -> torch.Tensor:
        return torch.zeros(support.numel(), dtype=features.dtype).index_put((index,), free).reshape(support.shape)

    optimizer = torch.optim.LBFGS([free], lr=1.0, max_iter=max_iter, tolerance_grad=1e-9, tolerance_change=1e-15,
                                  history_size=20, line_search_fn="strong_wolfe")

    def objective() -> torch.Tensor:
        w = weights()
        return F.cross_entropy(features @ w.T, labels) + 0.5 * ridge * (w[:, penalised] ** 2).sum()

    def closure():
        optimizer.zero_grad()
        value = objective()
        value.backward()
        return value

    with torch.enable_grad(), few_threads(features.numel()):
        optimizer.step(closure)
        value = objective()
        gradient = torch.autograd.grad(value, free)[0]
    return weights().detach(), bool(gradient.abs().max() <= 1e-6)
