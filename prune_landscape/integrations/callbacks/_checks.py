"""Argument checks the callbacks run at construction: one line naming the argument, the expected and the given.

Lightning adapter helpers; no torch work happens here, so a wrong argument fails before any training.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from typing import Any

__all__ = ["check_bool", "check_callable", "check_nonnegative_number", "check_path", "check_positive_int", "check_str"]


def check_positive_int(name: str, value: Any, *, allow_none: bool = False) -> int | None:
    """``value`` as an int >= 1 (None passes when allowed); 2.5, True and '3' are refused."""
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        expected = "a positive integer or None" if allow_none else "a positive integer"
        raise ValueError(f"{name} must be {expected}, got {value!r}")
    return int(value)


def check_bool(name: str, value: Any) -> bool:
    """``value`` if it is a bool; 0, 1 and 'yes' are refused (a typo should not read as a choice)."""
    if not isinstance(value, bool):
        raise ValueError(f"{name} must be True or False, got {value!r}")
    return value


def check_nonnegative_number(name: str, value: Any) -> float:
    """``value`` as a finite float >= 0 (NaN, inf, bools and strings are refused)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
    return float(value)


def check_callable(name: str, value: Any) -> Callable[..., Any] | None:
    """``value`` if it is None or callable."""
    if value is not None and not callable(value):
        raise ValueError(f"{name} must be a callable or None, got {type(value).__name__}")
    return value


def check_str(name: str, value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError(f"{name} must be a string, got {type(value).__name__}")
    return value


def check_path(name: str, value: Any) -> None:
    if value is not None and not isinstance(value, (str, os.PathLike)):
        raise ValueError(f"{name} must be a path (str or os.PathLike) or None, got {type(value).__name__}")
