"""``prune()`` and ``magnitude_step()``: validate, score on a private copy, allocate, return a MaskSet.

Example:
    >>> from prune_landscape import models
    >>> net = models.mlp([20, 10, 5])
    >>> masks = prune(net, "magnitude", 0.9)
    >>> masks.num_kept, masks.num_total
    (25, 250)
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from prune_landscape.batching import DataLike, first_batch, iter_batches, require_data
from prune_landscape.datacheck import check_data
from prune_landscape.masks import MaskSet, prunable_parameters
from prune_landscape.progress import Progress, ProgressCallback, progress_enabled
from prune_landscape.pruning.allocation import (
    FinalLayerMode,
    FinalLayerPolicy,
    Scope,
    allocate,
    check_final_layer_budget,
    num_to_keep,
)
from prune_landscape.pruning.magnitude import magnitude_scores
from prune_landscape.pruning.registry import DataUse, PrunerSpec, get_pruner
from prune_landscape.pruning.reinit import resolve_init_fn
from prune_landscape.pruning.schedules import exponential_densities, kept_at
from prune_landscape.pruning.workspace import model_device, working_copy
from prune_landscape.structure import final_layer_name

__all__ = ["magnitude_step", "prune"]

_SAMPLES_PER_CLASS = 10  # the papers' prune set: 10 x #classes samples
# NTK-SAP's noise prune set stops growing at 1,024 samples (4 batches of 256): 10 x 1,000 classes would be
# 10,000 noise images per scoring pass for an ImageNet head; README "Pruning methods" measures the effect.
_MAX_NOISE_SAMPLES = 1024


def _check_sparsity(sparsity: Any) -> float:
    if isinstance(sparsity, bool) or not isinstance(sparsity, (int, float)) or math.isnan(sparsity):
        raise ValueError(f"sparsity must be a number in [0, 1), got {sparsity!r}")
    if not 0.0 <= sparsity < 1.0:
        raise ValueError(f"sparsity must be in [0, 1), got {sparsity}")
    return float(sparsity)


def _positive_int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    return value


def _current_masks(model: nn.Module, names: list[str]) -> dict[str, torch.Tensor]:
    found = MaskSet.from_module(model, source="hooks")
    dense = MaskSet.dense(model, names)
    return {n: (found[n].clone() if n in found else dense[n].clone()) for n in names}


def _sample_shape(model: nn.Module, data: DataLike | None, input_shape: Any, method: str) -> tuple[int, ...]:
    if input_shape is not None:
        try:
            shape = tuple(int(s) for s in input_shape)
        except TypeError:
            raise ValueError(f"input_shape must be the shape of one sample, e.g. (3, 32, 32), got {input_shape!r}") from None
        if not shape or any(s < 1 for s in shape):
            raise ValueError(f"input_shape must list positive sizes, e.g. (3, 32, 32), got {input_shape!r}")
        return shape
    if data is not None:
        return tuple(first_batch(data)[0].shape[1:])
    first = next((m for m in model.modules() if isinstance(m, nn.Linear | nn.Conv1d | nn.Conv2d | nn.Conv3d)), None)
    if isinstance(first, nn.Linear):
        return (first.in_features,)  # an MLP's input shape is readable from its first layer
    raise ValueError(
        f"method {method!r} needs the input shape: pass data=... or input_shape=(C, H, W) (one sample's shape)"
    )


def _validate(
    model: nn.Module, spec: PrunerSpec, data: DataLike | None, options: dict[str, Any]
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Split and check options before any work; returns (framework options, scorer options)."""
    unknown = sorted(set(options) - set(spec.valid_options()))
    if unknown:
        raise ValueError(f"unknown option(s) {unknown} for method {spec.name!r}; valid options: {spec.valid_options()}")
    framework = {k: v for k, v in options.items() if k not in spec.options}
    scorer_options = {k: v for k, v in options.items() if k in spec.options}
    framework["iterations"] = _positive_int("iterations", framework.get("iterations", spec.iterations))
    for key in ("batch_size", "prune_samples", "num_batches"):
        if key in framework:
            _positive_int(key, framework[key])
    if "prune_samples" in framework and "num_batches" in framework:
        raise ValueError("give prune_samples or num_batches, not both")
    if spec.data is DataUse.VALUES:
        require_data(data, f"pruning method {spec.name!r}")
    elif spec.data is DataUse.SHAPES and data is None and framework.get("input_shape") is None:
        raise ValueError(
            f"pruning method {spec.name!r} needs the batch shape: pass data=... or input_shape=(C, H, W) "
            "(one sample's shape; the prune set is then 10 x #classes samples)"
        )
    if data is not None:
        require_data(data, f"pruning method {spec.name!r}")
    if spec.data is DataUse.SAMPLE_SHAPE:
        framework["input_shape"] = _sample_shape(model, data, framework.get("input_shape"), spec.name)
    elif framework.get("input_shape") is not None:
        framework["input_shape"] = _sample_shape(model, None, framework["input_shape"], spec.name)
    if spec.name == "ntk_sap" or "init_fn" in spec.options:
        resolve_init_fn(model, scorer_options.get("init_fn"))
    return framework, scorer_options


def _prune_set(
    work: nn.Module, spec: PrunerSpec, data: DataLike | None, framework: dict[str, Any], device: torch.device
) -> tuple[torch.Tensor, torch.Tensor] | None:
    if spec.data is DataUse.NONE:
        return None
    if spec.data is DataUse.SAMPLE_SHAPE:
        return torch.zeros((1, *framework["input_shape"]), device=device), torch.zeros(1, dtype=torch.long, device=device)
    batch_size = framework.get("batch_size", 256)
    if "prune_samples" in framework:
        samples = framework["prune_samples"]
    elif "num_batches" in framework:
        samples = framework["num_batches"] * batch_size
    else:
        if data is not None:
            probe = first_batch(data)[0][:1].to(device)
        else:
            probe = torch.zeros((1, *framework["input_shape"]), device=device)
        with torch.no_grad():
            samples = _SAMPLES_PER_CLASS * int(work(probe).shape[-1])
        if spec.data is DataUse.SHAPES:
            samples = min(samples, _MAX_NOISE_SAMPLES)
    if data is None:  # shapes only: a placeholder whose values are never read
        return torch.zeros((samples, *framework["input_shape"]), device=device), torch.zeros(samples, dtype=torch.long, device=device)
    parts = list(iter_batches(data, batch_size, max_samples=samples))
    inputs = torch.cat([x for x, _ in parts]).to(device)
    targets = torch.cat([y for _, y in parts]).to(device)
    return inputs, targets


def prune(
    model: nn.Module,
    method: str,
    sparsity: float,
    data: DataLike | None = None,
    *,
    final_layer: str | float | FinalLayerPolicy = "prune",
    scope: str | Scope = "global",
    seed: int = 0,
    progress: bool | None = None,
    callback: ProgressCallback | None = None,
    **options: Any,
) -> MaskSet:
    """Compute a pruning mask; the model is left exactly as found (apply it with ``masks.apply_to(model)``).

    Args:
        model: any module with conv/linear layers. If it already carries masks (torch.nn.utils.prune or a
            parametrization with a ``mask``), pruned entries stay pruned and ``sparsity`` is the total target.
        method: one of :func:`available_methods` (``magnitude``, ``random``, ``snip``, ``grasp``,
            ``synflow``, ``ntk_sap`` or a registered one).
        sparsity: fraction of the prunable weights to remove, in [0, 1). Exactly
            ``round((1 - sparsity) * N)`` weights are kept (ties: module :mod:`.topk`).
        data: a DataLoader, Dataset or (inputs, targets) pair. SNIP and GraSP need it; NTK-SAP needs it
            or ``input_shape=``; SynFlow needs a sample shape (data, ``input_shape=``, or an MLP).
        final_layer: ``"prune"`` (default, as in the papers), ``"dense"``, or a min density (``0.3`` or
            ``"min_density=0.3"``) of the final layer (found by ``structure.final_layer_name``).
        scope: ``"global"`` (default), ``"layerwise"`` or ``"erk"``.
        seed: seeds the ``torch.Generator`` behind every random draw: same seed, same mask.
        progress: a tqdm bar with an ETA over the schedule's iterations; None (default) = only in an
            interactive terminal, never under pytest/CI (:mod:`prune_landscape.progress`).
        callback: called after every iteration with a dict of scalars (``iteration``, ``density``,
            ``kept``, ``elapsed_s`` and the scorer's own, e.g. ``synflow_flow``); see
            :func:`prune_landscape.progress.logger_callback` for Lightning loggers.
        **options: ``iterations`` (exponential schedule; defaults: synflow 100, ntk_sap 20, else 1),
            ``batch_size`` (256), ``prune_samples`` or ``num_batches`` (default 10 x #classes samples; for
            NTK-SAP's noise at most 1,024),
            ``input_shape``, and each method's own: ntk_sap ``repeats`` (5), ``eps`` (0.01), ``init_fn``,
            ``channels_last``, ``fold_batchnorm``, ``batchnorm`` ("batch"), ``double`` (False); grasp
            ``temperature`` (200), ``loss_fn``; snip ``loss_fn``; synflow ``double`` (None: float32, float64
            on overflow), ``fold_batchnorm``. Unknown options raise, listing the valid ones.

    Returns:
        A :class:`MaskSet` over every prunable weight.

    Raises:
        ValueError: bad sparsity, method, option, progress flag or callback, missing data, impossible
            final-layer policy, a model NTK-SAP cannot re-initialise, or a target denser than the masks
            already in force; all before any scoring.

    Example:
        >>> from prune_landscape import models
        >>> masks = prune(models.mlp([8, 4, 2]), "random", 0.5, final_layer="dense", seed=1)
        >>> masks.num_kept, bool(masks["fc2.weight"].all())
        (20, True)
    """
    sparsity = _check_sparsity(sparsity)
    if not isinstance(method, str):
        raise ValueError(f"method must be a method name string, got {type(method).__name__}")
    spec = get_pruner(method)
    policy = FinalLayerPolicy.parse(final_layer)
    scope = Scope.parse(scope)
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ValueError(f"seed must be an integer, got {seed!r}")
    framework, scorer_options = _validate(model, spec, data, dict(options))
    show_progress = progress_enabled(progress)  # checks the flag before any work
    if callback is not None and not callable(callback):
        raise ValueError(f"callback must be callable with one dict of scalars, got {type(callback).__name__}")
    names = prunable_parameters(model)
    current = _current_masks(model, names)
    total = sum(m.numel() for m in current.values())
    target = num_to_keep(1.0 - sparsity, total)
    kept_now = sum(int(m.sum()) for m in current.values())
    if target > kept_now:
        raise ValueError(
            f"the model already keeps {kept_now} of {total} weights (sparsity {1 - kept_now / total:.4f}); "
            f"masks only shrink, so the target sparsity must be >= that, got {sparsity}"
        )

    if target == kept_now:
        return MaskSet(current)

    work = working_copy(model)
    device = model_device(work)
    example = None
    if data is not None:
        check_data(work, data, loss=None, name="prune data")  # a wrong shape is named before any scoring
        example = first_batch(data)[0][:2].to(device)
    final_name = final_layer_name(work, example) if policy.mode is not FinalLayerMode.PRUNE else None
    check_final_layer_budget(current, target, final_name, policy)
    prune_set = _prune_set(work, spec, data, framework, device)
    for key in spec.accepts - set(spec.options):
        if key in framework and key != "iterations":
            scorer_options[key] = framework[key]
    snapshot = {k: v.clone() for k, v in work.state_dict().items()}
    generator = torch.Generator().manual_seed(seed)

    # The nominal density drives the intermediate steps (d ** (t / T)); the last step keeps exactly `target`.
    end_density = min(1.0 - sparsity, kept_now / total)
    densities = exponential_densities(kept_now / total, end_density, framework["iterations"]) if target else [0.0]
    # A scorer that never writes to the model (synflow_scores.preserves_model) needs no restore per iteration.
    restore = not getattr(spec.scorer, "preserves_model", False)
    bar = Progress(len(densities), spec.name, enabled=show_progress, callback=callback)
    with bar:
        for step, density in enumerate(densities, start=1):
            keep = target if step == len(densities) else min(kept_now, max(target, kept_at(density, total)))
            if restore:
                work.load_state_dict(snapshot)
                work.eval()
            device_masks = {n: m.to(device) for n, m in current.items()}
            scores = spec.scorer(work, device_masks, prune_set, generator, **scorer_options)
            if set(scores) != set(names):
                raise ValueError(f"scorer {spec.name!r} must return a score for each of {names}, got {sorted(scores)}")
            current = allocate(
                {n: s.detach().cpu() for n, s in scores.items()}, current, keep, scope=scope, final_layer=final_name, policy=policy
            )
            bar.step(density=keep / total, kept=keep)
    return MaskSet(current)


def magnitude_step(
    model: nn.Module,
    target_sparsity: float,
    current: MaskSet | Mapping[str, torch.Tensor] | None = None,
    *,
    final_layer: str | float | FinalLayerPolicy = "prune",
    scope: str | Scope = "global",
    example_input: torch.Tensor | None = None,
) -> MaskSet:
    """Prune further by magnitude from ``current`` (gradual pruning and IMP rounds call this).

    Args:
        model: the model whose weights rank the kept entries (plain or carrying pruning hooks).
        target_sparsity: total target in [0, 1), at least the sparsity of ``current``.
        current: the mask in force (default: read from the model's hooks; missing tensors are dense).
        final_layer, scope: as in :func:`prune`.
        example_input: used only to find the final layer when the policy needs it.

    Example:
        >>> from prune_landscape import models
        >>> net = models.mlp([10, 10, 2])
        >>> first = magnitude_step(net, 0.2)
        >>> second = magnitude_step(net, 0.36, first)
        >>> first.num_kept, second.num_kept, bool((second["fc1.weight"] <= first["fc1.weight"]).all())
        (96, 77, True)
    """
    target_sparsity = _check_sparsity(target_sparsity)
    policy = FinalLayerPolicy.parse(final_layer)
    scope = Scope.parse(scope)
    names = prunable_parameters(model)
    masks = _current_masks(model, names) if current is None else {
        n: (current[n].clone().cpu() if n in current else MaskSet.dense(model, [n])[n]) for n in names
    }
    total = sum(m.numel() for m in masks.values())
    kept_now = sum(int(m.sum()) for m in masks.values())
    target = num_to_keep(1.0 - target_sparsity, total)
    if target > kept_now:
        raise ValueError(
            f"current mask keeps {kept_now} of {total} weights; masks only shrink, so target_sparsity must be "
            f">= {1 - kept_now / total:.4f}, got {target_sparsity}"
        )
    final_name = final_layer_name(model, example_input) if policy.mode is not FinalLayerMode.PRUNE else None
    scores = {n: s.detach().cpu() for n, s in magnitude_scores(model, masks, None, None).items()}
    return MaskSet(allocate(scores, masks, target, scope=scope, final_layer=final_name, policy=policy))
