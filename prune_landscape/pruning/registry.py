"""The registry of pruning methods: name -> scorer plus what the scorer needs.

A *scorer* is a pure function that only computes scores (allocation and schedules are shared)::

    scorer(model, masks, data, generator, **options) -> dict[str, torch.Tensor]

- ``model``: a private working copy of the user's model (plain parameters, pruning hooks folded in,
  ``requires_grad`` off, eval mode). The scorer may change it freely; :func:`prune` restores its state
  before every call and never hands it back to the user.
- ``masks``: parameter name -> bool tensor (on the model's device), the mask in force; the scorer must
  return a score for each of these names.
- ``data``: ``None`` for ``data="none"`` methods, else an ``(inputs, targets)`` pair on the model's
  device: the prune set for ``"values"``, a placeholder of the right shapes (zeros) for ``"shapes"``.
  Inputs may be a tensor, a tuple of positional inputs or a dict of keyword inputs (token ids included),
  and the prune set may be prepared :class:`~prune_landscape.batching.Batches`: read it with
  ``iter_batches(data, batch_size)`` and run the model with
  :func:`~prune_landscape.pruning.workspace.masked_call`, which feeds any input structure and returns
  "the" output tensor (the user's ``output_transform``), so a scorer never sees a model's conventions.
- ``generator``: a seeded CPU ``torch.Generator``; draw every random number from it.
- ``options``: the scorer's own keyword options (keyword parameters with defaults); anything else given to
  :func:`prune` raises. A scorer that declares one of prune()'s own options (``batch_size``,
  ``input_shape``, ...) receives the user's value when one is given. A scorer with many options may group
  them in a frozen dataclass instead: register it with ``options_type=ThatClass``; its fields are then the
  options, :func:`prune` builds one instance (the class's ``__post_init__`` checks the values) before any
  work and calls ``scorer(model, masks, data, generator, options)`` (as NTK-SAP does).

Before any scorer runs, :func:`prune` refuses methods that do not fit the model
(:mod:`prune_landscape.pruning.fit`): a new method that synthesises inputs (``"sample_shape"``,
``"shapes"``) is refused on token-id inputs; one with a ``loss_fn`` option has its default loss checked
against the data's targets.

Scores: higher = more important; a tensor per name with that weight's shape. Entries already pruned are
never revived whatever their score.

Example:
    >>> import torch
    >>> def absolute_gradient_free(model, masks, data, generator, *, power=1.0):
    ...     return {n: dict(model.named_parameters())[n].detach().abs() ** power for n in masks}
    >>> spec = register_pruner("magnitude_power", absolute_gradient_free, overwrite=True)
    >>> "magnitude_power" in available_methods()
    True
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import Enum
from types import MappingProxyType
from typing import Any

import torch

from prune_landscape.checks import check_one_of, check_positive_int

__all__ = ["DataUse", "PrunerSpec", "Scorer", "available_methods", "get_pruner", "register_pruner"]

Scorer = Callable[..., Mapping[str, torch.Tensor]]


class DataUse(str, Enum):
    """What a method needs from the data."""

    NONE = "none"  #: nothing (magnitude, random)
    SAMPLE_SHAPE = "sample_shape"  #: the shape of one input sample (SynFlow's all-ones input)
    SHAPES = "shapes"  #: the batch shapes of the prune set, never the values (NTK-SAP)
    VALUES = "values"  #: real inputs and targets (SNIP, GraSP)


#: Options handled by :func:`prune` itself (the schedule and the prune set), by data use.
FRAMEWORK_OPTIONS: dict[DataUse, tuple[str, ...]] = {
    DataUse.NONE: ("iterations",),
    DataUse.SAMPLE_SHAPE: ("iterations", "input_shape"),
    DataUse.SHAPES: ("iterations", "input_shape", "batch_size", "prune_samples", "num_batches"),
    DataUse.VALUES: ("iterations", "batch_size", "prune_samples", "num_batches"),
}


@dataclass(frozen=True)
class PrunerSpec:
    """A registered method: its scorer, data use, default iterations and the scorer's own options.

    Attributes:
        options: the scorer's own option names -> defaults.
        accepts: every keyword the scorer takes, including prune()'s own options it reads (``batch_size``).
        options_type: the frozen dataclass grouping the scorer's options, or None for keyword options.
    """

    name: str
    scorer: Scorer
    data: DataUse = DataUse.NONE
    iterations: int = 1
    options: Mapping[str, Any] = field(default_factory=dict)
    accepts: frozenset[str] = frozenset()
    options_type: type | None = None

    def valid_options(self) -> list[str]:
        """Every option name :func:`prune` accepts for this method."""
        return sorted(set(FRAMEWORK_OPTIONS[self.data]) | set(self.options))

    def scorer_options(self, given: Mapping[str, Any]) -> Any:
        """The scorer's options parsed once: an ``options_type`` instance, or a read-only keyword mapping.

        ``given`` holds only names from :attr:`accepts`; the dataclass checks its values.
        """
        if self.options_type is not None:
            return self.options_type(**given)
        return MappingProxyType(dict(given))

    def score(
        self, model: Any, masks: Mapping[str, torch.Tensor], data: Any, generator: torch.Generator, options: Any
    ) -> Mapping[str, torch.Tensor]:
        """Call the scorer with options from :meth:`scorer_options`."""
        if self.options_type is not None:
            return self.scorer(model, masks, data, generator, options)
        return self.scorer(model, masks, data, generator, **options)


_REGISTRY: dict[str, PrunerSpec] = {}


def _dataclass_options(name: str, options_type: type) -> dict[str, Any]:
    if not (isinstance(options_type, type) and dataclasses.is_dataclass(options_type)):
        raise ValueError(f"options_type for {name!r} must be a dataclass type, got {options_type!r}")
    fields = dataclasses.fields(options_type)
    missing = [f.name for f in fields if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
    if missing:
        raise ValueError(f"options_type for {name!r} must give every field a default, got none for {missing}")
    return {f.name: (f.default if f.default is not dataclasses.MISSING else f.default_factory()) for f in fields}  # type: ignore[misc]


def _scorer_options(name: str, scorer: Scorer) -> dict[str, Any]:
    try:
        signature = inspect.signature(scorer)
    except (TypeError, ValueError):
        raise ValueError(f"scorer for {name!r} must be a Python function with an inspectable signature") from None
    params = list(signature.parameters.values())
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) and p.default is p.empty]
    if len(positional) != 4:
        raise ValueError(
            f"scorer for {name!r} must take (model, masks, data, generator, **options), "
            f"got {len(positional)} required positional parameters in {signature}"
        )
    return {p.name: p.default for p in params if p.default is not p.empty and p.kind is not p.VAR_KEYWORD}


def register_pruner(
    name: str,
    scorer: Scorer,
    *,
    data: DataUse | str = DataUse.NONE,
    iterations: int = 1,
    overwrite: bool = False,
    options_type: type | None = None,
) -> PrunerSpec:
    """Register a scoring method under ``name`` so that :func:`prune` can use it.

    Args:
        name: the method name.
        scorer: ``scorer(model, masks, data, generator, **options) -> dict[str, Tensor]`` (module docstring).
            Its keyword parameters with defaults are the method's options.
        data: ``"none"``, ``"sample_shape"``, ``"shapes"`` or ``"values"`` (:class:`DataUse`).
        iterations: default number of exponential-schedule iterations (1 = one shot).
        overwrite: allow replacing an existing method.
        options_type: a frozen dataclass whose fields (each with a default) are the method's options; the
            scorer then takes one instance as its fifth argument (module docstring).

    Raises:
        ValueError: on a taken name (without ``overwrite``) or a scorer with the wrong signature.
    """
    if not isinstance(name, str) or not name:
        raise ValueError(f"name must be a non-empty string, got {name!r}")
    if name in _REGISTRY and not overwrite:
        raise ValueError(f"a pruning method named {name!r} is already registered; pass overwrite=True to replace it")
    if not callable(scorer):
        raise ValueError(f"scorer must be callable, got {type(scorer).__name__}")
    check_positive_int("iterations", iterations)
    data_use = DataUse(check_one_of("data", data, [d.value for d in DataUse]))  # a DataUse equals its value
    keywords = _scorer_options(name, scorer) if options_type is None else _dataclass_options(name, options_type)
    # Options prune() handles itself (e.g. batch_size) are passed on to scorers that accept them.
    own = {k: v for k, v in keywords.items() if k not in FRAMEWORK_OPTIONS[data_use]}
    spec = PrunerSpec(name, scorer, data_use, iterations, own, frozenset(keywords), options_type)
    _REGISTRY[name] = spec
    return spec


def available_methods() -> list[str]:
    """Names of every registered pruning method, sorted."""
    return sorted(_REGISTRY)


def get_pruner(name: str) -> PrunerSpec:
    """The :class:`PrunerSpec` of ``name``.

    Raises:
        ValueError: listing the known methods.
    """
    if name not in _REGISTRY:
        raise ValueError(f"unknown pruning method {name!r}; expected one of {available_methods()}")
    return _REGISTRY[name]
