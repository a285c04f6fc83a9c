"""Every ``torch.nn.utils.prune`` and parametrization detail of a mask held in a model, in one place.

Reading the masks a model carries, attaching one, folding them in (removing the hooks), the stored
unmasked tensor behind a masked weight, and turning a masked or parametrized tensor of a *shadow* (a copy
sharing the user's tensors) into a plain one without writing into any tensor. :class:`~prune_landscape.masks.MaskSet` is the data; this is how it
meets a module.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils import parametrize, prune

from prune_landscape.layers import prunable_weights

__all__ = [
    "attach_mask",
    "attached_masks",
    "drop_prune_hooks",
    "make_pruning_permanent",
    "parent_map",
    "pruned_attrs",
    "replace_with_plain",
    "stored_tensor",
    "trainable_tensor",
]


def make_pruning_permanent(model: nn.Module) -> nn.Module:
    """Fold every ``torch.nn.utils.prune`` hook into its weight (``weight = orig * mask``, a plain Parameter).

    The one place that removes prune hooks: callers then read exact zeros, and the model deep-copies
    cleanly (a hooked weight computed with autograd on is a non-leaf tensor, which ``copy.deepcopy`` refuses).
    Parametrizations (weight_norm, our mask parametrization) are left alone. Returns ``model``, changed in place.
    """
    for module in model.modules():
        for key, hook in list(module._forward_pre_hooks.items()):
            if isinstance(hook, prune.BasePruningMethod):
                prune.remove(module, hook._tensor_name)
            elif isinstance(hook, _RefreshChildMasks):
                del module._forward_pre_hooks[key]
    return model


class _RefreshChildMasks:
    """A parent's forward pre-hook that recomputes pruned weights of children it reads without calling.

    torch.nn.utils.prune recomputes ``weight`` only when the owning module itself is called. Some modules
    read a child's weight without calling the child (``nn.MultiheadAttention`` and ``out_proj``,
    torchvision's Swin attention and ``qkv``/``proj``): the weight then stays the tensor computed when the
    mask was attached, so the optimizer's updates never reach it and a second backward fails.

    Which children need it is learnt, not guessed: a child whose own prune hook replaced the weight since
    this hook last set it was called in that pass, and is dropped, so an ordinary layer costs one extra
    multiply on the first forward only. Children are kept by name (not by reference), and what was last set
    is not copied, so ``copy.deepcopy`` and pickling carry the hook over and the copy learns afresh.
    """

    def __init__(self) -> None:
        self.targets: set[tuple[str, str]] = set()
        self._last_set: dict[tuple[str, str], int] = {}  # id of the weight this hook wrote last

    def __call__(self, parent: nn.Module, args: object) -> None:
        for target in list(self.targets):
            child_name, attr = target
            child = parent.get_submodule(child_name)
            mask = child._buffers.get(f"{attr}_mask")
            if mask is None or f"{attr}_orig" not in child._parameters:
                continue
            if target in self._last_set and id(getattr(child, attr)) != self._last_set[target]:
                self.targets.discard(target)  # the child's own hook ran: it is called, nothing to refresh
                continue
            setattr(child, attr, child._parameters[f"{attr}_orig"] * mask)
            self._last_set[target] = id(getattr(child, attr))

    def __getstate__(self) -> dict[str, object]:
        return {"targets": set(self.targets), "_last_set": {}}  # ids mean nothing in a copy


def parent_map(model: nn.Module) -> dict[int, tuple[nn.Module, str]]:
    """id(child) -> (its parent, its name there), for every submodule of ``model`` (one walk)."""
    return {id(child): (parent, name) for parent in model.modules() for name, child in parent.named_children()}


def _refresh_from_parent(module: nn.Module, attr: str, parents: dict[int, tuple[nn.Module, str]]) -> None:
    """Make ``module``'s parent recompute ``module.<attr>`` while needed (see :class:`_RefreshChildMasks`)."""
    if id(module) not in parents:  # the root itself: it is always called
        return
    parent, child_name = parents[id(module)]
    hook = next((h for h in parent._forward_pre_hooks.values() if isinstance(h, _RefreshChildMasks)), None)
    if hook is None:
        hook = _RefreshChildMasks()
        parent.register_forward_pre_hook(hook)
    hook.targets.add((child_name, attr))
    hook._last_set.pop((child_name, attr), None)  # re-attached: learn again


class _MaskParametrization(nn.Module):
    """``weight * mask`` as a parametrization, for tensors that are already parametrized (weight_norm)."""

    def __init__(self, mask: torch.Tensor):
        super().__init__()
        self.register_buffer("mask", mask.clone())

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        return weight * self.mask.to(weight.dtype)


def _canonical(model: nn.Module, found: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Masks keyed by canonical names: a tied tensor masked in each owner appears once."""
    alias_of = {}
    try:  # the widest prunable set, so that a tied embedding's aliases are known too
        for weight in prunable_weights(model, prunable="all"):
            alias_of.update({alias: weight.name for alias in weight.aliases})
    except ValueError:  # no prunable tensor: nothing is tied
        pass
    result: dict[str, torch.Tensor] = {}
    for name, mask in found.items():
        key = alias_of.get(name, name)
        result[key] = result[key] & mask if key in result else mask
    return result


def _parametrization_mask(module: nn.Module, attr: str) -> torch.Tensor | None:
    masks = [p.mask for p in module.parametrizations[attr] if isinstance(getattr(p, "mask", None), torch.Tensor)]
    if not masks:
        return None
    combined = masks[0] != 0
    for extra in masks[1:]:
        combined = combined & (extra != 0)
    return combined


def attached_masks(model: nn.Module) -> dict[str, torch.Tensor]:
    """The masks ``model`` carries, keyed by canonical parameter name (a tied tensor appears once).

    Read from torch.nn.utils.prune buffers (stacked methods give their combined mask) and from
    parametrizations that carry a ``mask`` tensor.
    """
    found: dict[str, torch.Tensor] = {}
    for module_name, module in model.named_modules():
        prefix = f"{module_name}." if module_name else ""
        for buffer_name, buffer in module._buffers.items():
            attr = buffer_name[: -len("_mask")]
            if buffer_name.endswith("_mask") and buffer is not None and f"{attr}_orig" in module._parameters:
                found[prefix + attr] = buffer != 0
        if parametrize.is_parametrized(module):
            for attr in module.parametrizations:
                mask = _parametrization_mask(module, attr)
                if mask is not None:
                    found[prefix + attr] = mask
    return _canonical(model, found)


def pruned_attrs(module: nn.Module) -> list[str]:
    """The attributes of ``module`` held by torch.nn.utils.prune (an ``<attr>_orig`` Parameter next to an
    ``<attr>_mask`` buffer), in parameter registration order."""
    return [name[: -len("_orig")] for name in module._parameters
            if name.endswith("_orig") and f"{name[: -len('_orig')]}_mask" in module._buffers]


def drop_prune_hooks(module: nn.Module) -> None:
    """Remove ``module``'s torch.nn.utils.prune forward pre-hooks *without* folding the masks in.

    For a shadow only (:func:`prune_landscape.tracing.model_io.shadow_copy`): ``prune.remove`` (what
    :func:`make_pruning_permanent` calls) assigns ``orig.data = orig * mask``, which would write into the
    ``<attr>_orig`` tensor the shadow shares with the user's model. The caller reads the values first
    (:func:`prune_landscape.layers.current_tensor`) and puts plain ones in with :func:`replace_with_plain`.
    """
    for key, hook in list(module._forward_pre_hooks.items()):
        if isinstance(hook, prune.BasePruningMethod):
            del module._forward_pre_hooks[key]


def replace_with_plain(module: nn.Module, attr: str, value: torch.Tensor) -> None:
    """Make ``module.<attr>`` the plain tensor ``value``: its parametrization or its torch.nn.utils.prune
    ``_orig``/``_mask`` pair is dropped from the module's dicts (no tensor is written; for a shadow, see
    :func:`drop_prune_hooks`)."""
    if parametrize.is_parametrized(module, attr):
        del module.parametrizations[attr]
        if len(module.parametrizations) == 0:
            # the last one gone: the module returns to its own class (parametrize made a subclass of it)
            del module._modules["parametrizations"]
            module.__class__ = type(module).__bases__[0]
    if f"{attr}_orig" in module._parameters:
        del module._parameters[f"{attr}_orig"]
        module._buffers.pop(f"{attr}_mask", None)
        module.__dict__.pop(attr, None)
    module._parameters[attr] = value


def stored_tensor(module: nn.Module, attr: str) -> torch.Tensor:
    """The unmasked tensor behind ``module.<attr>``: ``<attr>_orig`` under torch.nn.utils.prune, else
    ``module.<attr>`` itself (a parametrized tensor's value, a plain Parameter)."""
    if f"{attr}_orig" in module._parameters:
        return module._parameters[f"{attr}_orig"]
    return getattr(module, attr)


def trainable_tensor(module: nn.Module, attr: str) -> torch.Tensor | None:
    """The Parameter an optimizer updates behind ``module.<attr>``, where zeroing it keeps a mask enforced.

    ``<attr>_orig`` under torch.nn.utils.prune, the plain Parameter, or a single-tensor parametrization's
    ``original``. None for a parametrization over several tensors (weight_norm's ``original0``/``original1``):
    there the mask parametrization at the end of the chain already zeroes the weight, and no one tensor
    could be masked.
    """
    if f"{attr}_orig" in module._parameters:
        return module._parameters[f"{attr}_orig"]
    if attr in module._parameters:
        return module._parameters[attr]
    if parametrize.is_parametrized(module, attr):
        chain = module.parametrizations[attr]
        return chain.original if "original" in chain._parameters else None
    return None


def attach_mask(
    model: nn.Module,
    module: nn.Module,
    attr: str,
    mask: torch.Tensor,
    *,
    parents: dict[int, tuple[nn.Module, str]] | None = None,
) -> None:
    """Set ``module.<attr>``'s mask to ``mask`` (``model`` is the root, for the parent refresh below).

    An already pruned tensor keeps its ``*_orig`` Parameter and has its mask buffer overwritten; a
    parametrized one gets (or updates) a mask parametrization; a plain one gets torch.nn.utils.prune's.
    ``parents`` is :func:`parent_map` of ``model``, for callers attaching many masks (computed if omitted).
    """
    if f"{attr}_mask" in module._buffers:
        buffer = module._buffers[f"{attr}_mask"]
        buffer.copy_(mask.to(buffer.device, buffer.dtype))
        setattr(module, attr, module._parameters[f"{attr}_orig"] * buffer)
    elif parametrize.is_parametrized(module, attr):
        holders = [p for p in module.parametrizations[attr] if isinstance(getattr(p, "mask", None), torch.Tensor)]
        if not holders:
            # weight_norm / spectral_norm / custom: append ``* mask`` to the chain (the original stays
            # the Parameter the optimizer holds).
            parametrize.register_parametrization(module, attr, _MaskParametrization(mask.to(getattr(module, attr).device)))
            return
        holders[0].mask.copy_(mask.to(holders[0].mask.device, holders[0].mask.dtype))
        for extra in holders[1:]:
            extra.mask.fill_(1)
    else:
        device = module._parameters[attr].device
        prune.custom_from_mask(module, attr, mask.to(device))
    if f"{attr}_mask" in module._buffers:
        _refresh_from_parent(module, attr, parent_map(model) if parents is None else parents)
