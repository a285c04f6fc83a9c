"""Random scores: i.i.d. uniform [0, 1) from the seeded generator (random pruning baseline).

Example:
    >>> import torch
    >>> masks = {"w": torch.ones(3, dtype=torch.bool)}
    >>> a = random_scores(None, masks, None, torch.Generator().manual_seed(0))["w"]
    >>> b = random_scores(None, masks, None, torch.Generator().manual_seed(0))["w"]
    >>> bool(torch.equal(a, b))
    True
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

__all__ = ["random_scores"]


def random_scores(
    model: object, masks: Mapping[str, torch.Tensor], data: object, generator: torch.Generator
) -> dict[str, torch.Tensor]:
    """Uniform [0, 1) scores drawn on the CPU from ``generator`` (device-independent masks)."""
    return {name: torch.rand(mask.shape, generator=generator, dtype=torch.float64) for name, mask in masks.items()}
