"""What every built-in data set shares: its :class:`DatasetInfo`, the split names and the argument checks."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["DatasetInfo"]

_SPLITS = ("train", "test")
_TASKS = ("regression", "classification")


@dataclass(frozen=True)
class DatasetInfo:
    """What a model needs to know about a data set: per-sample input shape, classes, task and sizes."""

    name: str
    input_shape: tuple[int, ...]
    num_classes: int | None
    task: str
    num_train: int
    num_test: int


def _check_split(split: str) -> None:
    if split not in _SPLITS:
        raise ValueError(f"split must be one of {_SPLITS}, got {split!r}")


def _check_max_samples(max_samples: int | None) -> None:
    if max_samples is not None and (isinstance(max_samples, bool) or int(max_samples) != max_samples or max_samples < 1):
        raise ValueError(f"max_samples must be a positive integer or None, got {max_samples!r}")


def _cap(count: int, max_samples: int | None) -> int:
    return count if max_samples is None else min(count, int(max_samples))
