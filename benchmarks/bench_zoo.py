"""The whole model zoo x every step: structure (dense and random-90 % masks), each pruning method, the audit.

Each cell is ``ok``, ``refused`` (a pruning method's ValueError raised before any work, saying why; the
reasons are listed under the table) or ``FAIL`` (any other exception, any error from the structure
analysis or the audit, or a structure result that is wrong on a dense mask),
with the step's time relative to one plain no-grad forward pass of the model on the same example.

A structure cell under the dense mask is ``ok`` only if it reports: connected, no dead unit, no collapsed
layer, the zoo's expected final layer, final layer dense (the acceptance of issue #11); under the random
90 % mask ``ok`` means it ran (the oracle comparison is the structure tests' job) and ``(u U)`` counts the
units it reported UNKNOWN.

Method settings (the table measures coverage and cost, not the papers' schedules): sparsity 0.9, synflow 10
iterations, ntk_sap 2 iterations x 1 repeat on the example batch, snip/grasp on the example batch with
random class targets; everything else at its default.

Usage::

    python benchmarks/bench_zoo.py                # every zoo model (fast and slow)
    python benchmarks/bench_zoo.py --fast-only    # the models make test covers
    python benchmarks/bench_zoo.py --models tv_resnet18,hf_gpt2_lm
    BENCH_THREADS=2 python benchmarks/bench_zoo.py  # intra-op threads (default 1)
"""

from __future__ import annotations

import argparse
import inspect
import os
import re
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

import zoo  # noqa: E402

from prune_landscape.audit import audit  # noqa: E402
from prune_landscape.batching import call_model, select_output  # noqa: E402
from prune_landscape.layers import prunable_weights  # noqa: E402
from prune_landscape.masks import MaskSet  # noqa: E402
from prune_landscape.pruning import prune  # noqa: E402
from prune_landscape.structure import analyze_structure  # noqa: E402

SPARSITY = 0.9
METHODS = ("magnitude", "random", "snip", "grasp", "synflow", "ntk_sap")
SETTINGS: dict[str, dict[str, Any]] = {
    "synflow": {"iterations": 10},
    "ntk_sap": {"iterations": 2, "repeats": 1, "prune_samples": 2, "batch_size": 2},
}
STEPS = ("structure dense", "structure random 90 %", *METHODS, "audit")


def _accepts(function: Callable, name: str) -> bool:
    return name in inspect.signature(function).parameters


def _forward_seconds(model: torch.nn.Module, inputs: Any) -> float:
    with torch.no_grad():
        call_model(model, inputs)  # warm-up
        times = []
        for _ in range(3):
            start = time.perf_counter()
            call_model(model, inputs)
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def _canonical(model: torch.nn.Module, name: str) -> str:
    for weight in prunable_weights(model):
        if name == weight.name or name in weight.aliases:
            return weight.name
    return name


def _structure(entry: zoo.ZooEntry, model: torch.nn.Module, inputs: Any, masks: MaskSet) -> Any:
    kwargs: dict[str, Any] = {}
    if entry.output_transform is not None and _accepts(analyze_structure, "output_transform"):
        kwargs["output_transform"] = entry.output_transform
    return analyze_structure(model, inputs, masks, **kwargs)


def _dense_verdict(entry: zoo.ZooEntry, model: torch.nn.Module, structure: Any) -> str | None:
    """None when the dense-mask structure is right, else what is wrong."""
    wrong = []
    if not structure.connected:
        wrong.append("not connected")
    dead = sum(structure.dead_units.values())
    if dead:
        wrong.append(f"{dead} dead")
    if structure.collapsed_layers:
        wrong.append(f"{len(structure.collapsed_layers)} collapsed")
    if _canonical(model, structure.final_layer) != _canonical(model, entry.final_layer):
        wrong.append(f"final layer {structure.final_layer}")
    if not structure.final_layer_dense:
        wrong.append("final layer not dense")
    return ", ".join(wrong) or None


def _run_step(step: str, entry: zoo.ZooEntry, model: torch.nn.Module, inputs: Any, targets: torch.Tensor) -> tuple[str, str | None]:
    """(status, detail): status is "ok", "refused" or "FAIL"; detail a reason or a note."""
    transform = entry.output_transform
    try:
        if step == "structure dense":
            verdict = _dense_verdict(entry, model, _structure(entry, model, inputs, MaskSet.dense(model)))
            return ("ok", None) if verdict is None else ("FAIL", verdict)
        if step == "structure random 90 %":
            masks = prune(model, "random", SPARSITY, seed=0)
            structure = _structure(entry, model, inputs, masks)
            unknown = getattr(structure, "total_unknown_units", 0)
            return "ok", (f"{unknown} U" if unknown else None)
        if step == "audit":
            masks = prune(model, "random", SPARSITY, seed=0)
            kwargs: dict[str, Any] = {"masks": masks, "example_input": inputs}
            if transform is not None and _accepts(audit, "output_transform"):
                kwargs["output_transform"] = transform
            audit(model, **kwargs)
            return "ok", None
        data = (inputs, targets) if step in ("snip", "grasp") else None
        masks = prune(model, step, SPARSITY, data, example_inputs=inputs, output_transform=transform, **SETTINGS.get(step, {}))
        expected = round((1 - SPARSITY) * masks.num_total)
        if masks.num_kept != expected:
            return "FAIL", f"kept {masks.num_kept}, expected {expected}"
        return "ok", None
    except ValueError as error:
        if step not in METHODS:  # structure and audit must work on every model: no refusal is expected
            return "FAIL", f"ValueError: {str(error)[:120]}"
        return "refused", re.sub(r"\d+", "N", re.split(r" \(|\[|;|\. ", str(error))[0])[:160]
    except Exception as error:  # noqa: BLE001 - a benchmark reports every failure and goes on
        return "FAIL", f"{type(error).__name__}: {str(error)[:120]}"


def _unchanged(before: dict[str, torch.Tensor], model: torch.nn.Module) -> bool:
    after = model.state_dict()
    return before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fast-only", action="store_true", help="only the models make test covers")
    parser.add_argument("--models", default="", help="comma-separated zoo names (default: all)")
    args = parser.parse_args()
    torch.set_num_threads(int(os.environ.get("BENCH_THREADS", "1")))
    entries = zoo.zoo(fast_only=args.fast_only)
    if args.models:
        entries = [zoo.entry(n) for n in args.models.split(",")]

    rows, reasons, counts = [], {}, {"ok": 0, "refused": 0, "FAIL": 0}
    warm = zoo.entry("mlp")  # first calls pay lazy imports and tracing set-up: run each step once, untimed
    for step in STEPS:
        _run_step(step, warm, warm.build(), warm.example_input(), torch.zeros(2, dtype=torch.long))
    for entry in entries:
        model = entry.build()
        inputs = entry.example_input()
        with torch.no_grad():
            output = select_output(call_model(model, inputs), entry.output_transform)
        targets = torch.randint(0, output.shape[-1], output.shape[:-1], generator=torch.Generator().manual_seed(0))
        forward = _forward_seconds(model, inputs)
        before = {k: v.clone() for k, v in model.state_dict().items()}
        weights = MaskSet.dense(model).num_total
        cells = []
        for step in STEPS:
            start = time.perf_counter()
            status, detail = _run_step(step, entry, model, inputs, targets)
            ratio = (time.perf_counter() - start) / forward
            counts[status] += 1
            if status == "refused":
                reasons.setdefault(detail, []).append(f"{entry.name}/{step}")
                cells.append(f"refused ({ratio:,.0f}x)")
            elif status == "FAIL":
                cells.append(f"**FAIL** {detail}")
            else:
                cells.append(f"ok ({ratio:,.0f}x{', ' + detail if detail else ''})")
        if not _unchanged(before, model):
            cells.append("**MODEL CHANGED**")
        rows.append(f"| {entry.name} | {weights:,} | {forward * 1e3:.2f} | " + " | ".join(cells) + " |")
        print(f"{entry.name}: done", file=sys.stderr, flush=True)

    print(f"| model | prunable | forward (ms) | {' | '.join(STEPS)} |")
    print("|" + "---|" * (3 + len(STEPS)))
    print("\n".join(rows))
    print(f"\n{counts['ok']} ok, {counts['refused']} refused, {counts['FAIL']} FAIL "
          f"({len(entries)} models x {len(STEPS)} steps; {torch.get_num_threads()} thread(s), torch {torch.__version__})\n")
    print("Refusal reasons (first sentence):\n")
    for reason, where in reasons.items():
        print(f"- {reason} ({len(where)}: {', '.join(where[:4])}{' ...' if len(where) > 4 else ''})")


if __name__ == "__main__":
    main()
