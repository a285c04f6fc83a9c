"""The rules of THEORY.md as code: facts -> findings -> two verdict axes.

One module per paper (``lin_sun_zhang``, ``li_ding_sun``, ``le_riccietti_gribonval``, ``zhang_et_al``), the
two-factor closedness check (``closedness``), condition G (``rank_condition``), the facts the rules read
(``facts``), the :class:`Rule` value each paper module declares its rules as (``rules``) and the classifier
(``classify``).

Example:
    >>> import numpy as np
    >>> from prune_landscape.theory import check_closedness
    >>> check_closedness(np.ones((3, 2)), np.ones((2, 4))).status.name
    'CLOSED'
"""

from prune_landscape.theory.classify import DEFAULT, RULES, Verdict, classify, evaluate, rule_ids
from prune_landscape.theory.closedness import Certificate, Closedness, ClosednessResult, check_closedness
from prune_landscape.theory.facts import NetworkFacts, collect_facts
from prune_landscape.theory.findings import Axis, Existence, Finding, Landscape, Provenance
from prune_landscape.theory.rank_condition import RankResult, check_rank_condition
from prune_landscape.theory.rules import Rule

__all__ = [
    "DEFAULT", "RULES", "Rule", "Verdict", "classify", "evaluate", "rule_ids",
    "Certificate", "Closedness", "ClosednessResult", "check_closedness",
    "NetworkFacts", "collect_facts",
    "Axis", "Existence", "Finding", "Landscape", "Provenance",
    "RankResult", "check_rank_condition",
]
