"""Pruning schedules as plain objects: exponential-iterative at init, cubic gradual, IMP rounds.

They only answer "what sparsity, and when"; the Lightning callbacks drive them and call
:func:`prune_landscape.pruning.magnitude_step` (or :func:`prune`) at the steps they name.

Example:
    >>> s = GradualSchedule(final_sparsity=0.9, start_step=0, end_step=1000, frequency=100)
    >>> round(s.sparsity_at(500), 4), s.should_update(500), s.should_update(550)
    (0.7875, True, False)
    >>> round(IMPSchedule(rounds=3).sparsity_at_round(2), 4)
    0.36
"""

from __future__ import annotations

from dataclasses import dataclass

from prune_landscape.checks import check_fraction, check_nonnegative_int, check_positive_int, check_sparsity

__all__ = ["GradualSchedule", "IMPSchedule", "exponential_densities", "kept_at"]


def exponential_densities(start_density: float, end_density: float, iterations: int) -> list[float]:
    """Densities after each of ``iterations`` steps: ``start * (end / start) ** (t / T)``, t = 1..T.

    From a dense start this is the papers' ``d ** (t / T)`` (SynFlow, NTK-SAP); the last entry is
    exactly ``end_density``.

    Raises:
        ValueError: if ``iterations < 1`` or the densities are not in (0, 1] with end <= start.
    """
    check_positive_int("iterations", iterations)
    if not 0.0 < end_density <= start_density <= 1.0:
        raise ValueError(f"expected 0 < end_density <= start_density <= 1, got {end_density} and {start_density}")
    ratio = end_density / start_density
    densities = [start_density * ratio ** (t / iterations) for t in range(1, iterations + 1)]
    densities[-1] = end_density
    return densities


def kept_at(density: float, total: int) -> int:
    """How many of ``total`` weights an intermediate step of an iterative schedule keeps at ``density``.

    ``total - int((1 - density) * total)``: the floor of the pruned count is pruned, as in the official
    SynFlow and NTK-SAP code (``k = int((1.0 - sparse) * N)`` in their ``_global_mask``). SynFlow is chaotic
    in this count: keeping ``round(density * total)`` instead (one weight fewer at about half the steps of
    a 100-step ResNet-20 run) ends at a mask with IoU 0.82 against theirs at density 0.02. The last step
    keeps exactly the target, ``round(density * total)`` (equal to this rule whenever ``density * total``
    is within 0.5 of an integer from below, e.g. 0.1 and 0.02 of ResNet-20's 270,896 weights).

    Example:
        >>> kept_at(0.398107, 144), round(0.398107 * 144)
        (58, 57)
    """
    return total - int((1.0 - density) * total)


@dataclass(frozen=True)
class GradualSchedule:
    """Zhu & Gupta (2017) cubic gradual pruning.

    ``s_t = s_f + (s_i - s_f) * (1 - (t - t0) / (n * dt)) ** 3`` for ``t0 <= t <= t0 + n * dt``, with
    ``t0 = start_step``, ``n * dt = end_step - start_step`` and ``dt = frequency``; ``s_i`` before
    ``start_step`` and ``s_f`` from ``end_step`` on. The mask is updated every ``frequency`` steps from
    ``start_step``, and also at ``end_step`` so the final sparsity is always reached.

    Args:
        final_sparsity: s_f in [0, 1).
        start_step: t0 >= 0.
        end_step: last step of the ramp, >= start_step.
        frequency: dt >= 1 (the paper uses 100-1000 steps).
        initial_sparsity: s_i in [0, s_f].
    """

    final_sparsity: float
    start_step: int
    end_step: int
    frequency: int
    initial_sparsity: float = 0.0

    def __post_init__(self) -> None:
        check_sparsity(self.final_sparsity, "final_sparsity")
        check_sparsity(self.initial_sparsity, "initial_sparsity")
        if self.initial_sparsity > self.final_sparsity:
            raise ValueError(
                f"initial_sparsity must be <= final_sparsity, got {self.initial_sparsity} > {self.final_sparsity}"
            )
        check_nonnegative_int("start_step", self.start_step)
        if isinstance(self.end_step, bool) or not isinstance(self.end_step, int) or self.end_step < self.start_step:
            raise ValueError(f"end_step must be an integer >= start_step={self.start_step}, got {self.end_step!r}")
        check_positive_int("frequency", self.frequency)

    def sparsity_at(self, step: int) -> float:
        """The target sparsity at ``step`` (the cubic ramp, clamped to s_i before and s_f after)."""
        if step < self.start_step:
            return float(self.initial_sparsity)
        if step >= self.end_step:
            return float(self.final_sparsity)
        progress = (step - self.start_step) / (self.end_step - self.start_step)
        return float(self.final_sparsity + (self.initial_sparsity - self.final_sparsity) * (1.0 - progress) ** 3)

    def should_update(self, step: int) -> bool:
        """True at ``start_step + k * frequency`` within the ramp, and at ``end_step``."""
        if step < self.start_step or step > self.end_step:
            return False
        return (step - self.start_step) % self.frequency == 0 or step == self.end_step


@dataclass(frozen=True)
class IMPSchedule:
    """Iterative magnitude pruning (OpenLTH): each round prunes ``rate`` of the remaining weights.

    Round ``r`` (0 = dense) has sparsity ``1 - (1 - rate) ** r``; after each round the weights are rewound
    to those saved at ``rewind_step`` (0 = the initialisation, the original lottery ticket).
    """

    rounds: int
    rate: float = 0.2
    rewind_step: int = 0

    def __post_init__(self) -> None:
        check_positive_int("rounds", self.rounds)
        if check_fraction("rate", self.rate) == 0.0:  # pruning nothing per round never reaches a sparsity
            raise ValueError(f"rate must be in (0, 1), got {self.rate!r}")
        check_nonnegative_int("rewind_step", self.rewind_step)

    def sparsity_at_round(self, round_index: int) -> float:
        """Sparsity after ``round_index`` rounds, ``0 <= round_index <= rounds``."""
        if not isinstance(round_index, int) or not 0 <= round_index <= self.rounds:
            raise ValueError(f"round_index must be an integer in [0, {self.rounds}], got {round_index!r}")
        return float(1.0 - (1.0 - self.rate) ** round_index)

    @property
    def final_sparsity(self) -> float:
        """Sparsity after the last round."""
        return self.sparsity_at_round(self.rounds)
