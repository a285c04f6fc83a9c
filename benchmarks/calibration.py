"""Calibration: does the mask verdict predict what happens in training?

Every pruned row with its final layer pruned ("prune") is paired with its equal-budget twin: the same
method, sparsity and seed with the final layer kept dense (the same total number of kept weights). The
gap is row minus twin, after the same training: train loss (positive = the sparse head trains worse)
and test accuracy in points (negative = worse) or, for regression, test loss. Per mask-verdict level we
report the mean gap with its 95 % t-interval, and over every priced row the Spearman rank correlation
between the head's measured price (audited after training) and the gap.

Two settings, both methods x sparsities x {prune, dense} x seeds:
- digits: scikit-learn digits, the demo's MLP 64-512-64-10, cross-entropy, SGD lr 0.05, 10 epochs
  (n = 1,347 >> last hidden width 64: NL-4 for every row, the regime of every real classifier);
- teacher-student: Gaussian inputs (d = 32), a dense ReLU teacher 32-16-2, regression (squared loss),
  n = 96 samples, student 32-128-2 (wide: 128 >= n, the theorems' setting: NL-1 for the dense network,
  NL-3 for a sparse head that leaves an output with fan-in < n), Adam lr 0.01, 200 epochs, full batch.

Run: OMP_NUM_THREADS=1 .venv/bin/python benchmarks/calibration.py [--seeds 3] [--quick] [--out DIR]
(5.4 minutes on 2 busy cores; --quick: one seed, one sparsity per setting, 0.3 minutes). Prints the Markdown
tables the README quotes and writes ``calibration.json`` (every row) to ``--out``.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from scipy import stats

from prune_landscape import models
from prune_landscape.data import digits, teacher_student
from prune_landscape.experiments.plan import SweepPlan
from prune_landscape.experiments.sweep import audit_cell

LEVELS = ("BROKEN", "RISKY", "CAUTION", "SAFE")


@dataclass(frozen=True)
class Setting:
    name: str
    plan: SweepPlan
    factory: Any
    train: Any
    test: Any
    classification: bool


def settings(seeds: tuple[int, ...], quick: bool) -> list[Setting]:
    methods = ("magnitude", "random", "snip", "synflow", "ntk_sap")
    options = {"ntk_sap": {"iterations": 20, "repeats": 5}, "synflow": {"iterations": 100}}
    digits_plan = SweepPlan(methods=methods, sparsities=(0.98,) if quick else (0.9, 0.95, 0.98),
                            final_layer_policies=("prune", "dense"), seeds=seeds, method_options=options, epochs=10, lr=0.05,
                            dense_baseline=False)
    x, y = teacher_student(96, 32, widths=(16,), outputs=2, task="regression", seed=0)
    y_scale = y.std()
    teacher_train = (x, y / y_scale)
    xt, yt = teacher_student(256, 32, widths=(16,), outputs=2, task="regression", seed=0, split="test")
    teacher_test = (xt, yt / y_scale)
    teacher_plan = SweepPlan(methods=methods, sparsities=(0.9,) if quick else (0.8, 0.9),
                             final_layer_policies=("prune", "dense"), seeds=seeds, method_options=options, epochs=200, lr=0.01,
                             train_options={"loss": "mse", "optimizer": "adam", "batch_size": 96}, dense_baseline=False)
    return [
        Setting("digits", digits_plan, lambda: models.mlp([64, 512, 64, 10]), digits("train"), digits("test"), True),
        Setting("teacher-student", teacher_plan, lambda: models.mlp([32, 128, 2]), teacher_train, teacher_test, False),
    ]


def mean_ci(values: list[float]) -> tuple[float, float, float]:
    """Mean and the 95 % t-interval (nan bounds for fewer than 2 values)."""
    mean = statistics.fmean(values)
    if len(values) < 2:
        return mean, math.nan, math.nan
    half = stats.t.ppf(0.975, len(values) - 1) * statistics.stdev(values) / math.sqrt(len(values))
    return mean, mean - half, mean + half


def pairs(rows: list[dict[str, Any]], classification: bool) -> list[dict[str, Any]]:
    """Each pruned-head row with its gaps to the dense-head twin."""
    twins = {(r["method"], r["sparsity"], r["seed"]): r for r in rows if r["final_layer_policy"] == "dense"}
    out = []
    for r in rows:
        twin = twins.get((r["method"], r["sparsity"], r["seed"]))
        if r["final_layer_policy"] != "prune" or twin is None:
            continue
        test_gap = (100 * (r["test_accuracy"] - twin["test_accuracy"]) if classification
                    else r["test_loss"] - twin["test_loss"])
        out.append({"level": r["mask_verdict"], "twin_level": twin["mask_verdict"], "method": r["method"],
                    "sparsity": r["sparsity"], "seed": r["seed"], "price": r["head_price"],
                    "relative_price": r["head_price_relative"], "rules": r["mask_verdict_rules"],
                    "train_loss_gap": r["train_loss"] - twin["train_loss"], "test_gap": test_gap})
    return out


def table(name: str, paired: list[dict[str, Any]], dense_rows: list[dict[str, Any]], classification: bool) -> list[str]:
    test_label = "test-acc gap (pp)" if classification else "test-loss gap"
    lines = [f"**{name}** ({len(paired)} pruned-head rows, each against its dense-head twin)", "",
             f"| mask verdict | rows | decided by | train-loss gap, mean [95 % CI] | {test_label}, mean [95 % CI] |",
             "|---|---|---|---|---|"]
    for level in LEVELS:
        chosen = [p for p in paired if p["level"] == level]
        if not chosen:
            continue
        cells = []
        for key in ("train_loss_gap", "test_gap"):
            mean, low, high = mean_ci([p[key] for p in chosen])
            cells.append(f"{mean:+.3f} [{low:+.3f}, {high:+.3f}]" if math.isfinite(low) else f"{mean:+.3f}")
        counts: dict[str, int] = {}
        for p in chosen:
            for rule in p["rules"]:
                counts[rule] = counts.get(rule, 0) + 1
        decided = ", ".join(f"{rule} {count}" for rule, count in sorted(counts.items(), key=lambda kv: -kv[1]))
        lines.append(f"| {level} | {len(chosen)} | {decided} | {cells[0]} | {cells[1]} |")
    twin_levels = {level: sum(1 for r in dense_rows if r["mask_verdict"] == level) for level in LEVELS}
    lines.append(f"| dense-head twins | {len(dense_rows)} | | 0 by definition | 0 by definition |")
    lines.append("")
    lines.append("Dense-head twins by level: " + ", ".join(f"{k} {v}" for k, v in twin_levels.items() if v) + ".")
    priced = [p for p in paired if p["price"] is not None and p["level"] != "BROKEN"]
    if len(priced) >= 3:
        rho_loss = stats.spearmanr([p["price"] for p in priced], [p["train_loss_gap"] for p in priced])
        rho_test = stats.spearmanr([p["price"] for p in priced], [p["test_gap"] for p in priced])
        lines.append(f"Spearman rank correlation of the head price with the train-loss gap: rho = "
                     f"{rho_loss.statistic:+.2f} (p = {rho_loss.pvalue:.2g}); with the {test_label}: rho = "
                     f"{rho_test.statistic:+.2f} (p = {rho_test.pvalue:.2g}); {len(priced)} priced, non-BROKEN rows.")
    lines.append("")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--out", default="outputs/calibration")
    args = parser.parse_args()
    torch.set_num_threads(1)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    document: dict[str, Any] = {"command": " ".join(sys.argv), "settings": {}}
    report = []
    for setting in settings(tuple(range(args.seeds)), args.quick):
        setting.plan.check_model(setting.factory())
        rows = []
        for cell in setting.plan.cells():
            rows.append(audit_cell(cell, setting.plan, setting.factory, setting.train, setting.test))
            print(f"{setting.name} {cell.key}: {rows[-1]['mask_verdict']} price {rows[-1]['head_price']}", file=sys.stderr)
        paired = pairs(rows, setting.classification)
        dense_rows = [r for r in rows if r["final_layer_policy"] == "dense"]
        report += table(setting.name, paired, dense_rows, setting.classification)
        document["settings"][setting.name] = {"pairs": paired, "rows": [{k: r[k] for k in (
            "key", "mask_verdict", "mask_verdict_rules", "head_price", "head_price_relative", "train_loss", "test_loss",
            "test_accuracy", "final_layer_density", "fan_in_min", "dead_units", "last_hidden_width")} for r in rows]}
    elapsed = time.perf_counter() - started
    report.append(f"({elapsed / 60:.1f} min, `{document['command']}`)")
    text = "\n".join(report)
    print(text)
    document["elapsed_s"] = elapsed
    document["markdown"] = text
    (out / "calibration.json").write_text(json.dumps(document, indent=1))


if __name__ == "__main__":
    main()
