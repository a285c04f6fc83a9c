"""The mask verdict: what the mask did, judged against the same network with every weight kept.

The two theorem axes (landscape, existence) describe the *class* a network belongs to. For every real
classifier n is far above the last hidden width, so NL-4 makes the dense network RISKY already, and the
axes read the same for every mask. The audit therefore also classifies the same architecture with an
all-ones mask (same data, same n): the :class:`Baseline`. Whatever the baseline already has belongs to
the architecture; the mask verdict counts only what the mask added.

Levels, worst first (an ``IntEnum``: sort and filter by it; higher is worse):

- ``BROKEN``: ``NO-PATH`` (no input reaches any output), ``COLLAPSED`` (a layer with no alive unit), or
  ``DEAD-OUTPUT`` (an output with no effective fan-in: it can only learn a constant).
- ``RISKY``: ``PRICE`` (the head's measured price is material: ``relative_price >= RISKY_PRICE``);
  a landscape rule that fires RISKY for this mask but not for the dense network (``LIN-3``, ``LIN-4``,
  ``NL-3``, or ``NL-4`` when the mask made a wide network narrow) when no measurement contradicts it
  (no data); or ``EXISTENCE`` (a non-closedness certificate decides OPTIMUM_MAY_NOT_EXIST and there is
  no weight decay).
- ``CAUTION``: such a landscape rule when the measured head price is below ``RISKY_PRICE`` (the rule is
  a class-level possibility; on the calibration runs those rows trained as well as their dense-head
  twins); ``SPARSE-HEAD`` (a sparse final layer, no rule fires, its fan-ins and price stated);
  ``NARROWED`` (the mask left fewer effective units entering the head than the dense network has);
  ``BENIGN-LOST`` (the dense network has a benign landscape theorem and this mask loses it);
  ``EXISTENCE-WD`` (a non-closedness certificate that only weight decay neutralises).
- ``SAFE``: ``DENSE-HEAD``: every output sees every effective last-hidden unit, and nothing above fired.

The price is the final-layer gap probe's ``masked_optimum - dense_optimum`` (ridge objective, features
fixed; see :mod:`prune_landscape.probes.final_layer_gap`), relative to the no-feature loss. The threshold
``RISKY_PRICE`` comes from benchmarks/calibration.py (README, "Calibration").

Example:
    >>> MaskLevel.BROKEN > MaskLevel.RISKY > MaskLevel.CAUTION > MaskLevel.SAFE
    True
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass
from typing import Any

from prune_landscape.structure import Structure
from prune_landscape.theory.classify import Verdict
from prune_landscape.theory.findings import Existence, Landscape

__all__ = ["RISKY_PRICE", "Baseline", "MaskLevel", "MaskVerdict", "Reason", "judge_mask"]

#: A head whose price is at least this fraction of the no-feature loss is RISKY (benchmarks/calibration.py).
RISKY_PRICE = 0.02


class MaskLevel(enum.IntEnum):
    """How bad the mask is, attributable to the mask alone (higher is worse)."""

    SAFE = 0
    CAUTION = 1
    RISKY = 2
    BROKEN = 3


@dataclass(frozen=True)
class Reason:
    """One rule or measurement behind a mask verdict.

    Attributes:
        rule: its id (``"NO-PATH"``, ``"NL-3"``, ``"PRICE"``, ``"SPARSE-HEAD"``, ...; module docstring).
        level: the level it alone would give.
        text: one line, with the numbers that decided it.
    """

    rule: str
    level: MaskLevel
    text: str

    def to_dict(self) -> dict[str, Any]:
        return {"rule": self.rule, "level": self.level.name, "text": self.text}


def _verdict_text(verdict: Verdict) -> str:
    rules = ", ".join(f"{f.rule} [{f.provenance.value}]" for f in verdict.deciding if f.rule in verdict.rules)
    return f"{verdict.verdict.name} by {rules or 'DEFAULT'}"


@dataclass(frozen=True)
class Baseline:
    """The architecture's own verdicts: the same network, every weight kept, the same data and n.

    Attributes:
        landscape, existence: the two theorem axes for the all-ones mask.
        last_hidden_width: effective units entering the final layer when nothing is pruned.
        n: the sample count both audits used.
    """

    landscape: Verdict
    existence: Verdict
    last_hidden_width: int
    n: int | None

    @property
    def text(self) -> str:
        """One line, e.g. ``landscape RISKY by NL-4 [RECALLED], existence UNKNOWN by DEFAULT [DERIVED]``."""
        return f"landscape {_verdict_text(self.landscape)}, existence {_verdict_text(self.existence)}"

    def to_dict(self) -> dict[str, Any]:
        return {"landscape": self.landscape.to_dict(), "existence": self.existence.to_dict(),
                "last_hidden_width": self.last_hidden_width, "n": self.n, "text": self.text}


@dataclass(frozen=True)
class MaskVerdict:
    """The graded verdict on a mask (module docstring), with every reason and the head's price.

    Attributes:
        level: the worst level among ``reasons``.
        reasons: every rule or measurement that fired, worst first.
        price: the final-layer gap result the price was read from (None without data or for a non-Linear
            final layer).
        price_note: why there is no price, when there is none.
    """

    level: MaskLevel
    reasons: tuple[Reason, ...]
    price: Any = None
    price_note: str = ""

    @property
    def verdict(self) -> MaskLevel:
        """Alias of ``level`` (the theorem axes' ``Verdict`` objects have ``verdict`` too)."""
        return self.level

    @property
    def rules(self) -> tuple[str, ...]:
        """The ids of the reasons that decided the level."""
        return tuple(r.rule for r in self.reasons if r.level == self.level)

    @property
    def explanation(self) -> str:
        """The deciding reasons' texts."""
        return "; ".join(r.text for r in self.reasons if r.level == self.level)

    @property
    def price_value(self) -> float | None:
        """masked-head optimum minus dense-head optimum (in the loss's units), or None."""
        return None if self.price is None else float(self.price.sparsity_price)

    @property
    def relative_price(self) -> float | None:
        """The price over the no-feature loss, or None."""
        if self.price is None:
            return None
        value = float(self.price.relative_price)
        return value if math.isfinite(value) else None

    @property
    def summary(self) -> str:
        """``LEVEL by RULES - explanation``: the one line every view shows."""
        return f"{self.level.name} by {', '.join(self.rules)} - {self.explanation}"

    def to_dict(self) -> dict[str, Any]:
        """Stable keys: ``level, code, rules, price, explanation`` (+ ``relative_price``, ``reasons``, ...)."""
        price = self.price
        return {
            "level": self.level.name,
            "code": int(self.level),
            "rules": list(self.rules),
            "price": self.price_value,
            "relative_price": self.relative_price,
            "price_loss": None if price is None else price.loss,
            "price_ridge": None if price is None else price.ridge,
            "price_note": self.price_note,
            "risky_price": RISKY_PRICE,
            "explanation": self.explanation,
            "summary": self.summary,
            "reasons": [r.to_dict() for r in self.reasons],
        }


def _risky_rules(verdict: Verdict) -> dict[str, str]:
    return {f.rule: f.explanation for f in verdict.findings if f.verdict is Landscape.RISKY and f.decided}


def _price_text(price: Any) -> str:
    units = "nats" if price.loss == "cross_entropy" else f"{price.loss} units"
    relative = price.relative_price
    share = f" ({100 * relative:.1f} % of the no-feature loss {price.null_loss:.3g})" if math.isfinite(relative) else ""
    return f"price +{max(price.sparsity_price, 0.0):.3g} {units}{share}"  # solver noise can dip a zero price below 0


def judge_mask(structure: Structure, landscape: Verdict, existence: Verdict, baseline: Baseline, *,
               price: Any = None, price_note: str = "", weight_decay: float = 0.0, data_given: bool = False) -> MaskVerdict:
    """Grade the mask: BROKEN / RISKY / CAUTION / SAFE, each reason naming its rule and numbers.

    Args:
        structure: the masked network's structure.
        landscape, existence: the masked network's theorem axes.
        baseline: the same axes for the all-ones mask.
        price: the final-layer gap result (``sparsity_price``, ``relative_price``, ``loss``), or None.
        price_note: why ``price`` is None.
        weight_decay: the training's weight decay (decides whether a non-closedness certificate is RISKY).
        data_given: the audit had data, so a head whose weight is dense has a measured price of 0.
    """
    reasons = [
        *_broken_reasons(structure),
        *_landscape_reasons(landscape, baseline, _measured_price(structure, price, data_given)),
        *_existence_reasons(existence, baseline, weight_decay),
        *_head_reasons(structure, baseline, price, price_note),
    ]
    if not reasons:
        reasons.append(Reason("DENSE-HEAD", MaskLevel.SAFE,
                              f"dense head: every output sees all {structure.last_hidden_width} effective last-hidden "
                              f"units; nothing beyond the dense network's baseline"))
    reasons.sort(key=lambda r: -int(r.level))
    return MaskVerdict(level=reasons[0].level, reasons=tuple(reasons), price=price, price_note=price_note)


def _broken_reasons(s: Structure) -> list[Reason]:
    """NO-PATH, COLLAPSED, DEAD-OUTPUT: what the structure alone shows cannot train."""
    reasons = []
    if not s.connected:
        reasons.append(Reason("NO-PATH", MaskLevel.BROKEN, "no input reaches any output"))
    if s.collapsed_layers:
        names = ", ".join(n.removesuffix(".weight") for n in s.collapsed_layers)
        reasons.append(Reason("COLLAPSED", MaskLevel.BROKEN, f"collapsed (no alive unit): {names}"))
    if s.connected and s.fan_in and s.fan_in_min == 0:
        dead = sum(1 for f in s.fan_in if f == 0)
        reasons.append(Reason("DEAD-OUTPUT", MaskLevel.BROKEN,
                              f"{dead} of {len(s.fan_in)} outputs have no effective fan-in (they can only be constant)"))
    return reasons


def _measured_price(s: Structure, price: Any, data_given: bool) -> float | None:
    """The head's measured relative price: the probe's value, 0 for a head whose weight is dense, unknown without data."""
    if price is not None and math.isfinite(float(price.relative_price)):
        return float(price.relative_price)
    if data_given and s.final.kept == s.final.total:
        return 0.0
    return None


def _landscape_reasons(landscape: Verdict, baseline: Baseline, measured: float | None) -> list[Reason]:
    """The RISKY rules this mask adds to the dense network's (CAUTION when the measured price is small), BENIGN-LOST."""
    reasons = []
    base_risky = _risky_rules(baseline.landscape)
    for rule, explanation in _risky_rules(landscape).items():
        if rule not in base_risky and rule in landscape.rules:
            text = f"{rule} fires for this mask, not for the dense network: {explanation}"
            if measured is not None and measured < RISKY_PRICE:
                # A class-level possibility that this mask's measurement does not confirm: on the calibration
                # runs such rows trained as well as their dense-head twins (README, "Calibration").
                reasons.append(Reason(rule, MaskLevel.CAUTION, f"{text}; not confirmed by the measured head price "
                                                               f"({100 * measured:.1f} % < {100 * RISKY_PRICE:g} %)"))
            else:
                reasons.append(Reason(rule, MaskLevel.RISKY, text))
    if landscape.verdict is not Landscape.RISKY and baseline.landscape.verdict.benign and not landscape.verdict.benign:
        reasons.append(Reason("BENIGN-LOST", MaskLevel.CAUTION,
                              f"the dense network is {baseline.landscape.verdict.name} by {', '.join(baseline.landscape.rules)}; "
                              f"this mask is {landscape.verdict.name}"))
    return reasons


def _existence_reasons(existence: Verdict, baseline: Baseline, weight_decay: float) -> list[Reason]:
    """EXISTENCE (a non-closedness certificate the mask added) or EXISTENCE-WD (weight decay neutralises it)."""
    if existence.certificate is None or baseline.existence.certificate is not None:
        return []
    if existence.verdict is Existence.OPTIMUM_MAY_NOT_EXIST and weight_decay == 0:
        return [Reason("EXISTENCE", MaskLevel.RISKY,
                       f"{', '.join(existence.rules)}: the optimum may not exist ({existence.certificate}); "
                       f"weight decay > 0 restores it")]
    return [Reason("EXISTENCE-WD", MaskLevel.CAUTION,
                   f"non-closed ({existence.certificate}); only the weight decay keeps an optimum")]


def _head_reasons(s: Structure, baseline: Baseline, price: Any, price_note: str) -> list[Reason]:
    """PRICE (a material measured price) or SPARSE-HEAD, and NARROWED (fewer effective units enter the head)."""
    reasons = []
    head = (f"{'sparse' if not s.final_layer_dense else 'cut'} head: {100 * s.final_layer_density:.1f} % kept, "
            f"per-output fan-in min/median/max {s.fan_in_min}/{s.fan_in_median:g}/{s.fan_in_max} of "
            f"{s.last_hidden_width} effective units")
    relative = float(price.relative_price) if price is not None else math.nan
    if math.isfinite(relative) and relative >= RISKY_PRICE:
        # Priced whenever the head's weight has pruned entries, also when the cut columns left units dead
        # (then the head is dense over the effective units, yet a dense head would use those features).
        reasons.append(Reason("PRICE", MaskLevel.RISKY, f"{head}; {_price_text(price)} >= {100 * RISKY_PRICE:g} %"))
    elif not s.final_layer_dense:
        price_words = f"{_price_text(price)} < {100 * RISKY_PRICE:g} %" if price is not None else \
            f"price not measured ({price_note or 'no data'})"
        reasons.append(Reason("SPARSE-HEAD", MaskLevel.CAUTION, f"{head}; {price_words}"))
    if s.last_hidden_width < baseline.last_hidden_width and s.connected:
        reasons.append(Reason("NARROWED", MaskLevel.CAUTION,
                              f"{s.last_hidden_width} of {baseline.last_hidden_width} units entering the head are effective"))
    return reasons
