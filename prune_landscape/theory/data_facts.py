"""The facts the data gives the rules: whitened inputs (LIN-2, LIN-2d, LIN-3) and distinct restricted inputs (NL-1).

The data is streamed once: the input Gram matrix decides whitening (``X X^T`` proportional to I), and the
inputs themselves are kept when there are at most ``MAX_RANK_SAMPLES`` of them (for distinctness and the
real-data rank condition of NL-2).

Example:
    >>> import torch
    >>> facts = DataFacts.read((torch.eye(3), torch.zeros(3)), data_n=3, n=3, centre=False)
    >>> facts.whitened, tuple(facts.inputs.shape)
    (True, (3, 3))
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from prune_landscape.batching import iter_batches
from prune_landscape.theory.rank_condition import MAX_RANK_SAMPLES

__all__ = ["DataFacts"]

_MAX_COLLECT = MAX_RANK_SAMPLES  # inputs kept in memory for distinctness and rank checks


@dataclass(frozen=True)
class DataFacts:
    """What the data says: whitened or not, the inputs when few enough to keep, or why nothing is known."""

    whitened: bool | None
    inputs: torch.Tensor | None
    problem: str

    @classmethod
    def read(cls, data, data_n: int | None, n: int | None, centre: bool) -> DataFacts:
        """Read the data once. Linear theorems are bias-free: an output bias (``centre``) reduces the problem
        to centred data; a hidden bias without one does not."""
        if data is None:
            return cls(None, None, "no data: whitening, distinct restricted inputs and real-data rank are unknown")
        if data_n is not None and n is not None and data_n != n:
            return cls(None, None, f"the data holds {data_n} samples but n = {n}: data-dependent facts are unknown")
        gram, inputs, problem = _read_inputs(data, n, centre)
        if gram is None:
            return cls(None, None, problem)
        return cls(_whitened(gram), inputs, "")

    def notes(self, one_hidden: bool) -> dict[str, str]:
        """Why a data fact is unknown: the data's problem, or (one hidden layer) too many samples to check."""
        if self.problem:
            return {"data": self.problem}
        if one_hidden and self.inputs is None:
            return {"distinct_restricted_inputs": f"more than {_MAX_COLLECT} samples: distinctness not checked"}
        return {}

    def distinct(self, m1: np.ndarray, alive: np.ndarray) -> bool | None:
        """Whether the inputs restricted to each alive first-layer unit's support are pairwise distinct (NL-1)."""
        return None if self.inputs is None else _distinct(self.inputs, m1, alive)


def _read_inputs(data, n: int | None, centre: bool) -> tuple[np.ndarray | None, torch.Tensor | None, str]:
    """Stream the data once: the input Gram matrix (for whitening) and, when small, the inputs."""
    gram, total, count, kept = None, None, 0, []
    for x, _ in iter_batches(data, batch_size=1024, max_samples=n):
        if not (isinstance(x, torch.Tensor) and x.is_floating_point()):
            # token ids, tuple or dict batches: no input Gram matrix to speak of, the facts stay unknown
            return None, None, f"the data's inputs are {type(x).__name__} batches, not one float tensor"
        flat = x.detach().cpu().to(torch.float64).reshape(x.shape[0], -1)
        gram = flat.T @ flat if gram is None else gram + flat.T @ flat
        total = flat.sum(0) if total is None else total + flat.sum(0)
        count += flat.shape[0]
        if count <= _MAX_COLLECT:
            kept.append(flat)
    if count == 0:
        return None, None, "the data is empty"
    if centre:
        gram = gram - torch.outer(total, total) / count
    inputs = torch.cat(kept) if count <= _MAX_COLLECT else None
    return gram.numpy(), inputs, ""


def _whitened(gram: np.ndarray) -> bool:
    scale = np.trace(gram) / gram.shape[0]
    return bool(scale > 0 and np.linalg.norm(gram - scale * np.eye(gram.shape[0])) <= 1e-8 * np.linalg.norm(gram))


def _distinct(inputs: torch.Tensor, m1: np.ndarray, alive: np.ndarray) -> bool:
    x = inputs.numpy()
    for support in np.unique(m1[alive], axis=0):
        if np.unique(x[:, support], axis=0).shape[0] < x.shape[0]:
            return False
    return True
