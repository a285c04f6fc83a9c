"""What a sweep runs: a :class:`SweepPlan` (methods x sparsities x final-layer policies x seeds), validated
before any work, and its :class:`Cell` s, one audit each.

Experiment module: plain arguments in; no Hydra, Lightning or W&B.

Example:
    >>> plan = SweepPlan(methods=("magnitude",), sparsities=(0.9,), epochs=1)
    >>> [cell.key for cell in plan.cells()]
    ['dense|0|dense|0', 'magnitude|0.9|prune|0']
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from torch import nn

from prune_landscape.checks import deprecation_message, renamed_keyword
from prune_landscape.layers import final_layer_name, prunable_parameters
from prune_landscape.probes import PROBES
from prune_landscape.pruning import available_methods, get_pruner
from prune_landscape.training import LOSSES, TrainConfig

__all__ = ["DENSE", "Cell", "SweepPlan"]

_SCOPES = ("global", "layerwise", "erk")
#: The name of the unpruned reference row.
DENSE = "dense"


def _policy_text(policy: Any) -> str:
    """Normalise a final-layer policy: "prune", "dense" or "min_density=<float in (0, 1]>"."""
    if isinstance(policy, (int, float)) and not isinstance(policy, bool):
        value = float(policy)
    elif isinstance(policy, str) and policy in ("prune", "dense"):
        return policy
    elif isinstance(policy, str) and policy.startswith("min_density="):
        try:
            value = float(policy.split("=", 1)[1])
        except ValueError:
            raise ValueError(f"final-layer policy {policy!r}: expected min_density=<number in (0, 1]>") from None
    else:
        raise ValueError(f"final-layer policy must be 'prune', 'dense' or a min density in (0, 1] (e.g. 0.3 or "
                         f"'min_density=0.3'), got {policy!r}")
    if not 0.0 < value <= 1.0:
        raise ValueError(f"final-layer min density must be in (0, 1], got {value}")
    return f"min_density={value:g}"


#: train() keywords a plan fixes itself (per cell or from its own fields).
_PLAN_TRAIN_KEYS = ("model", "data", "epochs", "lr", "seed", "masks")


def _check_train_options(options: Mapping[str, Any]) -> None:
    """Every ``train_options`` name and value, checked before any work (``fit.*`` in the CLI)."""
    accepted = sorted({f.name for f in dataclasses.fields(TrainConfig)} - set(_PLAN_TRAIN_KEYS))
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise ValueError(f"fit.{unknown[0]}: unknown training option; expected some of {accepted}")
    optimizer = options.get("optimizer", "sgd")
    if optimizer not in ("sgd", "adam"):
        raise ValueError(f"fit.optimizer: expected one of ['sgd', 'adam'], got {optimizer!r}")
    loss = options.get("loss", "cross_entropy")
    if loss not in LOSSES:
        raise ValueError(f"fit.loss: expected one of {list(LOSSES)}, got {loss!r}")
    batch_size = options.get("batch_size", 128)
    if batch_size is not None and (isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1):
        raise ValueError(f"fit.batch_size: expected a positive int or null, got {batch_size!r}")
    for key in ("momentum", "weight_decay"):
        value = options.get(key, 0.0)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
            raise ValueError(f"fit.{key}: expected a finite number >= 0, got {value!r}")
    if not isinstance(options.get("shuffle", True), bool):
        raise ValueError(f"fit.shuffle: expected true or false, got {options['shuffle']!r}")


@dataclass(frozen=True)
class Cell:
    """One audit: a method at a sparsity with a final-layer policy, from the init drawn by ``seed``.

    ``final_layer_policy`` is the policy ("prune", "dense", "min_density=<x>"); the row's ``final_layer`` is the
    head's weight name the audit found.
    """

    method: str
    sparsity: float
    final_layer_policy: str
    seed: int

    @property
    def key(self) -> str:
        """A stable identifier, e.g. ``"snip|0.98|dense|0"``."""
        return f"{self.method}|{self.sparsity:g}|{self.final_layer_policy}|{self.seed}"

    @property
    def final_layer(self) -> str:
        """Deprecated name of :attr:`final_layer_policy` (``final_layer`` names the head's weight elsewhere)."""
        warnings.warn(deprecation_message("Cell.final_layer", "Cell.final_layer_policy"), DeprecationWarning, stacklevel=2)
        return self.final_layer_policy


@dataclass(frozen=True)
class SweepPlan:
    """What to audit; validated on construction, before any work.

    Attributes:
        methods: pruning methods (names from ``prune_landscape.pruning.available_methods()``).
        sparsities: target sparsities in [0, 1).
        final_layer_policies: final-layer policies: "prune", "dense" or a min density ("min_density=0.3" or
            0.3). ``final_layers=`` is the deprecated name (a DeprecationWarning).
        seeds: one cell per seed (the seed draws the init, the pruning randomness and the batch order).
        scope: "global", "layerwise" or "erk" allocation.
        method_options: per-method keyword options for ``prune`` (e.g. ``{"ntk_sap": {"iterations": 20}}``).
        epochs: training epochs after pruning (0 = audit at initialisation).
        lr: learning rate of that training.
        train_options: further keywords for ``prune_landscape.training.train`` (batch_size, momentum, ...).
        probes: probe names for ``audit`` (keys of ``prune_landscape.probes.PROBES``).
        n_samples: samples the audit and probes read (None = all training samples).
        dense_baseline: add one unpruned reference row per seed.
    """

    methods: tuple[str, ...]
    sparsities: tuple[float, ...]
    final_layer_policies: tuple[str, ...] = ("prune",)
    seeds: tuple[int, ...] = (0,)
    scope: str = "global"
    method_options: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    epochs: int = 0
    lr: float = 0.1
    train_options: Mapping[str, Any] = field(default_factory=dict)
    probes: tuple[str, ...] = ()
    n_samples: int | None = None
    dense_baseline: bool = True

    def __post_init__(self) -> None:
        set_ = object.__setattr__  # frozen: normalise once, here
        set_(self, "methods", tuple(str(m) for m in self.methods))
        set_(self, "sparsities", tuple(float(s) for s in self.sparsities))
        set_(self, "final_layer_policies", tuple(_policy_text(p) for p in self.final_layer_policies))
        set_(self, "seeds", tuple(self.seeds))
        # one name given as a string is one probe, not one probe per character
        set_(self, "probes", (self.probes,) if isinstance(self.probes, str) else tuple(str(p) for p in self.probes))
        valid = available_methods()
        if not self.methods:
            raise ValueError(f"methods must name at least one pruning method; expected some of {valid}")
        unknown = [m for m in self.methods if m not in valid]
        if unknown:
            raise ValueError(f"unknown pruning method {unknown[0]!r}; expected one of {valid}")
        if not self.sparsities or any(not 0.0 <= s < 1.0 for s in self.sparsities):
            raise ValueError(f"sparsities must be a non-empty list of numbers in [0, 1), got {list(self.sparsities)}")
        if not self.final_layer_policies:
            raise ValueError("final_layer_policies must list at least one policy: 'prune', 'dense' or 'min_density=<x>'")
        if not self.seeds or any(isinstance(s, bool) or not isinstance(s, int) or s < 0 for s in self.seeds):
            raise ValueError(f"seeds must be a non-empty list of non-negative ints, got {list(self.seeds)}")
        if self.scope not in _SCOPES:
            raise ValueError(f"scope must be one of {_SCOPES}, got {self.scope!r}")
        # Options for a valid method that is not selected are kept for when it is (recipes list several);
        # a name that is no method at all is a typo.
        extra = sorted(set(self.method_options) - set(valid))
        if extra:
            raise ValueError(f"method_options for unknown method {extra[0]!r}; expected names from {valid}")
        for method, options in self.method_options.items():
            if not isinstance(options, Mapping):
                raise ValueError(f"method_options.{method}: expected a mapping of option names to values, got "
                                 f"{options!r}")
            accepted = get_pruner(method).valid_options()
            unknown_options = sorted(set(options) - set(accepted))
            if unknown_options:
                raise ValueError(f"method_options.{method}: unknown option {unknown_options[0]!r}; expected some of "
                                 f"{accepted}")
        _check_train_options(self.train_options)
        if isinstance(self.epochs, bool) or not isinstance(self.epochs, int) or self.epochs < 0:
            raise ValueError(f"epochs must be an int >= 0, got {self.epochs!r}")
        if isinstance(self.lr, bool) or not isinstance(self.lr, (int, float)) or not math.isfinite(self.lr) or not self.lr > 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")
        bad_probes = [p for p in self.probes if p not in PROBES]
        if bad_probes:
            raise ValueError(f"unknown probe {bad_probes[0]!r}; expected some of {sorted(PROBES)}")
        if self.n_samples is not None and (isinstance(self.n_samples, bool) or self.n_samples < 1):
            raise ValueError(f"n_samples must be a positive int or None, got {self.n_samples!r}")

    def check_model(self, model: nn.Module) -> None:
        """Raise before any work when a final-layer policy cannot fit a sparsity's weight budget."""
        sizes = {name: int(dict(model.named_parameters())[name].numel()) for name in prunable_parameters(model)}
        final = final_layer_name(model)
        total = sum(sizes.values())
        for policy in self.final_layer_policies:
            floor = 1.0 if policy == "dense" else float(policy.split("=")[1]) if policy != "prune" else 0.0
            for sparsity in self.sparsities:
                budget = round((1 - sparsity) * total)
                needed = math.ceil(floor * sizes[final])
                if needed > budget:
                    raise ValueError(f"final-layer policy {policy!r} at sparsity {sparsity:g} needs {needed} weights in "
                                     f"{final} but the whole budget is {budget} of {total}; lower the sparsity or the "
                                     f"final layer's share")

    @property
    def loss(self) -> str:
        """The training loss (``train_options["loss"]``, default cross-entropy): training and evaluation use it."""
        return str(self.train_options.get("loss", "cross_entropy"))

    @property
    def weight_decay(self) -> float:
        """The training's weight decay (``train_options["weight_decay"]``, default 0): the audit's rule WD reads it."""
        return float(self.train_options.get("weight_decay", 0.0))

    def cells(self) -> list[Cell]:
        """Every cell, in run order: the dense references first, then methods x sparsities x policies x seeds."""
        cells = [Cell(DENSE, 0.0, "dense", seed) for seed in self.seeds] if self.dense_baseline else []
        cells += [Cell(m, s, p, seed) for m in self.methods for s in self.sparsities for p in self.final_layer_policies
                  for seed in self.seeds]
        return cells


def _sweep_plan_init(generated: Callable[..., None]) -> Callable[..., None]:
    """SweepPlan's constructor also takes the deprecated ``final_layers=`` (as ``final_layer_policies=``)."""

    def __init__(self: SweepPlan, *args: Any, **kwargs: Any) -> None:
        if "final_layers" in kwargs:
            kwargs["final_layer_policies"], _ = renamed_keyword(
                kwargs, "final_layers", "final_layer_policies", kwargs.get("final_layer_policies"), where="SweepPlan")
        generated(self, *args, **kwargs)

    __init__.__doc__ = generated.__doc__
    return __init__


def _deprecated_final_layers(self: SweepPlan) -> tuple[str, ...]:
    """Deprecated name of :attr:`SweepPlan.final_layer_policies`."""
    warnings.warn(deprecation_message("SweepPlan.final_layers", "SweepPlan.final_layer_policies"), DeprecationWarning,
                  stacklevel=2)
    return self.final_layer_policies


SweepPlan.__init__ = _sweep_plan_init(SweepPlan.__init__)  # type: ignore[method-assign]
SweepPlan.final_layers = property(_deprecated_final_layers)  # type: ignore[attr-defined]
