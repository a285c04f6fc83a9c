"""Time the two-factor closedness check (THEORY.md section 4) on realistic layer pairs.

Prints, for a 512 -> 512 -> 10 pair (M1: 512 x 512, M2: 10 x 512) at several densities, the verdict,
the certificate and the wall time of one call (best of 5). The issue's budget: under one second.

    .venv/bin/python benchmarks/bench_closedness.py
"""

from __future__ import annotations

import time

import numpy as np

from prune_landscape.theory.closedness import Closedness, check_closedness


def _time(m2: np.ndarray, m1: np.ndarray, repeats: int = 5) -> tuple[float, object]:
    best, result = float("inf"), None
    for _ in range(repeats):
        start = time.perf_counter()
        result = check_closedness(m2, m1)
        best = min(best, time.perf_counter() - start)
    return best, result


def main() -> None:
    rng = np.random.default_rng(0)
    cases = [("dense", np.ones((10, 512), bool), np.ones((512, 512), bool))]
    for density in (0.5, 0.1, 0.02):
        cases.append((f"random {density:.0%}", rng.random((10, 512)) < density, rng.random((512, 512)) < density))
    cases.append(("dense head, random 10% body", np.ones((10, 512), bool), rng.random((512, 512)) < 0.1))
    print(f"{'pair 10x512 @ 512x512':<30} {'verdict':<11} {'seconds':>8}  certificate")
    worst = 0.0
    for name, m2, m1 in cases:
        seconds, result = _time(m2, m1)
        worst = max(worst, seconds)
        print(f"{name:<30} {result.status.name:<11} {seconds:>8.4f}  {result.certificate or result.reason}")
    # Random unstructured pruning of two consecutive layers: how often is it certified NOT_CLOSED?
    draws, certified = 100, 0
    for _ in range(draws):
        certified += check_closedness(rng.random((10, 64)) < 0.2, rng.random((64, 64)) < 0.2).status is Closedness.NOT_CLOSED
    print(f"worst time {worst:.4f} s (budget 1 s: {worst / 1.0:.1%} of it)")
    print(f"random 80%-sparse 64->64->10 pairs certified NOT_CLOSED: {certified}/{draws}")


if __name__ == "__main__":
    main()
