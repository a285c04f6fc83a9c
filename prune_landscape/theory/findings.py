"""The vocabulary of the audit: verdict Enums, provenance, and the frozen Finding every rule returns.

Example:
    >>> f = Finding("WD", Axis.EXISTENCE, Existence.OPTIMUM_EXISTS_WITH_WEIGHT_DECAY, Provenance.DERIVED,
    ...             (("weight_decay", 0.0005),), "weight decay makes the objective coercive")
    >>> f.verdict.name, f.facts_dict
    ('OPTIMUM_EXISTS_WITH_WEIGHT_DECAY', {'weight_decay': 0.0005})
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any

__all__ = ["Axis", "Existence", "Finding", "Landscape", "Provenance"]


class Landscape(enum.Enum):
    """Landscape axis, strongest first (THEORY.md section 2)."""

    NO_SPURIOUS_LOCAL_MIN = 0
    NO_SPURIOUS_VALLEY = 1
    NO_SUBOPTIMAL_BASIN = 2
    RISKY = 3
    UNKNOWN = 4

    @property
    def benign(self) -> bool:
        """A theorem rules spurious minima/valleys/basins out."""
        return self.value <= 2


class Existence(enum.Enum):
    """Existence axis (THEORY.md section 2)."""

    OPTIMUM_EXISTS = 0
    OPTIMUM_EXISTS_WITH_WEIGHT_DECAY = 1
    OPTIMUM_MAY_NOT_EXIST = 2
    UNKNOWN = 3


class Axis(enum.Enum):
    """Which verdict a finding speaks to; INFO findings inform without deciding (NL-5)."""

    LANDSCAPE = "landscape"
    EXISTENCE = "existence"
    INFO = "info"


class Provenance(enum.Enum):
    """READ: stated in a paper's abstract or code; DERIVED: our own notes; RECALLED: believed, not checked."""

    READ = "READ"
    DERIVED = "DERIVED"
    RECALLED = "RECALLED"


@dataclass(frozen=True)
class Finding:
    """One rule's conclusion about one network (or why it could not conclude).

    Attributes:
        rule: the rule id of THEORY.md section 3 (``"NL-3"``).
        axis: the verdict axis it speaks to.
        verdict: a :class:`Landscape` or :class:`Existence` member (None for INFO findings).
        provenance: the weakest link of the rule's basis; a RECALLED rule says so in ``explanation``.
        facts: ``(name, value)`` pairs that made the rule fire (fan-ins, n, widths, activation, ...).
        explanation: one line for the report.
        basis: the rule's basis as THEORY.md states it (papers and provenance).
        missing: facts the rule needed but did not get (then ``verdict`` is UNKNOWN and the rule did not
            decide); empty when it fired.
    """

    rule: str
    axis: Axis
    verdict: Landscape | Existence | None
    provenance: Provenance
    facts: tuple[tuple[str, Any], ...]
    explanation: str
    basis: str = ""
    missing: tuple[str, ...] = ()

    @property
    def facts_dict(self) -> dict[str, Any]:
        """The facts as a dict."""
        return dict(self.facts)

    @property
    def decided(self) -> bool:
        """False when a missing fact kept the rule from deciding."""
        return not self.missing

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready fields with stable keys."""
        return {
            "rule": self.rule,
            "axis": self.axis.value,
            "verdict": None if self.verdict is None else self.verdict.name,
            "provenance": self.provenance.value,
            "facts": {k: _jsonable(v) for k, v in self.facts},
            "explanation": self.explanation,
            "basis": self.basis,
            "missing": list(self.missing),
        }

    def __str__(self) -> str:
        verdict = "" if self.verdict is None else f" -> {self.verdict.name}"
        return f"{self.rule} [{self.provenance.value}]{verdict}: {self.explanation}"


def _jsonable(value: Any) -> Any:
    if isinstance(value, enum.Enum):
        return value.name
    if isinstance(value, tuple):
        return [_jsonable(v) for v in value]
    if hasattr(value, "item") and getattr(value, "ndim", 1) == 0:
        return value.item()
    return value
