"""Knobs grouped in frozen values, with the old loose keywords still accepted (and renamed ones deprecated).

A public function whose knobs travel together takes them as one frozen dataclass (``TrainConfig``,
``StructureOptions``, ``Teacher``) and still accepts each knob as a keyword, as it always did: the keywords
override the value's fields. A keyword whose name changed still works and raises one
:class:`DeprecationWarning` naming the new name; an unknown keyword is a ``TypeError`` naming every
accepted one, as Python's own would.

Example:
    >>> from dataclasses import dataclass
    >>> @dataclass(frozen=True)
    ... class Knobs:
    ...     lr: float = 0.1
    ...     epochs: int = 10
    >>> with_keywords(Knobs, None, {"epochs": 3}, where="train")
    Knobs(lr=0.1, epochs=3)
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, TypeVar

from prune_landscape.checks import renamed_keyword

__all__ = ["with_keywords"]

T = TypeVar("T")


def with_keywords(cls: type[T], value: T | None, keywords: Mapping[str, Any], *, where: str,
                  renamed: Mapping[str, str] | None = None) -> T:
    """``value`` (default ``cls()``) with the fields named in ``keywords`` replaced.

    Args:
        cls: a frozen dataclass; its fields are the accepted keywords.
        value: the value the caller passed, or None.
        keywords: the loose keywords the caller passed.
        where: the public function's name, for messages.
        renamed: old keyword -> new field name; the old one works and warns (DeprecationWarning).

    Raises:
        TypeError: for a keyword that is no field (nor an old name of one), for an old and a new name given
            together, or for a ``value`` that is not a ``cls``.
    """
    if value is not None and not isinstance(value, cls):
        raise TypeError(f"{where}() expected a {cls.__name__} or None, got {type(value).__name__}")
    renamed = renamed or {}
    fields = [f.name for f in dataclasses.fields(cls)]  # type: ignore[arg-type]
    unknown = [name for name in keywords if renamed.get(name, name) not in fields]
    if unknown:
        raise TypeError(f"{where}() got an unexpected keyword argument {unknown[0]!r}; expected one of {fields}")
    changes = dict(keywords)
    for old, new in renamed.items():
        if old in changes:  # stacklevel 4: renamed_keyword -> here -> the public function -> the user's line
            changes[new], _ = renamed_keyword(changes, old, new, changes.get(new), where=where, error=TypeError, stacklevel=4)
    return dataclasses.replace(value if value is not None else cls(), **changes)  # type: ignore[type-var]
