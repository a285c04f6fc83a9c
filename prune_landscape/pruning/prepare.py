"""From checked options to what the scorer is fed: the model's output on the example and the prune set.

Both run on the private working copy (:func:`~prune_landscape.pruning.workspace.working_copy`), after
:func:`~prune_landscape.pruning.options.parse_options` and before any scoring, so a model that does not run
on the data, or a loss that does not fit its targets, is named before any work.

Example:
    >>> import torch
    >>> from prune_landscape import models
    >>> from prune_landscape.pruning.options import parse_options
    >>> from prune_landscape.pruning.workspace import working_copy
    >>> net = models.mlp([4, 3, 2])
    >>> options = parse_options(net, "ntk_sap", 0.5, None, {"input_shape": (4,)})
    >>> work = working_copy(net)
    >>> inputs, _ = build_prune_set(work, options, None, probe_outputs(work, options, None))
    >>> tuple(inputs.shape)  # 10 x #classes placeholder samples
    (20, 4)
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import Any

import torch
from torch import nn

from prune_landscape.batching import DataLike
from prune_landscape.datacheck import check_data
from prune_landscape.pruning.fit import check_loss_fit
from prune_landscape.pruning.options import PruneOptions
from prune_landscape.pruning.pruneset import example_of, probe_output, prune_set, take_one_flat_tensor
from prune_landscape.pruning.registry import DataUse
from prune_landscape.pruning.workspace import model_device

__all__ = ["build_prune_set", "probe_outputs"]


def _option(scorer_options: Any, name: str) -> Any:
    """One scorer option's value, whether the options are a keyword mapping or a typed value."""
    if isinstance(scorer_options, Mapping):
        return scorer_options.get(name)
    return getattr(scorer_options, name, None)


def probe_outputs(work: nn.Module, options: PruneOptions, data: DataLike | None) -> torch.Tensor | None:
    """The output on the example when the prune set's size or the loss check needs it; checks the data first.

    Raises:
        ValueError: when the model does not run on the data or example, or the method's default loss does
            not fit the data's targets (:func:`~prune_landscape.pruning.fit.check_loss_fit`).
    """
    spec, example, device = options.spec, options.example, model_device(work)
    if data is not None and isinstance(example, torch.Tensor):
        check_data(work, data, loss=None, name="prune data")  # a wrong shape is named before any scoring
    needs_output = spec.data in (DataUse.SHAPES, DataUse.VALUES) and not options.prune_set.sized
    outputs = None
    if example is not None and (needs_output or spec.data is DataUse.VALUES):
        outputs = probe_output(work, example, device)
    if outputs is None and needs_output:  # shapes only: the probe input is a placeholder of the sample shape
        outputs = probe_output(work, torch.zeros((1, *options.prune_set.input_shape)), device)  # type: ignore[misc]
    if spec.data is DataUse.VALUES and "loss_fn" in spec.options:  # the loss compares outputs with the data's targets
        own_example = options.feed.example_inputs is not None
        inputs, targets = example_of(data, None) if own_example else (example, options.example_targets)
        data_outputs = probe_output(work, inputs, device) if own_example else outputs
        check_loss_fit(spec, data_outputs, targets, custom_loss=_option(options.scorer_options, "loss_fn") is not None)
    return outputs


def build_prune_set(
    work: nn.Module, options: PruneOptions, data: DataLike | None, outputs: torch.Tensor | None
) -> tuple[Any, Any] | None:
    """What the scorer is fed (:func:`~prune_landscape.pruning.pruneset.prune_set`), on the work copy's device.

    A method that only reads shapes, given structured example inputs, gets one flat float tensor that a
    pre-hook on the working copy splits back into the example's structure (so call this after anything that
    traces the working copy, such as finding the final layer).
    """
    settings, example = options.prune_set, options.example
    if options.spec.data is DataUse.SHAPES and example is not None and not isinstance(example, torch.Tensor):
        settings = replace(settings, input_shape=take_one_flat_tensor(work, example))
        data = None  # the values are never read: a placeholder of the flat shape stands for the batches
    return prune_set(options.spec.data, data, settings, model_device(work), example, outputs)
