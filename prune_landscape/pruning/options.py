"""``prune()``'s options as one frozen, typed value, parsed once at the entry point.

:func:`parse_options` checks every argument before any work and returns a :class:`PruneOptions`; nothing
inside the pruning package parses or checks an option again. Unknown options raise, naming the method and
the valid ones. The options group by what they control:

- :class:`ModelFeed`: how the model is fed and read (example inputs, output transform, final-layer name,
  which weights are prunable);
- :class:`PruneSetOptions`: the prune set (batch size, its size, the sample shape);
- :class:`ScheduleOptions`: the rounds (iterations, seed, progress bar, per-round callback);
- the method's own options, parsed by its :class:`~prune_landscape.pruning.registry.PrunerSpec`.

The options, by keyword:

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
    Method options: ``iterations`` (exponential schedule; defaults: synflow 100, ntk_sap 20, else 1),
        ``batch_size`` (256), ``prune_samples`` or ``num_batches`` (default 10 x #classes samples; for
        ntk_sap at most ``NTK_SAP_MAX_DEFAULT_SAMPLES`` = 1024), ``input_shape``, and each method's own:
        ntk_sap (:class:`~prune_landscape.pruning.ntk_sap.NtkSapOptions`) ``repeats`` (5), ``eps`` (0.01),
        ``init_fn`` (default: the model's ``init_weights(generator)``, else every module's
        ``reset_parameters()``), ``channels_last``, ``fold_batchnorm``, ``batchnorm`` ("batch"), ``double``
        (False); grasp ``temperature`` (200), ``loss_fn``; snip ``loss_fn``; synflow ``double`` (None:
        float32, float64 on overflow), ``fold_batchnorm``. Unknown options raise, listing the valid ones.

Example:
    >>> from prune_landscape import models
    >>> options = parse_options(models.mlp([4, 3, 2]), "synflow", 0.5, None, {"iterations": 3})
    >>> options.schedule.iterations, options.prune_set.input_shape, options.policy.mode.value
    (3, (4,), 'prune')
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from prune_landscape.batching import DataLike, OutputTransform, require_data
from prune_landscape.checks import check_callable, check_int, check_one_of, check_positive_int, check_sparsity, renamed_keyword
from prune_landscape.progress import ProgressCallback, progress_enabled
from prune_landscape.pruning.allocation import FinalLayerPolicy, Scope
from prune_landscape.pruning.fit import check_fit
from prune_landscape.pruning.pruneset import PruneSetOptions, example_of, sample_shape
from prune_landscape.pruning.registry import DataUse, PrunerSpec, get_pruner
from prune_landscape.pruning.reinit import resolve_init_fn

__all__ = [
    "COMMON_OPTIONS",
    "ModelFeed",
    "PruneOptions",
    "PruneSetOptions",
    "ScheduleOptions",
    "parse_model_feed",
    "parse_options",
    "parse_policy",
]

#: Options every method takes (beyond its own and the prune-set / schedule ones of its data use).
COMMON_OPTIONS = ("callback", "example_inputs", "final_layer_name", "output_transform", "progress", "prunable")
_FEED_OPTIONS = ("example_inputs", "output_transform", "final_layer_name", "prunable")


@dataclass(frozen=True)
class ModelFeed:
    """How the model is fed and read.

    Attributes:
        example_inputs: the user's example (tensor, tuple of positional or dict of keyword inputs) or None.
        output_transform: ``output_transform(raw_output) -> tensor``, or None for the default reading.
        final_layer_name: the final layer's weight name when the automatic choice is not the head.
        prunable: ``"layers"`` or ``"all"`` (:mod:`prune_landscape.layers`).
    """

    example_inputs: Any = None
    output_transform: OutputTransform | None = None
    final_layer_name: str | None = None
    prunable: str = "layers"


@dataclass(frozen=True)
class ScheduleOptions:
    """The rounds: ``iterations`` of the exponential schedule (1 = one shot), the ``seed`` of every random
    draw, whether a progress bar shows, and the per-round ``callback``."""

    iterations: int = 1
    seed: int = 0
    progress: bool = False
    callback: ProgressCallback | None = None


@dataclass(frozen=True)
class PruneOptions:
    """Everything :func:`~prune_landscape.pruning.prune` was asked, checked.

    Attributes:
        spec: the method.
        sparsity: the total target sparsity in [0, 1).
        policy, scope: the final-layer policy and the budget's spread over layers.
        feed, prune_set, schedule: see their classes.
        scorer_options: the method's own options (:meth:`PrunerSpec.scorer_options`).
        example, example_targets: the example inputs the checks ran on (``feed.example_inputs`` or the
            first samples of the data) and their targets (None when not from the data).
    """

    spec: PrunerSpec
    sparsity: float
    policy: FinalLayerPolicy
    scope: Scope
    feed: ModelFeed
    prune_set: PruneSetOptions
    schedule: ScheduleOptions
    scorer_options: Any
    example: Any = None
    example_targets: Any = None


def parse_model_feed(given: dict[str, Any], example_key: str = "example_inputs") -> ModelFeed:
    """Pop the :class:`ModelFeed` options out of ``given`` and check them."""
    transform = check_callable(
        "output_transform", given.pop("output_transform", None), "a function raw_output -> tensor", optional=True
    )
    name = given.pop("final_layer_name", None)
    if name is not None and not isinstance(name, str):
        raise ValueError(f"final_layer_name must be a parameter name string or None, got {name!r}")
    prunable = check_one_of("prunable", given.pop("prunable", "layers"), ("layers", "all"))
    return ModelFeed(given.pop(example_key, None), transform, name, prunable)


def parse_policy(given: dict[str, Any], final_layer_policy: Any, *, stacklevel: int = 3) -> FinalLayerPolicy:
    """The final-layer policy from ``final_layer_policy`` or, deprecated, ``given["final_layer"]`` (popped).

    ``None`` means ``"prune"``. Errors name the keyword the caller wrote; ``stacklevel`` points the
    deprecation warning at the user's line (3: the caller of the public function calling this one).
    """
    value, name = renamed_keyword(given, "final_layer", "final_layer_policy", final_layer_policy, stacklevel=stacklevel + 1)
    return FinalLayerPolicy.parse("prune" if value is None else value, name=name)


def _unknown(spec: PrunerSpec, given: Mapping[str, Any]) -> None:
    unknown = sorted(set(given) - set(spec.valid_options()))
    if unknown:
        raise ValueError(
            f"unknown option(s) {unknown} for method {spec.name!r}; valid options: {spec.valid_options()} "
            f"(and for every method: {list(COMMON_OPTIONS)})"
        )


def _prune_set(model: nn.Module, spec: PrunerSpec, data: DataLike | None, given: dict[str, Any], example: Any) -> PruneSetOptions:
    batch_size, samples, batches = (
        check_positive_int(k, given.pop(k, None), optional=True) for k in ("batch_size", "prune_samples", "num_batches")
    )
    if samples is not None and batches is not None:
        raise ValueError(f"give prune_samples or num_batches, not both; got prune_samples={samples}, num_batches={batches}")
    shape = given.pop("input_shape", None)
    if spec.data is DataUse.VALUES:
        require_data(data, f"pruning method {spec.name!r}")
    elif spec.data is DataUse.SHAPES and data is None and shape is None and example is None:
        raise ValueError(
            f"pruning method {spec.name!r} needs the batch shape: pass data=..., example_inputs=... or "
            "input_shape=(C, H, W) (one sample's shape; the prune set is then 10 x #classes samples)"
        )
    if data is not None:
        require_data(data, f"pruning method {spec.name!r}")
    if spec.data is DataUse.SAMPLE_SHAPE:
        shape = sample_shape(model, example, shape, spec.name)
    elif shape is not None:
        shape = sample_shape(model, None, shape, spec.name)
    return PruneSetOptions(batch_size, samples, batches, shape)


def _scorer_options(
    model: nn.Module, spec: PrunerSpec, given: dict[str, Any], feed: ModelFeed, prune_set: PruneSetOptions, example: Any
) -> Any:
    """The method's own options plus prune()'s own that the scorer reads, with defaults this call implies."""
    own = {k: given.pop(k) for k in list(given) if k in spec.options}
    for key in ("batch_size", "prune_samples", "num_batches", "input_shape"):
        if getattr(prune_set, key) is not None and key in spec.accepts:
            own[key] = getattr(prune_set, key)
    structured = spec.data is DataUse.SHAPES and example is not None and not isinstance(example, torch.Tensor)
    if "fold_batchnorm" in spec.options and (feed.output_transform is not None or structured):
        # The folded twin returns the raw output, and torch.fx would trace past the flat-input pre-hook.
        own.setdefault("fold_batchnorm", False)
    if "init_fn" in spec.options:
        resolve_init_fn(model, own.get("init_fn"))  # a model NTK-SAP cannot re-draw is named before any work
    return spec.scorer_options(own)


def parse_options(
    model: nn.Module,
    method: str,
    sparsity: float,
    data: DataLike | None,
    options: Mapping[str, Any],
    *,
    final_layer_policy: Any = None,
    scope: str | Scope = "global",
    seed: int = 0,
) -> PruneOptions:
    """Check every argument of :func:`~prune_landscape.pruning.prune` once, before any work.

    Raises:
        ValueError: naming the argument, what it must be and the value given.
    """
    sparsity = check_sparsity(sparsity)
    if not isinstance(method, str):
        raise ValueError(f"method must be a method name string, got {type(method).__name__}")
    spec = get_pruner(method)
    given = dict(options)
    policy = parse_policy(given, final_layer_policy, stacklevel=4)
    scope = Scope.parse(scope)
    check_int("seed", seed)
    feed = parse_model_feed(given)
    example, example_targets = example_of(data, feed.example_inputs)
    schedule = ScheduleOptions(
        check_positive_int("iterations", given.pop("iterations", spec.iterations)),  # type: ignore[arg-type]
        seed,
        progress_enabled(given.pop("progress", None)),
        check_callable("callback", given.pop("callback", None), "callable with one dict of scalars", optional=True),
    )
    _unknown(spec, given)
    prune_set = _prune_set(model, spec, data, given, example)
    check_fit(model, spec, example_inputs=example, prunable=feed.prunable)
    scorer_options = _scorer_options(model, spec, given, feed, prune_set, example)
    return PruneOptions(spec, sparsity, policy, scope, feed, prune_set, schedule, scorer_options, example, example_targets)
