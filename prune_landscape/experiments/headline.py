"""The words of the sweep report (the pruning-method audit): the headline, the worst-first ranking and the remedies.

Everything here reads plain rows (the dicts :func:`prune_landscape.experiments.sweep.audit_cell` returns) and returns
text; :mod:`prune_landscape.experiments.html` lays the same words out as Markdown and HTML, the CLI prints them and
writes them into the W&B summary, so every view says the same thing.

The headline names, per sparsity and final-layer policy, what each method's mask did to the head (its
mask verdict, worst first, with the head's kept share, smallest fan-in and measured price), and prints
the architecture's baseline (the theorem axes of the same network with every weight kept) once.

Example:
    >>> headline([])
    ['No rows yet.']
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Mapping, Sequence
from typing import Any

__all__ = ["LEVELS", "headline", "ranked"]

Row = Mapping[str, Any]
#: Mask verdict levels, best first (``mask_verdict_code`` is the index).
LEVELS = ("SAFE", "CAUTION", "RISKY", "BROKEN")


def _pct(value: float | None, digits: int = 1) -> str:
    return "—" if value is None else f"{100 * value:.{digits}f} %"


def _level(row: Row) -> str:
    return str(row.get("mask_verdict") or "—")


def _code(row: Row) -> int:
    return LEVELS.index(row["mask_verdict"]) if row.get("mask_verdict") in LEVELS else -1


def _units(row: Row) -> str:
    return "nats" if row.get("head_price_loss", "cross_entropy") == "cross_entropy" else str(row.get("head_price_loss"))


def _price(row: Row) -> str:
    """``+0.123 nats (5.3 %)``; ``0 (dense)`` for a dense head; ``—`` when not measured."""
    price = row.get("head_price")
    if price is None:
        return "0 (dense)" if row.get("final_layer_dense") and row.get("connected", True) else "—"
    relative = row.get("head_price_relative")
    share = "" if relative is None else f" ({100 * relative:.1f} %)"
    return f"+{max(price, 0.0):.3f} {_units(row)}{share}"  # solver noise can dip a zero price below 0


def _policy_rank(policy: str) -> tuple[int, str]:
    return (0 if policy == "prune" else 2 if policy == "dense" else 1, policy)


def _methods(rows: Sequence[Row]) -> list[str]:
    return sorted({str(r["method"]) for r in rows if r["method"] != "dense"})


def _join_levels(rows: Sequence[Row]) -> str:
    return ", ".join(f"{m} ({', '.join(f'{100 * s:g} %' for s in sorted({float(r['sparsity']) for r in rows if r['method'] == m}))})"
                     for m in _methods(rows))


def _join_densities(rows: Sequence[Row]) -> str:
    """``method (final layer 18.8 % dense at 90 %, ...)``, the sparsest final layer first."""
    parts = []
    for method in _methods(rows):
        chosen = sorted((float(r["sparsity"]), float(r["final_layer_density"])) for r in rows if r["method"] == method)
        levels = {s: statistics.fmean(d for t, d in chosen if t == s) for s, _ in chosen}
        text = ", ".join(f"{100 * d:.1f} % at {100 * s:g} %" for s, d in levels.items())
        parts.append((min(levels.values()), f"{method} ({text})"))
    return "; ".join(text for _, text in sorted(parts))


def _policy_words(policy: str) -> str:
    if policy == "prune":
        return "final layer pruned"
    if policy == "dense":
        return "final layer kept dense"
    return f"final layer floored at {policy.split('=', 1)[-1]}"


def _names(items: Sequence[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def _method_summary(rows: Sequence[Row]) -> tuple[int, float, Row, str]:
    """(worst level code, mean price, the worst row, seeds note) over one method's seeds."""
    worst = max(rows, key=lambda r: (_code(r), r.get("head_price") or 0.0))
    prices = [float(r["head_price"]) for r in rows if r.get("head_price") is not None]
    at_worst = sum(1 for r in rows if _code(r) == _code(worst))
    note = f" in {at_worst} of {len(rows)} seeds" if at_worst < len(rows) else ""
    return _code(worst), statistics.fmean(prices) if prices else 0.0, worst, note


def _head_facts(row: Row, price: float) -> str:
    width = row.get("last_hidden_width")
    of = f" of {width}" if width else ""
    text = f"{_pct(row['final_layer_density'])} kept, min fan-in {row['fan_in_min']}{of}"
    if row.get("head_price") is not None:
        text += f", price +{max(price, 0.0):.3f} {_units(row)}"
    return text


def _broken_reason(row: Row) -> str:
    rules = row.get("mask_verdict_rules") or []
    if "NO-PATH" in rules or "COLLAPSED" in rules:
        collapsed = ", ".join(n.removesuffix(".weight") for n in row.get("collapsed_layers") or [])
        return "no input-output path" + (f", {collapsed} collapsed" if collapsed else "")
    return "an output with no effective fan-in"


def _mask_line(rows: Sequence[Row], sparsity: float, policy: str) -> str | None:
    """'At 98 % sparsity, final layer pruned: snip leaves a RISKY sparse head (...); ...' or None."""
    by_method: dict[str, list[Row]] = {}
    for r in rows:
        if r["method"] != "dense" and float(r["sparsity"]) == sparsity and r["final_layer_policy"] == policy and _code(r) >= 0:
            by_method.setdefault(str(r["method"]), []).append(r)
    if not by_method:
        return None
    summaries = sorted(((*_method_summary(group), method) for method, group in by_method.items()),
                       key=lambda t: (-t[0], -t[1], t[4]))
    parts = []
    for code in (3, 2, 1, 0):
        chosen = [(price, row, note, method) for c, price, row, note, method in summaries if c == code]
        if not chosen:
            continue
        names = [f"{method}{note}" for _, _, note, method in chosen]
        verb = "s" if len(chosen) == 1 else ""
        if code == 3:
            details = "; ".join(f"{m}: {_broken_reason(r)}" for _, r, _, m in chosen)
            parts.append(f"{_names(names)} break{verb} the network ({details})")
            continue
        sparse = [(p, r, n, m) for p, r, n, m in chosen if not r["final_layer_dense"]]
        dense = [(p, r, n, m) for p, r, n, m in chosen if r["final_layer_dense"]]
        level = LEVELS[code]
        if sparse:
            verb_s = "s" if len(sparse) == 1 else ""
            details = "; ".join(f"{m}: " + ", ".join(x for x in (_rules_note(r), _head_facts(r, p)) if x) for p, r, _, m in sparse)
            label = {2: "a RISKY sparse head", 1: "a sparse head at CAUTION"}[code]
            parts.append(f"{_names([f'{m}{n}' for _, _, n, m in sparse])} leave{verb_s} {label} ({details})")
        if dense:
            verb_d = "s" if len(dense) == 1 else ""
            who = _names([f"{m}{n}" for _, _, n, m in dense])
            if code == 0:
                parts.append(f"{who} keep{verb_d} the head dense: SAFE")
            else:
                details = "; ".join(f"{m}: {r.get('mask_verdict_explanation', '')}" for _, r, _, m in dense)
                parts.append(f"{who} keep{verb_d} the head dense but {level} ({details})")
    return f"At {100 * sparsity:g} % sparsity, {_policy_words(policy)}: " + "; ".join(parts) + "."


def _rules_note(row: Row) -> str:
    rules = [r for r in row.get("mask_verdict_rules") or [] if r not in ("PRICE", "SPARSE-HEAD", "NARROWED")]
    return f"by {', '.join(rules)}" if rules else ""


def _baseline_line(rows: Sequence[Row]) -> str | None:
    texts = {r["baseline"]["text"] for r in rows if isinstance(r.get("baseline"), Mapping) and r["baseline"].get("text")}
    if not texts:
        return None
    n = sorted({r.get("n") for r in rows if r.get("n") is not None})
    count = f", n = {n[0]:,}" if len(n) == 1 else ""
    return (f"Architecture baseline (the same network with every weight kept{count}): {'; '.join(sorted(texts))}. "
            f"It holds for every row; the mask verdicts say what each mask added.")


def headline(rows: Sequence[Row]) -> list[str]:
    """The report's first lines: the baseline once, then per sparsity what each method's mask did to the head.

    Example:
        >>> headline([])
        ['No rows yet.']
    """
    if not rows:
        return ["No rows yet."]
    lines = []
    baseline = _baseline_line(rows)
    if baseline:
        lines.append(baseline)
    policies = sorted({str(r["final_layer_policy"]) for r in rows if r["method"] != "dense"}, key=_policy_rank)
    for sparsity in sorted({float(r["sparsity"]) for r in rows if r["method"] != "dense"}):
        for policy in policies:
            line = _mask_line(rows, sparsity, policy)
            if line:
                lines.append(line)
    pruned = [r for r in rows if r["method"] != "dense" and r["final_layer_policy"] == "prune"]
    sparse = [r for r in pruned if not r["final_layer_dense"]]
    lines.append(f"Final layer left sparse (density kept): {_join_densities(sparse)}." if sparse
                 else "Final layer left sparse: no method.")
    kept = [m for m in _methods(pruned) if m not in {r["method"] for r in sparse}]
    if kept:
        lines.append(f"Final layer kept dense without being told to: {', '.join(kept)}.")
    collapsed = [r for r in rows if r["collapsed_layers"]]
    lines.append(f"Collapsed (a layer with no alive unit): {_join_levels(collapsed)}." if collapsed
                 else "No method collapsed a layer.")
    for sparsity in sorted({float(r["sparsity"]) for r in rows if r["method"] != "dense"}):
        scored = [r for r in rows if float(r["sparsity"]) == sparsity and r.get("test_accuracy") is not None
                  and r["method"] != "dense"]
        if scored:
            best = max(scored, key=lambda r: r["test_accuracy"])
            lines.append(f"Best test accuracy at {100 * sparsity:g} % sparsity: {best['method']} "
                         f"(final layer {best['final_layer_policy']}), {_pct(best['test_accuracy'])}.")
    pairs = _policy_gaps(rows)
    if pairs:
        lines.append("Keeping the final layer dense changes test accuracy by "
                     + ", ".join(f"{gap:+.1f} pp at {100 * s:g} %" for s, gap in pairs) + " (mean over methods and seeds).")
    contexts = {r.get("context", "") for r in rows}
    if len(contexts) > 1:
        lines.append(f"These rows come from {len(contexts)} different configurations (their 'context' in sweep.json).")
    levels: dict[str, int] = {}
    for r in rows:
        if _code(r) >= 0:
            levels[_level(r)] = levels.get(_level(r), 0) + 1
    if levels:
        lines.append("Mask verdicts: " + ", ".join(f"{v} x{levels[v]}" for v in reversed(LEVELS) if v in levels) + ".")
    verdicts: dict[str, int] = {}
    for r in rows:
        verdicts[str(r["landscape"])] = verdicts.get(str(r["landscape"]), 0) + 1
    shared = sum(1 for r in rows if isinstance(r.get("baseline"), Mapping) and r["landscape"] == r["baseline"].get("landscape")
                 and list(r.get("landscape_rules") or []) == list(r["baseline"].get("landscape_rules") or []))
    suffix = f" ({shared} of {len(rows)} the same as the architecture's baseline)" if baseline else ""
    lines.append("Landscape verdicts (theorem axis): " + ", ".join(f"{v} x{c}" for v, c in sorted(verdicts.items()))
                 + suffix + ".")
    return lines


def ranked(rows: Sequence[Row]) -> list[Row]:
    """Rows worst first: mask verdict level, then head price, then method, sparsity, policy, seed."""
    return sorted(rows, key=lambda r: (-_code(r), -(r.get("head_price") or 0.0), str(r["method"]), float(r["sparsity"]),
                                       _policy_rank(str(r["final_layer_policy"])), int(r["seed"])))


#: The worst-first table: (header, cell text).
_RANKED: tuple[tuple[str, Callable[[Row], str]], ...] = (
    ("mask verdict", _level),
    ("method", lambda r: str(r["method"])),
    ("sparsity", lambda r: _pct(r["sparsity"])),
    ("final-layer policy", lambda r: str(r["final_layer_policy"])),
    ("seed", lambda r: str(r["seed"])),
    ("head price", _price),
    ("test acc", lambda r: _pct(r.get("test_accuracy"))),
    ("decided by", lambda r: ", ".join(r.get("mask_verdict_rules") or []) or "—"),
    ("what the mask did", lambda r: str(r.get("mask_verdict_explanation") or "—")),
)


def _remedy_lines(rows: Sequence[Row]) -> list[str]:
    """One entry per row with a remedy (worst first): its text and the setting for every pipeline."""
    lines = []
    for r in ranked(rows):
        remedy = r.get("remedy")
        if not isinstance(remedy, Mapping) or not remedy.get("text"):
            continue
        lines.append(f"- {r['method']} {_pct(r['sparsity'])} ({r['final_layer_policy']}, seed {r['seed']}, {_level(r)}): "
                     f"{remedy['text']}")
        for pipeline, setting in (remedy.get("settings") or {}).items():
            lines.append(f"  - {pipeline}: `{setting}`")
    return lines


def _policy_gaps(rows: Sequence[Row]) -> list[tuple[float, float]]:
    """(sparsity, mean test-accuracy gain in points of 'dense' over 'prune'), paired by method and seed."""
    table = {(r["method"], float(r["sparsity"]), r["seed"], r["final_layer_policy"]): r.get("test_accuracy") for r in rows}
    gaps: dict[float, list[float]] = {}
    for (method, sparsity, seed, policy), accuracy in table.items():
        other = table.get((method, sparsity, seed, "prune"))
        if policy == "dense" and method != "dense" and accuracy is not None and other is not None:
            gaps.setdefault(sparsity, []).append(100 * (accuracy - other))
    return [(s, statistics.fmean(g)) for s, g in sorted(gaps.items())]
