"""Shared argument checks: one wording for every "bad argument" error in the package.

Every check returns the (normalised) value or raises ``ValueError("<name> must be <what>, got <value!r>")``,
so the same mistake reads the same whichever function it was made in. Pure Python: no torch, no I/O.

Example:
    >>> check_sparsity(0.9)
    0.9
    >>> check_positive_int("iterations", 0)
    Traceback (most recent call last):
    ...
    ValueError: iterations must be a positive integer, got 0
    >>> check_one_of("scope", "local-ish", ("global", "layerwise", "erk"))
    Traceback (most recent call last):
    ...
    ValueError: scope must be one of ['global', 'layerwise', 'erk'], got 'local-ish'
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Callable, Iterable, MutableMapping
from typing import Any, TypeVar

__all__ = [
    "check_bool",
    "check_callable",
    "check_fraction",
    "check_int",
    "check_nonnegative_int",
    "check_nonnegative_number",
    "check_one_of",
    "check_path",
    "check_positive_int",
    "check_positive_number",
    "check_probability",
    "check_sparsity",
    "check_str",
    "deprecation_message",
    "renamed_keyword",
]

T = TypeVar("T")


def _is_real(value: Any) -> bool:
    # bool is an int subclass, but True is never a meant sparsity, count or rate.
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _fail(name: str, what: str, value: Any) -> ValueError:
    return ValueError(f"{name} must be {what}, got {value!r}")


def check_int(name: str, value: Any) -> int:
    """An integer (not a bool, not a float that happens to be whole), e.g. a seed."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise _fail(name, "an integer", value)
    return value


def check_positive_int(name: str, value: Any, *, optional: bool = False) -> int | None:
    """An integer >= 1 (``None`` too when ``optional``)."""
    if optional and value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise _fail(name, "a positive integer" + (" or None" if optional else ""), value)
    return value


def check_nonnegative_int(name: str, value: Any) -> int:
    """An integer >= 0 (a step index, a count that may be zero)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise _fail(name, "an integer >= 0", value)
    return value


def check_fraction(name: str, value: Any) -> float:
    """A number in [0, 1): a sparsity or any fraction removed, where removing everything is meaningless."""
    if not _is_real(value) or math.isnan(value):
        raise _fail(name, "a number in [0, 1)", value)
    if not 0.0 <= value < 1.0:
        raise _fail(name, "in [0, 1)", value)
    return float(value)


def check_sparsity(value: Any, name: str = "sparsity") -> float:
    """A sparsity: the fraction of weights removed, in [0, 1) (see :func:`check_fraction`)."""
    return check_fraction(name, value)


def check_probability(name: str, value: Any) -> float:
    """A number in [0, 1] (a probability, a confidence, a density that may be 1)."""
    if not _is_real(value) or not 0.0 <= value <= 1.0:  # NaN fails the comparison too
        raise _fail(name, "a number in [0, 1]", value)
    return float(value)


def check_positive_number(name: str, value: Any) -> float:
    """A finite number > 0 (a step size, a temperature, a perturbation scale)."""
    if not _is_real(value) or not math.isfinite(value) or value <= 0:
        raise _fail(name, "a finite number > 0", value)
    return float(value)


def check_nonnegative_number(name: str, value: Any) -> float:
    """A finite number >= 0 (a weight decay, a ridge)."""
    if not _is_real(value) or not math.isfinite(value) or value < 0:
        raise _fail(name, "a finite number >= 0", value)
    return float(value)


def check_bool(name: str, value: Any) -> bool:
    """Exactly True or False (``1``, ``"yes"`` and ``None`` are refused: a typo should not flip a switch)."""
    if value is not True and value is not False:
        raise _fail(name, "True or False", value)
    return value


def check_one_of(name: str, value: T, choices: Iterable[T]) -> T:
    """One of ``choices`` (compared with ``==``)."""
    allowed = list(choices)
    if value not in allowed:
        raise _fail(name, f"one of {allowed}", value)
    return value


def check_callable(name: str, value: Any, what: str = "a callable", *, optional: bool = False) -> Callable | None:
    """A callable (``None`` too when ``optional``); ``what`` describes the expected signature."""
    if optional and value is None:
        return None
    if not callable(value):
        raise ValueError(f"{name} must be {what}{' or None' if optional else ''}, got {type(value).__name__}")
    return value


def check_str(name: str, value: Any) -> str:
    """A string (a prefix, a name)."""
    if not isinstance(value, str):
        raise ValueError(f"{name} must be a string, got {type(value).__name__}")
    return value


def check_path(name: str, value: Any) -> Any:
    """A path (``str`` or ``os.PathLike``) or None; returned unchanged."""
    if value is not None and not isinstance(value, (str, os.PathLike)):
        raise ValueError(f"{name} must be a path (str or os.PathLike) or None, got {type(value).__name__}")
    return value


def deprecation_message(old: str, new: str, *, where: str | None = None, note: str | None = "same values") -> str:
    """The one wording of every deprecation in the package: ``"<where>: <old> is deprecated; use <new> (<note>)"``.

    Example:
        >>> deprecation_message("Cell.final_layer", "Cell.final_layer_policy")
        'Cell.final_layer is deprecated; use Cell.final_layer_policy (same values)'
        >>> deprecation_message("final_layer=", "final_layer_policy=", where="PruneAtInit")
        'PruneAtInit: final_layer= is deprecated; use final_layer_policy= (same values)'
    """
    prefix = f"{where}: " if where else ""
    return f"{prefix}{old} is deprecated; use {new}" + (f" ({note})" if note else "")


def renamed_keyword(
    options: MutableMapping[str, Any],
    old: str,
    new: str,
    value: Any,
    *,
    where: str | None = None,
    note: str | None = "same values",
    error: type[Exception] = ValueError,
    stacklevel: int = 3,
) -> tuple[Any, str]:
    """Take the deprecated keyword ``old`` out of ``options`` in favour of ``new`` (given as ``value``).

    The one deprecation path for renamed keywords: the warning reads as :func:`deprecation_message` words it,
    prefixed with ``where`` (the public function's name) when given. Returns ``(value, the name the caller
    used)``: the name goes into later error messages, so a user who wrote the old keyword reads an error
    about the old keyword. ``stacklevel`` counts from this function (3: the caller of the function calling
    this one).

    Raises:
        ValueError: (or ``error``) when both names are given.

    Example:
        >>> import warnings
        >>> given = {"final_layer": "dense"}
        >>> with warnings.catch_warnings(record=True) as caught:
        ...     warnings.simplefilter("always")
        ...     renamed_keyword(given, "final_layer", "final_layer_policy", None)
        ('dense', 'final_layer')
        >>> str(caught[0].message)
        'final_layer= is deprecated; use final_layer_policy= (same values)'
    """
    if old not in options:
        return value, new
    if value is not None:
        prefix = f"{where}: " if where else ""
        raise error(f"{prefix}give {new}= only ({old}= is its deprecated name), got both {new}={value!r} and {old}={options[old]!r}")
    message = deprecation_message(f"{old}=", f"{new}=", where=where, note=note)
    warnings.warn(message, DeprecationWarning, stacklevel=stacklevel)
    return options.pop(old), old
