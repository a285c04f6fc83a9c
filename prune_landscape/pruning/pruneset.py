"""What a scorer is fed: the example inputs, the sample shape and the prune set, for inputs of any structure.

:func:`~prune_landscape.pruning.api.prune` calls these after validating its arguments. The prune set is
``10 x #classes`` samples by default (the papers' choice; ``#classes`` is the last axis of the model's
output on the example), at most :data:`NTK_SAP_MAX_DEFAULT_SAMPLES` for methods that only read shapes.

Example:
    >>> import torch
    >>> from prune_landscape.pruning.pruneset import example_of
    >>> inputs, targets = example_of((torch.zeros(5, 3), torch.arange(5)), None)
    >>> tuple(inputs.shape), targets.tolist()
    ((2, 3), [0, 1])
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from prune_landscape.batching import (
    Batches,
    DataLike,
    batch_size_of,
    call_model,
    cat_inputs,
    first_batch,
    input_tensors,
    iter_batches,
    map_tensors,
    require_data,
)
from prune_landscape.pruning.registry import DataUse
from prune_landscape.pruning.workspace import output_of

__all__ = [
    "NTK_SAP_MAX_DEFAULT_SAMPLES",
    "PruneSetOptions",
    "example_of",
    "first_samples",
    "probe_output",
    "prune_set",
    "sample_shape",
    "take_one_flat_tensor",
]

_SAMPLES_PER_CLASS = 10  # the papers' prune set: 10 x #classes samples
#: NTK-SAP's default prune set is capped: its inputs are noise, so a 1000-class head would otherwise mean
#: 10,000 noise samples x 5 repeats per iteration for no gain in what the score measures.
NTK_SAP_MAX_DEFAULT_SAMPLES = 1024


def first_samples(inputs: Any, count: int = 2) -> Any:
    """The first ``count`` samples of an input structure (all of it when its tensors share no batch dim)."""
    if batch_size_of(inputs) is None:
        return inputs
    return map_tensors(lambda t: t[:count], inputs)


def example_of(data: DataLike | None, example_inputs: Any) -> tuple[Any, Any]:
    """(example inputs, their targets or None): the user's example_inputs, else the first data samples."""
    if example_inputs is not None:
        if not isinstance(example_inputs, (torch.Tensor, tuple, list, Mapping)) or (
            isinstance(example_inputs, (tuple, list)) and not example_inputs
        ):
            raise ValueError(
                "example_inputs must be a tensor, a tuple of positional inputs or a dict of keyword inputs, "
                f"got {type(example_inputs).__name__}"
            )
        return (tuple(example_inputs) if isinstance(example_inputs, list) else example_inputs), None
    if data is None:
        return None, None
    require_data(data, "prune(data=...)")
    inputs, targets = first_batch(data)
    sliced = first_samples(inputs)
    if targets is not None and batch_size_of(inputs) is not None and targets.dim() > 0:
        targets = targets[:2]
    return sliced, targets


def sample_shape(model: nn.Module, example: Any, input_shape: Any, method: str) -> tuple[int, ...] | None:
    """One sample's shape: ``input_shape`` (checked), else the example's, else an MLP's first layer's width."""
    if input_shape is not None:
        try:
            shape = tuple(int(s) for s in input_shape)
        except TypeError:
            raise ValueError(f"input_shape must be the shape of one sample, e.g. (3, 32, 32), got {input_shape!r}") from None
        if not shape or any(s < 1 for s in shape):
            raise ValueError(f"input_shape must list positive sizes, e.g. (3, 32, 32), got {input_shape!r}")
        return shape
    if isinstance(example, torch.Tensor):
        return tuple(example.shape[1:])
    if example is not None:
        return None  # structured inputs: the example itself gives the shapes
    first = next((m for m in model.modules() if isinstance(m, nn.Linear | nn.Conv1d | nn.Conv2d | nn.Conv3d)), None)
    if isinstance(first, nn.Linear):
        return (first.in_features,)  # an MLP's input shape is readable from its first layer
    raise ValueError(
        f"method {method!r} needs the input shape: pass data=..., example_inputs=... or input_shape=(C, H, W) "
        "(one sample's shape)"
    )


def probe_output(work: nn.Module, example: Any, device: torch.device) -> torch.Tensor:
    """"The" output on the example (one no-grad forward), or a clear error when the model does not run on it."""
    try:
        with torch.no_grad():
            return output_of(work, call_model(work, map_tensors(lambda t: t.to(device), example)))
    except ValueError:
        raise
    except Exception as error:  # noqa: BLE001 - re-raised with what to pass instead
        raise ValueError(
            f"the model does not run on the example inputs ({type(error).__name__}: {error}); pass example_inputs= "
            "(a tensor, a tuple of positional inputs or a dict of keyword inputs) or data= batches the model takes"
        ) from error


@dataclass(frozen=True)
class PruneSetOptions:
    """The prune set: ``batch_size`` (None: the scorer's default, 256), its size (``prune_samples`` or
    ``num_batches``; None: 10 x #classes) and one sample's ``input_shape`` (None: read from the example)."""

    batch_size: int | None = None
    prune_samples: int | None = None
    num_batches: int | None = None
    input_shape: tuple[int, ...] | None = None

    @property
    def sized(self) -> bool:
        """True when the user fixed the size, so the model's output width is not needed."""
        return self.prune_samples is not None or self.num_batches is not None


def prune_set(
    use: DataUse,
    data: DataLike | None,
    options: PruneSetOptions,
    device: torch.device,
    example: Any,
    outputs: torch.Tensor | None,
) -> tuple[Any, Any] | None:
    """What the scorer is fed for data use ``use``: None, one sample, a placeholder of the prune set's
    shapes, or the first samples of ``data`` (``outputs``: the model's output on the example, for #classes)."""
    if use is DataUse.NONE:
        return None
    to_device = lambda t: t.to(device)  # noqa: E731
    labels = torch.zeros(1, dtype=torch.long, device=device)
    if use is DataUse.SAMPLE_SHAPE:
        if options.input_shape is None:  # structured float inputs: one sample of the example
            return map_tensors(to_device, first_samples(example, 1)), labels
        return torch.zeros((1, *options.input_shape), device=device), labels
    batch_size = options.batch_size or 256
    if options.prune_samples is not None:
        samples = options.prune_samples
    elif options.num_batches is not None:
        samples = options.num_batches * batch_size
    else:
        samples = _SAMPLES_PER_CLASS * int(outputs.shape[-1])  # type: ignore[union-attr]
        if use is DataUse.SHAPES:
            samples = min(samples, NTK_SAP_MAX_DEFAULT_SAMPLES)
    if data is None:  # shapes only: a placeholder whose values are never read
        shape = options.input_shape or tuple(example.shape[1:])
        return torch.zeros((samples, *shape), device=device), torch.zeros(samples, dtype=torch.long, device=device)
    parts = list(iter_batches(data, batch_size, max_samples=samples))
    if all(batch_size_of(x) is not None for x, _ in parts) and all(y is not None for _, y in parts):
        inputs = map_tensors(to_device, cat_inputs([x for x, _ in parts]))
        return inputs, torch.cat([y for _, y in parts]).to(device)
    return Batches((map_tensors(to_device, x), None if y is None else y.to(device)) for x, y in parts)


def take_one_flat_tensor(work: nn.Module, example: Any) -> tuple[int]:
    """Let the working copy take one ``(batch, features)`` float tensor that a pre-hook splits into the
    example's structure (tuple / dict, each leaf reshaped to its sample shape); returns ``(features,)``.

    Methods that synthesise inputs from a shape (NTK-SAP's Gaussian noise) then work on multi-input models:
    i.i.d. noise on the flat tensor is i.i.d. noise on every leaf.
    """
    leaves = input_tensors(example)
    shapes = [tuple(t.shape[1:]) for t in leaves]
    sizes = [math.prod(shape) for shape in shapes]

    def split(module: nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
        flat = args[0]
        parts = iter(p.reshape(flat.shape[0], *shape) for p, shape in zip(torch.split(flat, sizes, dim=1), shapes))
        structured = map_tensors(lambda _: next(parts), example)
        return ((), dict(structured)) if isinstance(structured, Mapping) else (tuple(structured), {})

    work.register_forward_pre_hook(split, with_kwargs=True)
    return (sum(sizes),)
