"""Condition G of rule NL-2: full-rank last-hidden features on every output's fan-in, from one random draw.

For a real-analytic activation, the determinant of a feature sub-matrix is a real-analytic function of
the weights: if one random masked draw makes it non-zero, it is non-zero for almost every draw (masked
Li-Ding-Sun, DERIVED). So one draw certifies G; a rank-deficient draw certifies nothing.

Numerical rank uses numpy's default tolerance, ``sigma_max * max(rows, columns) * eps`` (float64).

Example:
    >>> import numpy as np, torch
    >>> from torch import nn
    >>> chain = [("fc1", nn.Linear(2, 6)), ("act1", nn.Tanh()), ("fc2", nn.Linear(6, 1))]
    >>> masks = {"fc1": np.ones((6, 2), bool), "fc2": np.ones((1, 6), bool)}
    >>> check_rank_condition(chain, masks, inputs=None, n=4, d=2, seed=0).certified
    True
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

__all__ = ["RankResult", "check_rank_condition", "TOLERANCE_RULE", "MAX_RANK_SAMPLES"]

TOLERANCE_RULE = "numpy default: sigma_max * max(n, m_k) * eps(float64)"
#: Above this many samples the check is not attempted (NL-2 then also needs every fan-in >= n).
MAX_RANK_SAMPLES = 4096


@dataclass(frozen=True)
class RankResult:
    """Outcome of the rank check.

    Attributes:
        certified: every output's restricted feature matrix has rank n.
        generic: inputs were Gaussian N(0, I) drawn from n and d ("generic data"), not the real data.
        n: samples; ranks: numerical rank per output; fan_in: the per-output fan-in it was checked on.
        tolerance_rule: how the numerical-rank tolerance was set.
        reason: one line for the report.
    """

    certified: bool
    generic: bool
    n: int
    ranks: tuple[int, ...]
    fan_in: tuple[int, ...]
    tolerance_rule: str
    reason: str

    def to_dict(self) -> dict:
        return {
            "certified": self.certified,
            "generic": self.generic,
            "n": self.n,
            "ranks": list(self.ranks),
            "fan_in": list(self.fan_in),
            "tolerance_rule": self.tolerance_rule,
            "reason": self.reason,
        }


def check_rank_condition(
    chain: Sequence[tuple[str, nn.Module]],
    masks: Mapping[str, np.ndarray],
    inputs: torch.Tensor | None,
    n: int,
    d: int,
    *,
    seed: int = 0,
) -> RankResult:
    """Draw masked Gaussian weights, compute the last-hidden features, check each output's rank.

    Args:
        chain: the MLP's modules in forward order, ``(name, module)``; Linear layers are redrawn, every
            other module (activations, Flatten, Dropout) is applied as is (in eval mode, float64).
        masks: Linear module name -> bool mask (outputs x inputs); missing means dense.
        inputs: the real inputs (n x ...); None draws generic Gaussian inputs of shape (n, d).
        n: number of samples; d: input dimension (used when ``inputs`` is None).
        seed: seeds the draw (weights ~ N(0, 1/kept fan-in) on the mask, biases ~ N(0, 1)).

    Returns:
        A :class:`RankResult`.
    """
    generic = inputs is None
    if n > MAX_RANK_SAMPLES:
        return RankResult(False, generic, n, (), (), TOLERANCE_RULE, f"not attempted: n = {n} > {MAX_RANK_SAMPLES}")
    generator = torch.Generator().manual_seed(seed)
    if generic:
        x = torch.randn(n, d, generator=generator, dtype=torch.float64)
    else:
        x = inputs.detach().cpu().to(torch.float64).reshape(inputs.shape[0], -1)
    linears = [name for name, module in chain if isinstance(module, nn.Linear)]
    final = linears[-1]
    with torch.no_grad():
        for name, module in chain:
            if name == final:
                break
            if isinstance(module, nn.Linear):
                mask = torch.as_tensor(np.asarray(masks.get(name, np.ones(tuple(module.weight.shape), bool))))
                fan_in = mask.sum(dim=1).clamp(min=1).to(torch.float64)
                weight = torch.randn(module.weight.shape, generator=generator, dtype=torch.float64) * mask
                weight = weight / fan_in.sqrt()[:, None]
                x = x @ weight.T
                if module.bias is not None:
                    x = x + torch.randn(module.out_features, generator=generator, dtype=torch.float64)
            else:
                x = copy.deepcopy(module).double().cpu().eval()(x)
    features = x.numpy()
    final_mask = np.asarray(masks.get(final, np.ones((1, features.shape[1]), bool)))
    ranks, fans = [], []
    for row in final_mask:
        columns = np.flatnonzero(row)
        fans.append(int(columns.size))
        ranks.append(int(np.linalg.matrix_rank(features[:, columns])) if columns.size else 0)
    certified = all(r == n for r in ranks)
    source = "generic data (Gaussian inputs from n and d)" if generic else "the real inputs"
    reason = (
        f"one masked random draw on {source}: rank {min(ranks)} (min over outputs) of n = {n}; "
        + ("full rank for every output" if certified else "rank deficient for some output: not certified")
    )
    return RankResult(certified, generic, n, tuple(ranks), tuple(fans), TOLERANCE_RULE, reason)
