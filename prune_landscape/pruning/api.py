"""``prune()`` and ``magnitude_step()``: validate, score on a private copy, allocate, return a MaskSet.

Example:
    >>> from prune_landscape import models
    >>> net = models.mlp([20, 10, 5])
    >>> masks = prune(net, "magnitude", 0.9)
    >>> masks.num_kept, masks.num_total
    (25, 250)
"""

from __future__ import annotations

import inspect
import logging
import math
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from prune_landscape.batching import DataLike, OutputTransform, require_data
from prune_landscape.datacheck import check_data
from prune_landscape.layers import prunable_parameters, prunable_weights
from prune_landscape.masks import MaskSet
from prune_landscape.progress import Progress, ProgressCallback, progress_enabled
from prune_landscape.pruning.allocation import (
    FinalLayerMode,
    FinalLayerPolicy,
    Scope,
    allocate,
    check_final_layer_budget,
    num_to_keep,
)
from prune_landscape.pruning.fit import check_fit, check_loss_fit
from prune_landscape.pruning.magnitude import magnitude_scores
from prune_landscape.pruning.registry import DataUse, PrunerSpec, get_pruner
from prune_landscape.pruning.reinit import resolve_init_fn
from prune_landscape.pruning.schedules import exponential_densities, kept_at
from prune_landscape.pruning.pruneset import (
    NTK_SAP_MAX_DEFAULT_SAMPLES,
    example_of,
    probe_output,
    prune_set,
    sample_shape,
    take_one_flat_tensor,
)
from prune_landscape.pruning.workspace import model_device, working_copy
from prune_landscape.structure import final_layer_name as _find_final_layer

__all__ = ["NTK_SAP_MAX_DEFAULT_SAMPLES", "magnitude_step", "prune"]

logger = logging.getLogger(__name__)

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


def _aliases(model: nn.Module, names: list[str], prunable: str = "layers") -> dict[str, str]:
    """Every name a prunable tensor is reachable under (tied parameters) -> its canonical name in ``names``."""
    aliases = {n: n for n in names}
    for weight in prunable_weights(model, scope=prunable):  # type: ignore[arg-type]
        if weight.name in aliases:
            aliases.update({alias: weight.name for alias in weight.aliases})
    return aliases


def _current_masks(model: nn.Module, names: list[str], prunable: str = "layers") -> dict[str, torch.Tensor]:
    aliases = _aliases(model, names, prunable)
    found = {aliases.get(n, n): m for n, m in MaskSet.from_module(model, source="hooks").items()}
    dense = MaskSet.dense(model, names)
    return {n: (found[n].clone() if n in found else dense[n].clone()) for n in names}


def _validate(
    model: nn.Module, spec: PrunerSpec, data: DataLike | None, options: dict[str, Any], example: Any
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
    elif spec.data is DataUse.SHAPES and data is None and framework.get("input_shape") is None and example is None:
        raise ValueError(
            f"pruning method {spec.name!r} needs the batch shape: pass data=..., example_inputs=... or "
            "input_shape=(C, H, W) (one sample's shape; the prune set is then 10 x #classes samples)"
        )
    if data is not None:
        require_data(data, f"pruning method {spec.name!r}")
    if spec.data is DataUse.SAMPLE_SHAPE:
        framework["input_shape"] = sample_shape(model, example, framework.get("input_shape"), spec.name)
    elif framework.get("input_shape") is not None:
        framework["input_shape"] = sample_shape(model, None, framework["input_shape"], spec.name)
    return framework, scorer_options


def _final_layer(
    work: nn.Module,
    example: Any,
    output_transform: OutputTransform | None,
    chosen: str | None,
    names: list[str],
    prunable: str = "layers",
) -> str:
    """The final layer's name in ``names``: the user's choice (checked), else the structure analysis's."""
    aliases = _aliases(work, names, prunable)
    if chosen is not None:
        if chosen not in aliases:
            raise ValueError(f"final_layer_name {chosen!r} is not a prunable weight; expected one of {names}")
        return aliases[chosen]
    kwargs = {}
    if output_transform is not None and "output_transform" in inspect.signature(_find_final_layer).parameters:
        kwargs["output_transform"] = output_transform
    found = _find_final_layer(work, example, **kwargs)
    name = aliases.get(found, found)
    logger.info("final layer: %s (found automatically; pass final_layer_name=... to choose another)", name)
    return name


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
    example_inputs: Any = None,
    output_transform: OutputTransform | None = None,
    final_layer_name: str | None = None,
    prunable: str = "layers",
    **options: Any,
) -> MaskSet:
    """Compute a pruning mask; the model is left exactly as found (apply it with ``masks.apply_to(model)``).

    Args:
        model: any module. Its prunable weights are :func:`~prune_landscape.masks.prunable_parameters`
            (tied parameters count once). If it already carries masks (torch.nn.utils.prune or a
            parametrization with a ``mask``), pruned entries stay pruned and ``sparsity`` is the total target.
        method: one of :func:`available_methods` (``magnitude``, ``random``, ``snip``, ``grasp``,
            ``synflow``, ``ntk_sap`` or a registered one). A method that cannot score this model is refused
            before any work, saying why and what to use instead (:mod:`.fit`).
        sparsity: fraction of the prunable weights to remove, in [0, 1). Exactly
            ``round((1 - sparsity) * N)`` weights are kept (ties: module :mod:`.topk`).
        data: a DataLoader, Dataset or (inputs, targets) pair; inputs may be tensors, tuples (positional) or
            dicts (keyword), batches may be dicts (``{"input_ids", "attention_mask", "labels"}``; see
            :mod:`prune_landscape.batching`). SNIP and GraSP need it with targets; NTK-SAP needs it, an
            example or ``input_shape=``; SynFlow needs a sample (data, example, ``input_shape=``, or an MLP).
        final_layer: ``"prune"`` (default, as in the papers), ``"dense"``, or a min density (``0.3`` or
            ``"min_density=0.3"``) of the final layer. An impossible policy raises, naming the largest floor
            that fits.
        scope: ``"global"`` (default), ``"layerwise"`` or ``"erk"``.
        seed: seeds the ``torch.Generator`` behind every random draw: same seed, same mask.
        example_inputs: how to feed the model (a tensor, a tuple of positional inputs or a dict of keyword
            inputs, token ids included); default: the first two samples of ``data``.
        output_transform: which output is "the" output: ``output_transform(raw_output) -> tensor``; default:
            the tensor, ``.logits``, a dict's only tensor or a tuple's first element.
        final_layer_name: the final layer's weight name when the automatic choice (logged) is not the head.
        prunable: which weights are pruned: ``"layers"`` (default: every Linear/Conv weight, the fused
            attention projections, HF Conv1D) or ``"all"`` (also embeddings and recurrent weights); see
            :mod:`prune_landscape.layers`. Tied tensors count once, under their canonical name.
        progress: a tqdm bar with an ETA over the schedule's iterations; None (default) = only in an
            interactive terminal, never under pytest/CI (:mod:`prune_landscape.progress`).
        callback: called after every iteration with a dict of scalars (``iteration``, ``density``,
            ``kept``, ``elapsed_s`` and the scorer's own, e.g. ``synflow_flow``); see
            :func:`prune_landscape.progress.logger_callback` for Lightning loggers.
        **options: ``iterations`` (exponential schedule; defaults: synflow 100, ntk_sap 20, else 1),
            ``batch_size`` (256), ``prune_samples`` or ``num_batches`` (default 10 x #classes samples; for
            ntk_sap at most ``NTK_SAP_MAX_DEFAULT_SAMPLES`` = 1024), ``input_shape``, and each method's own:
            ntk_sap ``repeats`` (5), ``eps`` (0.01), ``init_fn`` (default: the model's
            ``init_weights(generator)``, else every module's ``reset_parameters()``), ``channels_last``,
            ``fold_batchnorm``, ``batchnorm`` ("batch"), ``double`` (False); grasp ``temperature`` (200),
            ``loss_fn``; snip ``loss_fn``; synflow ``double`` (None: float32, float64 on overflow),
            ``fold_batchnorm``. Unknown options raise, listing the valid ones.

    Returns:
        A :class:`MaskSet` over every prunable weight.

    Raises:
        ValueError: bad sparsity, method, option, progress flag or callback, missing data, a method that does
            not fit the model, impossible final-layer policy, a model NTK-SAP cannot re-initialise, or a target
            denser than the masks already in force; all before any scoring.

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
    if prunable not in ("layers", "all"):
        raise ValueError(f"prunable must be 'layers' or 'all', got {prunable!r}")
    if output_transform is not None and not callable(output_transform):
        raise ValueError(f"output_transform must be a function raw_output -> tensor, got {type(output_transform).__name__}")
    example, example_targets = example_of(data, example_inputs)
    framework, scorer_options = _validate(model, spec, data, dict(options), example)
    check_fit(model, spec, example_inputs=example, prunable=prunable)
    show_progress = progress_enabled(progress)  # checks the flag before any work
    if callback is not None and not callable(callback):
        raise ValueError(f"callback must be callable with one dict of scalars, got {type(callback).__name__}")
    if "init_fn" in spec.options:
        resolve_init_fn(model, scorer_options.get("init_fn"))
    names = prunable_parameters(model, scope=prunable)  # type: ignore[arg-type]
    current = _current_masks(model, names, prunable)
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

    work = working_copy(model, output_transform)
    device = model_device(work)
    if data is not None and isinstance(example, torch.Tensor):
        check_data(work, data, loss=None, name="prune data")  # a wrong shape is named before any scoring
    needs_output = spec.data in (DataUse.SHAPES, DataUse.VALUES) and not ({"prune_samples", "num_batches"} & set(framework))
    outputs = probe_output(work, example, device) if example is not None and (needs_output or spec.data is DataUse.VALUES) else None
    if outputs is None and needs_output:  # shapes only: the probe input is a placeholder of the sample shape
        outputs = probe_output(work, torch.zeros((1, *framework["input_shape"])), device)
    if spec.data is DataUse.VALUES and "loss_fn" in spec.options:  # the loss compares outputs with the data's targets
        data_inputs, data_targets = example_of(data, None) if example_inputs is not None else (example, example_targets)
        data_outputs = outputs if example_inputs is None else probe_output(work, data_inputs, device)
        check_loss_fit(spec, data_outputs, data_targets, custom_loss=scorer_options.get("loss_fn") is not None)
    final_name = (
        _final_layer(work, example, output_transform, final_layer_name, names, prunable) if policy.mode is not FinalLayerMode.PRUNE else None
    )
    check_final_layer_budget(current, target, final_name, policy)
    if output_transform is not None and "fold_batchnorm" in spec.options:
        scorer_options.setdefault("fold_batchnorm", False)  # the folded twin returns the raw output
    if spec.data is DataUse.SHAPES and example is not None and not isinstance(example, torch.Tensor):
        framework["input_shape"] = take_one_flat_tensor(work, example)
        data = None  # the values are never read: a placeholder of the flat shape stands for the batches
        if "fold_batchnorm" in spec.options:
            scorer_options.setdefault("fold_batchnorm", False)  # torch.fx would trace past the pre-hook
    scoring_data = prune_set(spec, data, framework, device, example, outputs)
    for key in spec.accepts - set(spec.options):
        if key in framework and key != "iterations":
            scorer_options[key] = framework[key]
    snapshot = {k: v.clone() for k, v in work.state_dict().items()}
    generator = torch.Generator().manual_seed(seed)
    cuda = sorted({p.device.index or 0 for p in work.parameters() if p.device.type == "cuda"})
    # A scorer that never writes to the model (synflow_scores.preserves_model) needs no restore per iteration.
    restore = not getattr(spec.scorer, "preserves_model", False)
    with torch.random.fork_rng(devices=cuda):
        # Layers that draw from the global RNG in a scorer's train-mode passes (dropout and stochastic depth
        # while NTK-SAP recomputes BatchNorm statistics) draw from a stream derived from the seed: same seed,
        # same mask, and the caller's global RNG state is left as it was.
        torch.manual_seed((seed * 2654435761 + 97) % 2**63)
        # The nominal density drives the intermediate steps (d ** (t / T)); the last step keeps exactly `target`.
        end_density = min(1.0 - sparsity, kept_now / total)
        densities = exponential_densities(kept_now / total, end_density, framework["iterations"]) if target else [0.0]
        bar = Progress(len(densities), spec.name, enabled=show_progress, callback=callback)
        with bar:
            for step, density in enumerate(densities, start=1):
                keep = target if step == len(densities) else min(kept_now, max(target, kept_at(density, total)))
                if restore:
                    work.load_state_dict(snapshot)
                    work.eval()
                device_masks = {n: m.to(device) for n, m in current.items()}
                scores = spec.scorer(work, device_masks, scoring_data, generator, **scorer_options)
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
    example_input: Any = None,
    output_transform: OutputTransform | None = None,
    final_layer_name: str | None = None,
    prunable: str = "layers",
) -> MaskSet:
    """Prune further by magnitude from ``current`` (gradual pruning and IMP rounds call this).

    Args:
        model: the model whose weights rank the kept entries (plain or carrying pruning hooks).
        target_sparsity: total target in [0, 1), at least the sparsity of ``current``.
        current: the mask in force (default: read from the model's hooks; missing tensors are dense).
        final_layer, scope: as in :func:`prune`.
        example_input: used only to find the final layer when the policy needs it (tensor, tuple or dict).
        output_transform, final_layer_name: as in :func:`prune` (used only to find the final layer).
        prunable: ``"layers"`` or ``"all"``, as in :func:`prune`.

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
    if prunable not in ("layers", "all"):
        raise ValueError(f"prunable must be 'layers' or 'all', got {prunable!r}")
    names = prunable_parameters(model, scope=prunable)  # type: ignore[arg-type]
    if current is None:
        masks = _current_masks(model, names, prunable)
    else:  # a tied tensor's mask may come under any of its names
        aliases = _aliases(model, names, prunable)
        given = {aliases.get(n, n): m for n, m in current.items()}
        masks = {n: (given[n].clone().cpu() if n in given else MaskSet.dense(model, [n])[n]) for n in names}
    total = sum(m.numel() for m in masks.values())
    kept_now = sum(int(m.sum()) for m in masks.values())
    target = num_to_keep(1.0 - target_sparsity, total)
    if target > kept_now:
        raise ValueError(
            f"current mask keeps {kept_now} of {total} weights; masks only shrink, so target_sparsity must be "
            f">= {1 - kept_now / total:.4f}, got {target_sparsity}"
        )
    final_name = (
        _final_layer(model, example_input, output_transform, final_layer_name, names, prunable)
        if policy.mode is not FinalLayerMode.PRUNE
        else None
    )
    scores = {n: s.detach().cpu() for n, s in magnitude_scores(model, masks, None, None).items()}
    return MaskSet(allocate(scores, masks, target, scope=scope, final_layer=final_name, policy=policy))
