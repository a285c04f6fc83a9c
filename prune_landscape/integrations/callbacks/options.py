"""The callbacks' grouped settings: when LandscapeAudit audits, how it feeds the network, where it reports.

Lightning adapter (no torch work here: a wrong setting fails at construction, before any training). Each
group is a frozen dataclass that checks its fields when built; a Mapping of the same fields is accepted
wherever a group is (what Hydra passes for a nested config section). The keywords these groups replaced
(``LandscapeAudit(probe_every_n_epochs=...)``, ``PruneAtInit(final_layer=...)``) still work and warn
once per call with the new spelling (:func:`apply_legacy_keywords`, :func:`parse_final_layer_policy`).

Example:
    >>> AuditSchedule(probe_every_n_epochs=5).probes_due(epochs_done=10, has_probes=True)
    True
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import torch

from prune_landscape.checks import check_bool, check_callable, check_path, check_positive_int, check_str, renamed_keyword
from prune_landscape.integrations.callbacks._batches import (
    BatchToInputs,
    BatchToTargets,
    default_batch_to_inputs,
    default_batch_to_targets,
)
from prune_landscape.integrations.callbacks._network import NetworkSpec, check_network_spec
from prune_landscape.pruning.allocation import FinalLayerPolicy, Scope

__all__ = ["AuditReporting", "AuditSchedule", "ModelIO", "apply_legacy_keywords", "as_group", "parse_final_layer_policy",
           "pruning_target"]

Group = TypeVar("Group")


@dataclass(frozen=True)
class AuditSchedule:
    """When LandscapeAudit audits (every structural audit also runs when the masks change).

    Attributes:
        probe_every_n_epochs: run the probes every N epochs (None: only at the end).
        probe_at_end: run the probes once at the end of fit.
        structure_every_n_epochs: re-run the structural audit every N epochs even without a mask change.
        check_every_n_steps: how often to look for new masks between epochs (a cheap buffer-version check).
        final_with_data: at the end of fit, audit once more with the data so the data-dependent rules
            (n, whitening, rank condition) decide the final report.

    Raises:
        ValueError: naming the field, the expected and the given value.
    """

    probe_every_n_epochs: int | None = None
    probe_at_end: bool = True
    structure_every_n_epochs: int | None = None
    check_every_n_steps: int = 1
    final_with_data: bool = True

    def __post_init__(self) -> None:
        check_positive_int("probe_every_n_epochs", self.probe_every_n_epochs, optional=True)
        check_bool("probe_at_end", self.probe_at_end)
        check_positive_int("structure_every_n_epochs", self.structure_every_n_epochs, optional=True)
        check_positive_int("check_every_n_steps", self.check_every_n_steps)
        check_bool("final_with_data", self.final_with_data)

    def probes_due(self, epochs_done: int, has_probes: bool) -> bool:
        """Whether the probes run at the end of epoch number ``epochs_done`` (counted from 1)."""
        return has_probes and self.probe_every_n_epochs is not None and epochs_done % self.probe_every_n_epochs == 0

    def structure_due(self, epochs_done: int) -> bool:
        """Whether a structural audit is forced at the end of epoch ``epochs_done`` (counted from 1)."""
        return self.structure_every_n_epochs is not None and epochs_done % self.structure_every_n_epochs == 0

    def check_due(self, global_step: int) -> bool:
        """Whether to look for new masks before optimizer step ``global_step``."""
        return global_step % self.check_every_n_steps == 0


@dataclass(frozen=True)
class ModelIO:
    """How the audit feeds the network and which of its outputs is "the" output.

    Attributes:
        batch_to_inputs: ``batch -> inputs`` of the network (default
            :func:`~prune_landscape.integrations.callbacks.default_batch_to_inputs`: a tensor, a tuple's
            first item, a dict's inputs; a tuple of inputs is passed as positional, a dict as keyword
            arguments).
        batch_to_targets: ``batch -> targets`` (default ``default_batch_to_targets``); without targets the
            data-dependent rules and the probes are skipped (recorded).
        example_input: the network's inputs for the structural pass (a tensor, a tuple of positional or a
            dict of keyword inputs); default: from the first training batch.
        output_transform: the network's raw output -> the output tensor whose final layer is audited
            (default: the tensor, ``.logits``, a dict's only tensor or a tuple's first element).
    """

    batch_to_inputs: BatchToInputs | None = None
    batch_to_targets: BatchToTargets | None = None
    example_input: Any = None
    output_transform: Callable[[Any], torch.Tensor] | None = None

    def __post_init__(self) -> None:
        check_callable("batch_to_inputs", self.batch_to_inputs, optional=True)
        check_callable("batch_to_targets", self.batch_to_targets, optional=True)
        check_callable("output_transform", self.output_transform, optional=True)
        if self.example_input is not None and not isinstance(self.example_input, (torch.Tensor, tuple, list, Mapping)):
            raise ValueError(
                f"example_input must be a tensor, a tuple or a dict of inputs, got {type(self.example_input).__name__}"
            )

    @property
    def to_inputs(self) -> BatchToInputs:
        return self.batch_to_inputs or default_batch_to_inputs

    @property
    def to_targets(self) -> BatchToTargets:
        return self.batch_to_targets or default_batch_to_targets


@dataclass(frozen=True)
class AuditReporting:
    """Where the audit's results go.

    Attributes:
        report_dir: where report.json/report.md/mask.safetensors go. Default: the run's own directory (a
            WandbLogger listed first: its run's ``files/`` folder; otherwise ``trainer.log_dir``).
        prefix: prefix of every logged key.
        log_mask_artifact: with a WandbLogger, log the final mask as an artifact of type ``"mask"``.
        guard_loggers: make every attached logger fault tolerant (a failing call is recorded and warned;
            the logger stays on and later calls go through).
    """

    report_dir: str | Path | None = None
    prefix: str = "audit/"
    log_mask_artifact: bool = True
    guard_loggers: bool = True

    def __post_init__(self) -> None:
        check_path("report_dir", self.report_dir)
        check_str("prefix", self.prefix)
        check_bool("log_mask_artifact", self.log_mask_artifact)
        check_bool("guard_loggers", self.guard_loggers)
        if self.report_dir is not None:
            object.__setattr__(self, "report_dir", Path(self.report_dir))


def as_group(kind: type[Group], value: Group | Mapping[str, Any] | None, argument: str) -> Group:
    """``value`` as a ``kind``: the default for None, a Mapping's fields by keyword (a Hydra section)."""
    if value is None:
        return kind()
    if isinstance(value, kind):
        return value
    if isinstance(value, Mapping):
        names = {f.name for f in dataclasses.fields(kind)}
        unknown = sorted(set(value) - names)
        if unknown:
            raise ValueError(f"{argument}: unknown field(s) {unknown}; expected some of {sorted(names)}")
        return kind(**{str(key): item for key, item in value.items()})
    raise ValueError(f"{argument} must be a {kind.__name__} or a mapping of its fields, got {type(value).__name__}")


#: LandscapeAudit's keywords before the groups: old keyword -> (argument, group class).
_LEGACY_AUDIT: dict[str, tuple[str, type]] = {
    **{name: ("schedule", AuditSchedule) for name in
       ("probe_every_n_epochs", "probe_at_end", "structure_every_n_epochs", "check_every_n_steps", "final_with_data")},
    **{name: ("model_io", ModelIO) for name in ("batch_to_inputs", "batch_to_targets", "example_input")},
    **{name: ("reporting", AuditReporting) for name in ("report_dir", "prefix", "log_mask_artifact", "guard_loggers")},
}


def apply_legacy_keywords(groups: dict[str, Any], legacy: Mapping[str, Any], who: str) -> dict[str, Any]:
    """Fold the old flat keywords into their groups (each warns, naming the new spelling).

    ``groups`` maps the argument names (``schedule``, ``model_io``, ``reporting``) to the groups already
    built; an old keyword replaces that one field of its group.

    Raises:
        TypeError: for a keyword that never existed (as Python does for any unexpected keyword).
    """
    unknown = sorted(set(legacy) - set(_LEGACY_AUDIT))
    if unknown:
        raise TypeError(f"{who}() got unexpected keyword argument(s) {unknown}")
    groups = dict(groups)
    loose = dict(legacy)
    for name in legacy:
        argument, kind = _LEGACY_AUDIT[name]
        # stacklevel 4: renamed_keyword -> here -> LandscapeAudit.__init__ -> the user's line.
        value, _ = renamed_keyword(loose, name, argument, None, where=who, note=f"as {argument}={kind.__name__}({name}=...)",
                                   stacklevel=4)
        groups[argument] = dataclasses.replace(groups[argument], **{name: value})
    return groups


def parse_final_layer_policy(
    policy: str | float | FinalLayerPolicy | None, legacy: Any, who: str, *, stacklevel: int = 4
) -> FinalLayerPolicy:
    """The one parse of a pruning callback's final-layer policy (``final_layer=`` is the old spelling).

    ``stacklevel`` counts from :func:`~prune_landscape.checks.renamed_keyword` (4: renamed_keyword -> here ->
    the callback's ``__init__`` -> the user's line).

    Raises:
        ValueError: for both spellings at once, or a policy ``FinalLayerPolicy.parse`` refuses.
    """
    given = {} if legacy is None else {"final_layer": legacy}
    policy, _ = renamed_keyword(given, "final_layer", "final_layer_policy", policy, where=who, stacklevel=stacklevel)
    return FinalLayerPolicy.parse("prune" if policy is None else policy)


def pruning_target(
    final_layer_policy: str | float | FinalLayerPolicy | None, final_layer: Any, scope: str | Scope, network: NetworkSpec,
    who: str,
) -> tuple[FinalLayerPolicy, Scope, NetworkSpec]:
    """What every pruning callback parses once at construction: ``(final-layer policy, scope, network)``.

    The policy typed (``final_layer`` is its deprecated spelling, warning at the user's line), the scope
    typed, the ``network`` spec checked (the module it names is chosen at each fit).

    Raises:
        ValueError: for a policy, scope or network spec that cannot be used (naming the given value).
    """
    # stacklevel 5: renamed_keyword -> parse_final_layer_policy -> here -> the callback's __init__ -> the user.
    policy = parse_final_layer_policy(final_layer_policy, final_layer, who, stacklevel=5)
    parsed_scope = Scope.parse(scope)
    check_network_spec(network)
    return policy, parsed_scope, network
