"""audit(): read where the zeros landed and what the theorems say about it.

One call: structure (final layer, fan-ins, dead units) -> facts -> the rules of THEORY.md -> two verdicts
-> the same for the architecture with an all-ones mask (the baseline) -> the head's price on the data ->
the mask verdict (BROKEN / RISKY / CAUTION / SAFE) -> the remedy for every pipeline with its exact cost ->
optional empirical probes -> a frozen :class:`AuditReport`.

Example:
    >>> import torch
    >>> from prune_landscape import MaskSet, models
    >>> net = models.mlp([4, 6, 3])
    >>> masks = MaskSet({"fc1.weight": torch.ones(6, 4, dtype=torch.bool),
    ...                  "fc2.weight": torch.eye(3, 6, dtype=torch.bool)})
    >>> report = audit(net, n_samples=5, masks=masks)
    >>> report.landscape.verdict.name, report.landscape.rules, report.remedy.extra_weights
    ('RISKY', ('NL-4',), 15)
    >>> # Kept whole, the 6 hidden units are as many as n = 5 samples: NL-1, no spurious valley. The mask
    >>> # leaves 3 effective units, below n: NL-4 fires for the mask, not for the architecture.
    >>> report.baseline.landscape.rules, report.mask_verdict.level.name, report.mask_verdict.rules
    (('NL-1',), 'RISKY', ('NL-4',))
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import torch
from torch import nn

from prune_landscape.batching import DataLike, first_batch, require_data
from prune_landscape.datacheck import check_data
from prune_landscape.layers import Scope, prunable_parameters
from prune_landscape.masks import MaskSet
from prune_landscape.options import with_keywords
from prune_landscape.remedy import PIPELINES, Remedy, plan_remedy
from prune_landscape.report import AuditReport
from prune_landscape.structure import Structure, analyze_structure
from prune_landscape.theory.classify import classify, evaluate
from prune_landscape.theory.facts import collect_facts
from prune_landscape.verdict import Baseline, judge_mask

__all__ = ["StructureOptions", "audit"]


@dataclass(frozen=True)
class StructureOptions:
    """How the audit reads the model's structure: what to feed it, which output and head, which weights.

    Attributes:
        example_input: how to feed the model (a tensor, a tuple of positional arguments or a dict of keyword
            arguments; token ids as integer tensors); needed when the first prunable layer is not a Linear
            and no data is given (default: the first two samples of the data).
        output_transform: the model's raw output -> "the" output tensor (tuple, dict and HF ModelOutput
            outputs); see :func:`~prune_landscape.structure.analyze_structure`.
        final_layer_name: the head's weight or module name when the automatic choice (logged) is not the head.
        prunable: the prunable set, ``"layers"`` or ``"all"`` (with embeddings and recurrent weights).
    """

    example_input: Any = field(default=None, compare=False)  # tensors do not compare to one bool
    output_transform: Callable[[Any], torch.Tensor] | None = None
    final_layer_name: str | None = None
    prunable: Scope = "layers"

    def analyze(self, model: nn.Module, masks: MaskSet | None) -> Structure:
        """:func:`~prune_landscape.structure.analyze_structure` under these options."""
        return analyze_structure(model, self.example_input, masks, output_transform=self.output_transform,
                                 final_layer=self.final_layer_name, prunable=self.prunable)


def audit(
    model: nn.Module,
    data: DataLike | None = None,
    *,
    n_samples: int | None = None,
    weight_decay: float = 0.0,
    probes: Iterable[str | Callable] = (),
    masks: MaskSet | Mapping[str, torch.Tensor] | None = None,
    structure_options: StructureOptions | None = None,
    pipeline: str = "prune_landscape",
    **structure_keywords: Any,
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
        structure_options: how to read the model (:class:`StructureOptions`).
        pipeline: whose setting the remedy shows first: ``"prune_landscape"``, ``"lightning"``
            (``ModelPruning``) or ``"torch"`` (``torch.nn.utils.prune``); all three are in the report.
        **structure_keywords: the fields of :class:`StructureOptions` one by one (``example_input=...``);
            they override ``structure_options``. ``final_layer`` is the deprecated name of ``final_layer_name``.

    Returns:
        A frozen :class:`~prune_landscape.report.AuditReport`.

    Raises:
        ValueError: for a non-positive ``n_samples``, a negative ``weight_decay``, an unknown probe, probes
            without data, or an unknown ``pipeline``; all before any work. TypeError: an unknown keyword.
    """
    options = with_keywords(StructureOptions, structure_options, structure_keywords, where="audit",
                            renamed={"final_layer": "final_layer_name"})
    _check_numbers(n_samples, weight_decay, pipeline)
    resolved = _resolve_probes((probes,) if isinstance(probes, str) else tuple(probes))  # "hessian" is one probe
    _check_audit_data(model, data, resolved)
    mask_set = None if masks is None else (masks if isinstance(masks, MaskSet) else MaskSet(masks))
    options = _with_example_from(options, data)
    structure = options.analyze(model, mask_set)
    facts = collect_facts(model, data, structure=structure, masks=mask_set, n_samples=n_samples,
                          weight_decay=float(weight_decay), example_input=options.example_input)
    landscape, existence, info = classify(evaluate(facts), facts)
    # The same head, feed and prunable set as the mask's analysis: a multi-output model must not be judged
    # against another head's baseline.
    baseline = _baseline(model, data, replace(options, final_layer_name=structure.final_layer), n_samples,
                         float(weight_decay))
    price, price_note = _head_price(model, data, mask_set, structure, n_samples)
    mask_verdict = judge_mask(structure, landscape, existence, baseline, price=price, price_note=price_note,
                              weight_decay=float(weight_decay), data_given=data is not None)
    return AuditReport(structure=structure, facts=facts, landscape=landscape, existence=existence, info=info,
                       remedy=_remedy(model, structure, pipeline), probes=_run_probes(resolved, model, data, price),
                       baseline=baseline, mask_verdict=mask_verdict)


def _check_numbers(n_samples: int | None, weight_decay: float, pipeline: str) -> None:
    if n_samples is not None and (isinstance(n_samples, bool) or not isinstance(n_samples, int) or n_samples < 1):
        raise ValueError(f"n_samples must be a positive int or None, got {n_samples!r}")
    if (isinstance(weight_decay, bool) or not isinstance(weight_decay, (int, float)) or not math.isfinite(weight_decay)
            or weight_decay < 0):
        raise ValueError(f"weight_decay must be a number >= 0 and finite, got {weight_decay!r}")
    if pipeline not in PIPELINES:
        raise ValueError(f"pipeline must be one of {PIPELINES}, got {pipeline!r}")


def _check_audit_data(model: nn.Module, data: DataLike | None, probes: Mapping[str, Callable]) -> None:
    if probes:
        require_data(data, f"the probes {sorted(probes)}")
    if data is not None:
        require_data(data, "audit")
        check_data(model, data, loss=None, name="audit data")  # names the expected input shape, not `mat1 and mat2`


def _with_example_from(options: StructureOptions, data: DataLike | None) -> StructureOptions:
    """``options`` fed with the data's first two samples when no example input was given."""
    if options.example_input is not None or data is None:
        return options
    inputs = first_batch(data, batch_size=2)[0]
    return replace(options, example_input=inputs[:2] if isinstance(inputs, torch.Tensor) else inputs)


def _probe_registry() -> Mapping[str, Callable]:
    # Imported on use: the probes package loads scipy (about 1.3 s), and an audit without probes or data
    # never needs it.
    from prune_landscape.probes import PROBES

    return PROBES


def _resolve_probes(probes: Iterable[str | Callable]) -> dict[str, Callable]:
    resolved: dict[str, Callable] = {}
    registry = _probe_registry() if any(isinstance(p, str) for p in probes) else {}
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


def _run_probes(probes: Mapping[str, Callable], model: nn.Module, data: DataLike | None, price: Any) -> dict[str, Any]:
    results: dict[str, Any] = {}
    for name, probe in probes.items():
        # The price already is the final-layer-gap probe on these masks: never solve it twice.
        reuse = name == "final_layer_gap" and price is not None and probe is _probe_registry().get("final_layer_gap")
        results[name] = price if reuse else probe(model, data)
    return results


def _baseline(model: nn.Module, data: DataLike | None, options: StructureOptions, n_samples: int | None,
              weight_decay: float) -> Baseline:
    """The two theorem axes for the same architecture with every prunable weight kept (same data, same n)."""
    dense = MaskSet.dense(model, prunable_parameters(model, prunable=options.prunable))
    structure = options.analyze(model, dense)
    facts = collect_facts(model, data, structure=structure, masks=dense, n_samples=n_samples,
                          weight_decay=weight_decay, example_input=options.example_input)
    landscape, existence, _ = classify(evaluate(facts), facts)
    return Baseline(landscape=landscape, existence=existence, last_hidden_width=structure.last_hidden_width, n=facts.n)


def _head_price(model: nn.Module, data: DataLike | None, masks: MaskSet | None, structure: Structure,
                n_samples: int | None) -> tuple[Any, str]:
    """The final-layer gap (ridge objective) on the data, or None and why not."""
    if data is None:
        return None, "no data"
    if structure.final.kept == structure.final.total:
        return None, "dense head: the price is 0 by definition"
    if not structure.connected:
        return None, "no input-output path: the features carry nothing to price"
    from prune_landscape.probes.final_layer_gap import final_layer_gap  # on use: see _probe_registry

    try:
        return final_layer_gap(model, data, masks=masks, final_layer=structure.final_layer,
                               max_samples=n_samples or 20_000), ""
    except (ValueError, RuntimeError) as error:  # e.g. a conv classifier, targets that do not fit the outputs
        return None, f"{type(error).__name__}: {error}"  # the price never stops the audit; the note says why


def _remedy(model: nn.Module, structure: Structure, pipeline: str) -> Remedy | None:
    """The dense-head remedy for every pipeline, with its exact cost and within the budget; None for a head that
    is dense already, by structure or by weight (e.g. dense but on no path)."""
    final = structure.final
    if structure.final_layer_dense or final.kept == final.total:
        return None
    body = tuple((layer.module, type(model.get_submodule(layer.module)).__name__, layer.units)
                 for layer in structure.layers[:-1])
    return plan_remedy(final_module=final.module, final_total=final.total, final_kept=final.kept,
                       kept=structure.num_kept, total=structure.num_total, body=body, pipeline=pipeline)
