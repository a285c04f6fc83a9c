"""The generic-values dependence pass behind :func:`~prune_landscape.structure.analyze_structure`.

What it computes, per output unit of every prunable weight (see the semantics table in structure.py):

* ``from_input``: does the unit's value depend on the model input? Two forward passes (A and B) run
  through the model's *real modules* on two independent generic inputs; the unit depends on the input iff
  its value differs between them at some position (batch, token, pixel). Units are read along the
  *feature* axis of the layer's output (the last axis for Linear / HF Conv1D / embeddings, axis 1 for
  convolutions), never along tokens.
* ``to_output``: does the output depend on the unit? One backward pass of a generic random cotangent of
  the output from pass A; the unit reaches the output iff the gradient arriving at it is non-zero at some
  position (absolute values, so softmax's zero-sum gradients over keys cannot cancel).

"Generic" means every parameter and input is replaced by random values (the mask respected: pruned
entries are exact zeros, kept entries random and non-zero), so an exact zero can only come from the
structure, never from a coincidence of values. Ops that hide paths for *particular* values are made
path-preserving while the pass runs (a TorchFunctionMode on a shallow copy of the model): ReLU becomes a
leaky ReLU, ReLU6/Hardtanh a leaky clamp, Hardsigmoid a sigmoid, Hardswish x*sigmoid(x), max-pooling
average-pooling; saturating functions (sigmoid, tanh, SiLU, GELU, softplus, Mish, ELU) get ``+ 0.01 x``,
which keeps their zeros and makes their derivative non-zero everywhere. Token-id inputs get random ids;
an embedding whose table is masked adds generic noise times a generic mixture of each column to its
lookup, so a kept entry is seen whatever ids were drawn.

In float64 (small models) the generic weights are fresh random draws; in float32 (large models, where a
random draw of every parameter would cost as much as a forward pass) they are the model's own weights with
exact zeros replaced by random draws (random-init and trained weights are generic in this sense). Either
way each row is scaled to unit norm, vectors (norm scales, biases) are drawn in [0.5, 1) and BatchNorm
statistics are drawn afresh, so activations stay O(1) and no saturating function is pushed to a constant.

"Depends on the input" is read from forward-mode AD tangents (one pass that also records the graph for
the backward pass); tangents are never added to constants, so a small dependence cannot be absorbed by a
bias in floating point. Where forward-mode AD's own rule is slow, the tangent is written out
(:mod:`prune_landscape.tracing.generic_ops`): a prunable call's tangent is one product ``W t``. For a model with
an op that has no forward-mode rule (the oneDNN LSTM kernel), it falls back to comparing two forward
passes on independent generic inputs (noted in the result).

The user's model is never written to: the pass runs on a structural copy that shares no writable state
(parameters are replaced, parametrizations and torch.nn.utils.prune hooks are removed in the copy only).

Modules: the generic values and the shadow in :mod:`prune_landscape.tracing.generic_values`, the interception
mode in :mod:`prune_landscape.tracing.recorder`, the swapped-in ops in :mod:`prune_landscape.tracing.generic_ops`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.autograd.forward_ad as fwAD  # noqa: N812
from torch import nn

from prune_landscape.tracing.generic_values import GenericShadow, dual_inputs, generic_inputs, generic_shadow
from prune_landscape.layers import PrunableWeight
from prune_landscape.tracing.model_io import default_output, output_tensors, run_model
from prune_landscape.tracing.recorder import CallRecord, Recorder

__all__ = ["CallRecord", "DependencePass", "default_output", "run_dependence"]


@dataclass
class DependencePass:
    """Everything the structure analysis reads from the two passes."""

    calls: list[CallRecord]
    ran_modules: set[str]
    call_order: tuple[tuple[str, str], ...]
    dtype: torch.dtype
    output_shape: tuple[int, ...]
    notes: list[str] = field(default_factory=list)


class _ModuleWatch:
    """Forward hooks on every module of the shadow: which modules ran, the order the leaves ran in, and the
    outputs of recurrent modules recorded as the units of their weights (gates and steps stay inside)."""

    def __init__(self, shadow: nn.Module, weights: list[PrunableWeight]):
        self.names = {id(m): n for n, m in shadow.named_modules()}
        self.ran: set[str] = set()
        self.order: list[tuple[str, str]] = []
        self.recurrent = {id(m) for m in shadow.modules() if isinstance(m, nn.RNNBase)}
        self.rnn_weights: dict[str, list[str]] = {}
        for weight in weights:
            if weight.kind == "recurrent":
                self.rnn_weights.setdefault(weight.module, []).append(weight.name)
        self.recorder: Recorder | None = None
        self.handles = [m.register_forward_hook(self) for m in shadow.modules()]

    def start(self, recorder: Recorder) -> Recorder:
        """A new pass, recorded by ``recorder``."""
        self.recorder = recorder
        self.ran.clear()
        self.order.clear()
        return recorder

    def remove(self) -> None:
        for handle in self.handles:
            handle.remove()

    def __call__(self, module: nn.Module, args: Any, output: Any) -> Any:
        name = self.names.get(id(module), "?")
        self.ran.add(name)
        if not any(True for _ in module.children()):
            self.order.append((name, type(module).__name__))
        if id(module) not in self.recurrent or self.recorder is None:
            return None
        sequence = output[0] if isinstance(output, tuple) else output
        tensor = sequence.data if isinstance(sequence, nn.utils.rnn.PackedSequence) else sequence
        recorded = tensor
        for weight_name in self.rnn_weights.get(name, []):
            recorded = self.recorder.record(weight_name, "recurrent", recorded, None)
        if recorded is tensor:
            return None
        if isinstance(sequence, nn.utils.rnn.PackedSequence):
            sequence = sequence._replace(data=recorded)
        else:
            sequence = recorded
        return (sequence, *output[1:]) if isinstance(output, tuple) else sequence


@dataclass(frozen=True)
class _Setup:
    """What both ways of running the pass share."""

    generic: GenericShadow
    watch: _ModuleWatch
    example: Any
    dtype: torch.dtype
    vocab: int | None
    generator: torch.Generator
    cpu_generator: torch.Generator
    anchor: torch.Tensor

    def recorder(self, **options: Any) -> Recorder:
        return self.watch.start(Recorder(self.generic.tracked, self.generic.soft, self.generator,
                                         output_scale=self.generic.output_scale, **options))

    def inputs(self) -> Any:
        return generic_inputs(self.example, self.dtype, self.vocab, self.cpu_generator, position=0)


def run_dependence(
    model: nn.Module,
    example: Any,
    weights: list[PrunableWeight],
    masks: Mapping[str, torch.Tensor],
    *,
    output_transform: Callable[[Any], torch.Tensor] | None,
    dtype: torch.dtype,
    seed: int = 0,
) -> DependencePass:
    """Run the dependence pass and the backward pass on a shadow of ``model`` (see the module docstring)."""
    device = next(iter(model.parameters())).device
    generator = torch.Generator(device=device).manual_seed(seed)
    cpu_generator = torch.Generator().manual_seed(seed + 1)
    generic = generic_shadow(model, weights, masks, dtype, generator)
    watch = _ModuleWatch(generic.module, weights)
    vocab_sizes = [m.num_embeddings for m in generic.module.modules() if isinstance(m, (nn.Embedding, nn.EmbeddingBag))]
    setup = _Setup(generic, watch, example, dtype, min(vocab_sizes) if vocab_sizes else None, generator, cpu_generator,
                   torch.zeros((), dtype=dtype, device=device, requires_grad=True))
    transform = output_transform or default_output
    notes: list[str] = []
    try:
        try:
            recorder, output = _tangent_pass(setup, transform)
        except (NotImplementedError, RuntimeError) as error:
            if "forward AD" not in str(error) and "forward-mode" not in str(error):
                raise
            # An op without a forward-mode rule (e.g. the oneDNN LSTM kernel): two generic inputs instead.
            notes.append(f"finite differences ({str(error).splitlines()[0][:120]})")
            recorder, output = _difference_pass(setup, transform)
    finally:
        watch.remove()
    for record in recorder.calls:
        if record.to_selected is None:
            record.to_selected = torch.zeros_like(record.from_input)
        if record.to_output is None:
            record.to_output = record.to_selected.clone()
        else:
            record.to_output = torch.maximum(record.to_output, record.to_selected)
    return DependencePass(recorder.calls, set(watch.ran), tuple(watch.order), dtype, tuple(output.shape), notes)


def _tangent_pass(setup: _Setup, transform: Callable[[Any], torch.Tensor]) -> tuple[Recorder, torch.Tensor]:
    """One pass: forward-mode tangents (depends on the input) and the graph for the backward pass."""
    with fwAD.dual_level(), torch.enable_grad():
        inputs, storages = dual_inputs(setup.inputs(), setup.generator)
        recorder = setup.recorder(grad_leaf=setup.anchor, dual=True, id_storages=storages)
        with recorder:
            raw = run_model(setup.generic.module, inputs)
            output = transform(raw)
    # Outside the dual level the tangents are gone and the backward pass runs on primal values only.
    with torch.enable_grad():
        _backward(raw, output, recorder, setup.generator)
    return recorder, output


def _difference_pass(setup: _Setup, transform: Callable[[Any], torch.Tensor]) -> tuple[Recorder, torch.Tensor]:
    """Pass B stores every call's values on one generic input, pass A compares on another and backpropagates."""
    reference = setup.recorder()
    with torch.no_grad(), reference:
        run_model(setup.generic.module, setup.inputs())
    recorder = setup.recorder(grad_leaf=setup.anchor, reference=reference.stored)
    with torch.enable_grad(), recorder:
        raw = run_model(setup.generic.module, setup.inputs())
        output = transform(raw)
    _backward(raw, output, recorder, setup.generator)
    return recorder, output


def _backward(raw: Any, output: Any, recorder: Recorder, generator: torch.Generator) -> None:
    """Random cotangents: first on "the" output (it decides the final layer), then on every other output
    tensor, so a unit is alive when it reaches any output (an auxiliary head's units are not dead)."""
    if not isinstance(output, torch.Tensor) or not output.is_floating_point():
        raise ValueError(f"output_transform must return a floating tensor, got {type(output).__name__}")
    others = [t for t in output_tensors(raw) if t is not output and t.requires_grad]
    for phase, targets in (("selected", [output] if output.requires_grad else []), ("other", others)):
        if not targets:
            continue
        recorder.phase = phase
        primals = [fwAD.unpack_dual(t).primal for t in targets]
        cotangents = [torch.randn(t.shape, generator=generator, dtype=t.dtype, device=t.device) for t in primals]
        torch.autograd.backward(primals, cotangents, retain_graph=phase == "selected" and bool(others))
