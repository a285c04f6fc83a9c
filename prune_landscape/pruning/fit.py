"""Does a pruning method fit this model and these inputs? Every check :func:`prune` makes before any scoring.

A method either works on a model or is refused here with the reason and the fix; nothing fails later with
a raw torch error. The rules, one per method family:

- **Synthetic inputs** (``synflow``: one all-ones input; ``ntk_sap``: Gaussian noise) need float inputs.
  Token ids (integer tensors, or an ``nn.Embedding`` model given only an ``input_shape``) are refused:
  ones or noise are not token ids. Tuple and dict inputs are fine (NTK-SAP draws one flat noise tensor
  that :func:`~prune_landscape.pruning.api.prune` splits into the inputs), as long as every input has the
  batch as its first dimension.
- **SynFlow and normalisation.** SynFlow's score ``|theta * dR/dtheta|`` measures path products in a
  positively homogeneous network. LayerNorm, GroupNorm, InstanceNorm and RMSNorm (any module whose class
  name says so, e.g. HuggingFace's ``LlamaRMSNorm``) divide by a scale computed from the activations:
  the output is invariant to the scale of the weights feeding them, so by Euler's theorem
  ``sum theta * dR/dtheta = 0`` over each such layer and its scores are cancellation noise; an all-ones
  input through LayerNorm is 0 outright. Refused, naming the layers. BatchNorm in eval mode is affine and
  fine (SynFlow takes ``|running stats|``, as the reference code does).
- **GraSP** differentiates twice; ``nn.EmbeddingBag`` has no second derivative w.r.t. its weight, so
  GraSP with ``prunable="all"`` on a model with one is refused.
- **Loss-based methods** (``snip``, ``grasp``) need targets and a loss. The default loss is
  :func:`~prune_landscape.pruning.workspace.classification_loss`: ``(N, C)`` logits with ``(N,)`` class
  indices (or soft ``(N, C)`` targets), or per-token ``(N, T, C)`` logits with ``(N, T)`` targets. Other
  outputs need ``loss_fn=``. The check runs one no-grad forward on two samples.

Example:
    >>> import torch
    >>> from prune_landscape import models
    >>> from prune_landscape.pruning.registry import get_pruner
    >>> net = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.LayerNorm(8), torch.nn.Linear(8, 2))
    >>> try:
    ...     check_fit(net, get_pruner("synflow"), example_inputs=torch.ones(1, 4))
    ... except ValueError as error:
    ...     print(str(error)[:60])
    synflow cannot score this model: its 1 normalisation layer(s
"""

from __future__ import annotations

import re
from typing import Any

import torch
from torch import nn

from prune_landscape.batching import batch_size_of, input_tensors
from prune_landscape.pruning.registry import DataUse, PrunerSpec

__all__ = ["SCALE_INVARIANT_NORMS", "check_fit", "check_loss_fit", "normalisation_layers"]

#: Normalisations whose output does not change when the incoming weights are scaled.
SCALE_INVARIANT_NORMS: tuple[type[nn.Module], ...] = (
    nn.LayerNorm,
    nn.GroupNorm,
    nn.modules.instancenorm._InstanceNorm,
    nn.LocalResponseNorm,
    *((nn.RMSNorm,) if hasattr(nn, "RMSNorm") else ()),
)
# A class name that ends like a normalisation ("LlamaRMSNorm", "LayerNorm2d"), not "LayerNormMLP".
_NORM_NAME = re.compile(r"(layer|group|rms|instance)_?norm(\d+d)?$", re.IGNORECASE)
_EMBEDDINGS = (nn.Embedding, nn.EmbeddingBag)

_SYNTHETIC = {"synflow": "one all-ones input", "ntk_sap": "Gaussian-noise inputs"}
_ALTERNATIVES = "use 'snip' or 'grasp' (with data and targets), 'magnitude' or 'random'"


def normalisation_layers(model: nn.Module) -> list[str]:
    """Names of the scale-invariant normalisation modules (by type, or by a class name such as ``RMSNorm``)."""
    return [
        name or type(model).__name__
        for name, module in model.named_modules()
        if isinstance(module, SCALE_INVARIANT_NORMS) or _NORM_NAME.search(type(module).__name__)
    ]


def _describe(inputs: Any) -> str:
    return ", ".join(f"{tuple(t.shape)} {str(t.dtype).replace('torch.', '')}" for t in input_tensors(inputs))


def _list(names: list[str]) -> str:
    return f"{names[:4]}{f' and {len(names) - 4} more' if len(names) > 4 else ''}"


def check_fit(model: nn.Module, spec: PrunerSpec, *, example_inputs: Any = None, prunable: str = "layers") -> None:
    """Refuse a method that cannot score ``model`` (synthetic-input and SynFlow rules of the module docstring).

    Args:
        model: the user's model (only inspected).
        spec: the method.
        example_inputs: what the model is fed (tensor / tuple / dict); None when only a shape is known
            (float inputs of that shape are then synthesised).
        prunable: the prunable scope (``"layers"`` or ``"all"``, :mod:`prune_landscape.layers`).

    Raises:
        ValueError: naming the method, the reason and the fix.
    """
    name = spec.name
    if name == "grasp" and prunable == "all":
        bags = [n for n, m in model.named_modules() if isinstance(m, nn.EmbeddingBag)]
        if bags:
            raise ValueError(
                f"grasp cannot score this model with prunable='all': it differentiates twice, and torch's "
                f"EmbeddingBag ({_list(bags)}) has no second derivative w.r.t. its weight. Use prunable='layers' "
                "(EmbeddingBag weights kept dense) or 'snip'"
            )
    synthetic = name in _SYNTHETIC or spec.data in (DataUse.SAMPLE_SHAPE, DataUse.SHAPES)
    if not synthetic:
        return
    what = _SYNTHETIC.get(name, "synthetic float inputs")
    if example_inputs is not None:
        tensors = input_tensors(example_inputs)
        integer = [t for t in tensors if not (t.is_floating_point() or t.is_complex())]
        if integer:
            raise ValueError(
                f"{name} cannot score this model: it feeds {what}, but the model takes integer inputs "
                f"({_describe(example_inputs)}; token ids?). Ones or noise are not token ids; {_ALTERNATIVES}"
            )
        if spec.data is DataUse.SHAPES and batch_size_of(example_inputs) is None:
            raise ValueError(
                f"{name} cannot score this model: it draws Gaussian-noise batches, but the model's inputs "
                f"({_describe(example_inputs)}) share no batch dimension to draw them along. Wrap the model so that "
                f"it takes inputs with the batch first, or {_ALTERNATIVES}"
            )
    else:
        embeddings = [n for n, m in model.named_modules() if isinstance(m, _EMBEDDINGS)]
        if embeddings:
            raise ValueError(
                f"{name} cannot score this model: it feeds {what} of a given shape, but the model has embedding "
                f"layers {_list(embeddings)} that take token ids. If the model really takes float inputs, pass "
                f"example_inputs=... (or data=...) to say so; else {_ALTERNATIVES}"
            )
    if name == "synflow":
        norms = normalisation_layers(model)
        if norms:
            raise ValueError(
                f"synflow cannot score this model: its {len(norms)} normalisation layer(s) {_list(norms)} make the "
                "network's output invariant to the scale of the weights feeding them, so SynFlow's path-product "
                "score (|theta * dR/dtheta|, one all-ones input) sums to zero over each such layer and ranks by "
                "noise (an all-ones input through LayerNorm is exactly 0). SynFlow assumes a positively "
                "homogeneous network (conv/linear, ReLU, BatchNorm, pooling). Use 'ntk_sap' (float inputs), "
                "'snip' or 'grasp' (with data), or 'magnitude' / 'random'"
            )


def check_loss_fit(spec: PrunerSpec, outputs: torch.Tensor, targets: Any, *, custom_loss: bool) -> None:
    """Refuse a loss-based method whose default loss cannot compare ``outputs`` with ``targets``.

    Args:
        spec: the method (``snip``, ``grasp`` or a registered ``data="values"`` method).
        outputs: "the" output of the model on the first samples.
        targets: the targets of the same samples (None when the batches carry none).
        custom_loss: the user passed ``loss_fn=`` (then only the presence of targets is checked).

    Raises:
        ValueError: naming the method, what the loss needs, what was given and the fix.
    """
    name = spec.name
    if targets is None:
        raise ValueError(
            f"{name} scores by the gradient of a loss, but the batches carry no targets (a dict batch needs one of "
            "the keys 'targets', 'labels', 'label', 'target' or 'y'; a pair is (inputs, targets)). Pass data with "
            "targets, or use 'magnitude', 'random', 'synflow' or 'ntk_sap'"
        )
    if custom_loss:
        return
    fix = f"pass loss_fn=my_loss (my_loss(outputs, targets) -> scalar) to prune(), or use 'magnitude' / 'random'"
    if not isinstance(targets, torch.Tensor):
        raise ValueError(f"{name}'s default cross-entropy needs tensor targets, got {type(targets).__name__}; {fix}")
    if not outputs.is_floating_point() or outputs.dim() < 2:
        raise ValueError(
            f"{name}'s default loss is cross-entropy over the last axis of (N, ..., C) logits, but the model's output "
            f"is {tuple(outputs.shape)} {outputs.dtype}; {fix}"
        )
    classes = outputs.shape[-1]
    if targets.is_floating_point():
        if tuple(targets.shape) == tuple(outputs.shape) and outputs.dim() == 2:
            return  # class probabilities
        raise ValueError(
            f"{name}'s default loss is cross-entropy: float targets must be class probabilities shaped like the "
            f"(N, C) logits {tuple(outputs.shape)}, got {tuple(targets.shape)} (a regression target?); {fix}"
        )
    if tuple(targets.shape) != tuple(outputs.shape[:-1]):
        raise ValueError(
            f"{name}'s default loss is cross-entropy of logits (N, ..., C) against class indices (N, ...): outputs "
            f"{tuple(outputs.shape)} need targets of shape {tuple(outputs.shape[:-1])}, got {tuple(targets.shape)}; {fix}"
        )
    valid = targets[targets != -100]
    if valid.numel() and (int(valid.min()) < 0 or int(valid.max()) >= classes):
        raise ValueError(
            f"{name}'s default cross-entropy needs class indices in [0, {classes}) (or -100 to ignore), got values in "
            f"[{int(valid.min())}, {int(valid.max())}]; {fix}"
        )
