"""audit(): read where the zeros landed and what the theorems say about it.

One call: structure (final layer, fan-ins, dead units) -> facts -> the rules of THEORY.md -> two verdicts
-> the remedy and its exact cost -> optional empirical probes -> a frozen :class:`AuditReport`.

Example:
    >>> import torch
    >>> from prune_landscape import MaskSet, models
    >>> net = models.mlp([4, 6, 3])
    >>> masks = MaskSet({"fc1.weight": torch.ones(6, 4, dtype=torch.bool),
    ...                  "fc2.weight": torch.eye(3, 6, dtype=torch.bool)})
    >>> report = audit(net, n_samples=5, masks=masks)
    >>> report.landscape.verdict.name, report.landscape.rules, report.remedy.extra_weights
    ('RISKY', ('NL-4',), 15)
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

import torch
from torch import nn

from prune_landscape.batching import DataLike, first_batch, require_data
from prune_landscape.masks import MaskSet
from prune_landscape.report import AuditReport, Remedy
from prune_landscape.structure import analyze_structure
from prune_landscape.theory.classify import classify, evaluate
from prune_landscape.theory.facts import collect_facts

__all__ = ["audit"]


def _resolve_probes(probes: Iterable[str | Callable]) -> dict[str, Callable]:
    resolved: dict[str, Callable] = {}
    names = [p for p in probes if isinstance(p, str)]
    registry: Mapping[str, Callable] = {}
    if names:
        from prune_landscape.probes import PROBES  # lazy: the probes package is optional for the rules

        registry = PROBES
    for probe in probes:
        if isinstance(probe, str):
            if probe not in registry:
                raise ValueError(f"unknown probe {probe!r}; expected one of {sorted(registry)} or a callable")
            resolved[probe] = registry[probe]
        elif callable(probe):
            resolved[getattr(probe, "__name__", type(probe).__name__)] = probe
        else:
            raise ValueError(f"probes must be names or callables (model, data) -> result, got {type(probe).__name__}")
    return resolved


def audit(
    model: nn.Module,
    data: DataLike | None = None,
    *,
    n_samples: int | None = None,
    weight_decay: float = 0.0,
    probes: Iterable[str | Callable] = (),
    masks: MaskSet | Mapping[str, torch.Tensor] | None = None,
    example_input: Any = None,
    output_transform: Callable[[Any], torch.Tensor] | None = None,
    final_layer: str | None = None,
    prunable: str = "layers",
) -> AuditReport:
    """Audit a pruned network: final layer, dead units, landscape and existence verdicts, remedy, probes.

    Args:
        model: the network (left unchanged); masks are read from it unless ``masks`` is given.
        data: the training data (DataLoader, Dataset or ``(inputs, targets)``); gives n and lets the
            data-dependent rules check whitening, distinct restricted inputs and the rank condition.
        n_samples: the number of training samples n. With ``data`` holding more, the first
            ``n_samples`` samples are used; holding fewer, ``data`` is taken as a subset of a training set of
            size ``n_samples`` and data-dependent facts are unknown.
        weight_decay: the training's weight decay (rule WD).
        probes: names in ``prune_landscape.probes.PROBES`` or callables ``(model, data) -> result``; they
            see the model as it is (apply the masks first) and need ``data``.
        masks: the masks to audit; default ``MaskSet.from_module(model)``.
        example_input: how to feed the model (a tensor, a tuple of positional arguments or a dict of keyword
            arguments; token ids as integer tensors); needed when the first prunable layer is not a Linear
            and no data is given.
        output_transform: the model's raw output -> "the" output tensor (tuple, dict and HF ModelOutput
            outputs); see :func:`~prune_landscape.structure.analyze_structure`.
        final_layer: the head's weight or module name when the automatic choice (logged) is not the head.
        prunable: the prunable set, ``"layers"`` or ``"all"`` (with embeddings and recurrent weights).

    Returns:
        A frozen :class:`~prune_landscape.report.AuditReport`.

    Raises:
        ValueError: for a non-positive ``n_samples``, a negative ``weight_decay``, an unknown probe, or probes
            without data; all before any work.
    """
    if n_samples is not None and (isinstance(n_samples, bool) or not isinstance(n_samples, int) or n_samples < 1):
        raise ValueError(f"n_samples must be a positive int or None, got {n_samples!r}")
    if not isinstance(weight_decay, (int, float)) or weight_decay < 0:
        raise ValueError(f"weight_decay must be a number >= 0, got {weight_decay!r}")
    resolved = _resolve_probes(tuple(probes))
    if resolved:
        require_data(data, f"the probes {sorted(resolved)}")
    if data is not None:
        require_data(data, "audit")
    mask_set = None if masks is None else (masks if isinstance(masks, MaskSet) else MaskSet(masks))
    if example_input is None and data is not None:
        inputs = first_batch(data, batch_size=2)[0]
        example_input = inputs[:2] if isinstance(inputs, torch.Tensor) else inputs

    structure = analyze_structure(model, example_input, mask_set, output_transform=output_transform,
                                  final_layer=final_layer, prunable=prunable)  # type: ignore[arg-type]
    facts = collect_facts(model, data, structure=structure, masks=mask_set, n_samples=n_samples,
                          weight_decay=float(weight_decay), example_input=example_input)
    findings = evaluate(facts)
    landscape, existence, info = classify(findings, facts)
    final = structure.final
    remedy = None
    if not structure.final_layer_dense:
        extra = final.total - final.kept
        remedy = Remedy(layer=final.module, extra_weights=extra, fraction_of_budget=extra / max(1, structure.num_kept))
    results: dict[str, Any] = {name: probe(model, data) for name, probe in resolved.items()}
    return AuditReport(structure=structure, facts=facts, landscape=landscape, existence=existence, info=info,
                       remedy=remedy, probes=results)
