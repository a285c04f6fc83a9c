"""Combine the rules' findings into the two verdict axes (THEORY.md section 2).

Landscape: the strongest benign verdict any rule proved wins; otherwise RISKY when a RISKY rule fired
(by definition every benign hypothesis failed); otherwise UNKNOWN, naming the rules that could not decide
and why, or DEFAULT. Existence: OPTIMUM_EXISTS > OPTIMUM_EXISTS_WITH_WEIGHT_DECAY > OPTIMUM_MAY_NOT_EXIST
> UNKNOWN; a non-closedness certificate is kept even when weight decay restores existence.

Example:
    >>> from prune_landscape import models
    >>> from prune_landscape.theory.facts import collect_facts
    >>> landscape, existence, _ = classify(evaluate(collect_facts(models.mlp([3, 4, 1], "linear"))))
    >>> landscape.verdict.name, landscape.rules, existence.verdict.name
    ('NO_SPURIOUS_LOCAL_MIN', ('LIN-1', 'LIN-1d'), 'OPTIMUM_EXISTS')
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from prune_landscape.theory import le_riccietti_gribonval, li_ding_sun, lin_sun_zhang, zhang_et_al
from prune_landscape.theory.closedness import Certificate, Closedness
from prune_landscape.theory.facts import NetworkFacts
from prune_landscape.theory.findings import Axis, Existence, Finding, Landscape, Provenance
from prune_landscape.theory.rules import Rule, cite

__all__ = ["DEFAULT", "RULES", "Verdict", "classify", "evaluate", "rule_ids"]

#: Every rule, in THEORY.md order within each paper module (a rule with two axes appears once per axis).
RULES: tuple[Rule, ...] = (
    *lin_sun_zhang.RULES, *li_ding_sun.RULES, *zhang_et_al.RULES, *le_riccietti_gribonval.RULES,
)

#: What an axis no rule spoke to gets: UNKNOWN. :func:`evaluate` applies it after the others (no check).
DEFAULT = Rule("DEFAULT", "—", Provenance.DERIVED)


@dataclass(frozen=True)
class Verdict:
    """One axis of the audit.

    Attributes:
        axis: LANDSCAPE or EXISTENCE.
        verdict: the :class:`Landscape` or :class:`Existence` member.
        rules: ids of the rules behind the verdict (``("DEFAULT",)`` when none applied).
        findings: every finding on this axis (deciding, overridden and undecided ones).
        certificate: existence only: the non-closedness certificate, when one was found.
        explanation: one line: the deciding rule's explanation, or why nothing decided.
    """

    axis: Axis
    verdict: Landscape | Existence
    rules: tuple[str, ...]
    findings: tuple[Finding, ...]
    certificate: Certificate | None
    explanation: str

    @property
    def deciding(self) -> tuple[Finding, ...]:
        return tuple(f for f in self.findings if f.rule in self.rules)

    @property
    def provenance(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(f.provenance.value for f in self.deciding))

    @property
    def recalled(self) -> bool:
        return any(f.provenance is Provenance.RECALLED for f in self.deciding)

    def to_dict(self) -> dict[str, Any]:
        return {
            "verdict": self.verdict.name,
            "code": self.verdict.value,
            "rules": list(self.rules),
            "provenance": list(self.provenance),
            "explanation": self.explanation,
            "certificate": None if self.certificate is None else self.certificate.to_dict(),
            "findings": [f.to_dict() for f in self.findings],
        }


def evaluate(facts: NetworkFacts, rules: Sequence[Rule] = RULES) -> tuple[Finding, ...]:
    """Run every rule on ``facts`` and return the findings of those that fired (or could not decide)."""
    found = (rule(facts) for rule in rules)
    findings = tuple(f for f in found if f is not None)
    return findings + tuple(_defaults(facts, findings))


def rule_ids() -> tuple[str, ...]:
    """The rule ids of THEORY.md section 3 this package implements, in order (DEFAULT last)."""
    return tuple(dict.fromkeys(rule.id for rule in (*RULES, DEFAULT)))


def _defaults(facts: NetworkFacts, findings: tuple[Finding, ...]) -> list[Finding]:
    extra = []
    scope = f" ({facts.notes['scope']})" if "scope" in facts.notes else ""
    for axis, unknown in ((Axis.LANDSCAPE, Landscape.UNKNOWN), (Axis.EXISTENCE, Existence.UNKNOWN)):
        if not any(f.axis is axis for f in findings):
            extra.append(DEFAULT.finding(axis, unknown, cite(facts), f"no rule of THEORY.md section 3 applies{scope}"))
    return extra


def _landscape(findings: tuple[Finding, ...]) -> Verdict:
    mine = tuple(f for f in findings if f.axis is Axis.LANDSCAPE)
    decided = [f for f in mine if f.decided and f.verdict is not Landscape.UNKNOWN]
    benign = [f for f in decided if f.verdict.benign]
    if benign:
        best = min(f.verdict.value for f in benign)
        chosen = [f for f in benign if f.verdict.value == best]
    else:
        chosen = [f for f in decided if f.verdict is Landscape.RISKY] or [f for f in mine if f.verdict is Landscape.UNKNOWN]
    verdict = chosen[0].verdict if chosen and chosen[0].verdict is not None else Landscape.UNKNOWN
    return Verdict(Axis.LANDSCAPE, verdict, tuple(dict.fromkeys(f.rule for f in chosen)), mine, None,
                   "; ".join(dict.fromkeys(f.explanation for f in chosen)))


_EXISTENCE_ORDER = (Existence.OPTIMUM_EXISTS, Existence.OPTIMUM_EXISTS_WITH_WEIGHT_DECAY, Existence.OPTIMUM_MAY_NOT_EXIST)


def _existence(findings: tuple[Finding, ...], facts: NetworkFacts | None) -> Verdict:
    mine = tuple(f for f in findings if f.axis is Axis.EXISTENCE)
    certificate = None
    if facts is not None and facts.closedness is not None and facts.closedness.status is Closedness.NOT_CLOSED:
        if any(f.verdict is Existence.OPTIMUM_MAY_NOT_EXIST for f in mine):
            certificate = facts.closedness.certificate
    fired = {v: [f for f in mine if f.verdict is v and f.decided] for v in _EXISTENCE_ORDER}
    if fired[Existence.OPTIMUM_EXISTS] and fired[Existence.OPTIMUM_MAY_NOT_EXIST]:
        clash = fired[Existence.OPTIMUM_EXISTS] + fired[Existence.OPTIMUM_MAY_NOT_EXIST]
        return Verdict(Axis.EXISTENCE, Existence.UNKNOWN, tuple(f.rule for f in clash), mine, certificate,
                       "conflicting findings (a bug: please report the masks): " + "; ".join(f.rule for f in clash))
    for verdict in _EXISTENCE_ORDER:
        if fired[verdict]:
            chosen = fired[verdict]
            break
    else:
        chosen = [f for f in mine if f.verdict is Existence.UNKNOWN]
    verdict = chosen[0].verdict if chosen else Existence.UNKNOWN
    return Verdict(Axis.EXISTENCE, verdict, tuple(dict.fromkeys(f.rule for f in chosen)), mine, certificate,
                   "; ".join(dict.fromkeys(f.explanation for f in chosen)))


def classify(findings: Sequence[Finding], facts: NetworkFacts | None = None) -> tuple[Verdict, Verdict, tuple[Finding, ...]]:
    """Combine findings into ``(landscape, existence, info_findings)``.

    Args:
        findings: the output of :func:`evaluate` (or any findings).
        facts: the facts, for the existence certificate; optional.
    """
    findings = tuple(findings)
    info = tuple(f for f in findings if f.axis is Axis.INFO)
    return _landscape(findings), _existence(findings, facts), info
