"""MaskSet: the pruning mask as plain, immutable data kept apart from the model.

A mask is keyed by the *parameter name the user sees* (``"fc.weight"``), whatever mechanism holds it:
``torch.nn.utils.prune`` (``fc.weight_orig`` + ``fc.weight_mask``), a parametrization that multiplies by a
``mask`` tensor, or a model pruned "permanently" (exact zeros; such masks are marked ``inferred``).

- this module: :class:`MaskSet`, the data (densities, intersection, fingerprint, apply, save, load);
- :mod:`.mechanisms`: every ``torch.nn.utils.prune`` / parametrization detail (read, attach, fold, the
  stored unmasked tensor);
- :mod:`.storage`: the file format (safetensors plus format metadata).

Example:
    >>> import torch
    >>> from prune_landscape import MaskSet, models
    >>> net = models.mlp([4, 3, 2])
    >>> masks = MaskSet({"fc2.weight": torch.tensor([[1, 0, 1], [1, 1, 0]], dtype=torch.bool)})
    >>> _ = masks.apply_to(net)
    >>> MaskSet.from_module(net).density
    0.6666666666666666
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from prune_landscape.layers import PRUNABLE_TYPES, current_tensor, find_parameter, prunable_parameters, tensor_owners
from prune_landscape.masks.mechanisms import (
    attach_mask,
    attached_masks,
    make_pruning_permanent,
    parent_map,
    stored_tensor,
    trainable_tensor,
)
from prune_landscape.masks.storage import read_masks, save_masks

__all__ = [
    "PRUNABLE_TYPES", "MaskSet", "attach_mask", "attached_masks", "current_tensor", "find_parameter",
    "make_pruning_permanent", "prunable_parameters", "stored_tensor", "trainable_tensor", "current_masks",
    "install_mask_restore_hook", "mask_version_key",
]


class MaskSet(Mapping[str, torch.Tensor]):
    """An immutable map from parameter name to a bool mask (True = kept), with densities and I/O.

    Args:
        masks: parameter name -> bool tensor. Tensors are copied to CPU; the caller's tensors are never
            aliased.
        inferred: True when the masks were read from exact zeros rather than from a pruning mechanism.

    Raises:
        ValueError: if a mask is not a bool tensor.
    """

    __slots__ = ("_masks", "_inferred")

    def __init__(self, masks: Mapping[str, torch.Tensor] | None = None, *, inferred: bool = False):
        checked: dict[str, torch.Tensor] = {}
        for name, mask in (masks or {}).items():
            if not isinstance(mask, torch.Tensor):
                raise ValueError(f"mask {name!r} must be a torch.Tensor of dtype torch.bool, got {type(mask).__name__}")
            if mask.dtype != torch.bool:
                raise ValueError(
                    f"mask {name!r} must have dtype torch.bool, got {mask.dtype} (convert with `mask != 0`)"
                )
            checked[str(name)] = mask.detach().to("cpu", copy=True).contiguous()
        self._masks = checked
        self._inferred = bool(inferred)

    # -- Mapping protocol -------------------------------------------------------------------------------
    def __getitem__(self, name: str) -> torch.Tensor:
        return self._masks[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._masks)

    def __len__(self) -> int:
        return len(self._masks)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, MaskSet):
            return NotImplemented
        return self.keys() == other.keys() and all(torch.equal(self[k], other[k]) for k in self)

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        origin = ", inferred from zeros" if self._inferred else ""
        return f"MaskSet({len(self)} tensors, density={self.density:.4f}{origin})"

    # -- construction ------------------------------------------------------------------------------------
    @classmethod
    def from_module(cls, model: nn.Module, *, source: Literal["auto", "hooks", "zeros"] = "auto") -> MaskSet:
        """Read the masks of a pruned model.

        Args:
            model: any ``nn.Module``.
            source: ``"hooks"`` reads torch.nn.utils.prune buffers (stacked methods give their combined
                mask) and parametrizations that carry a ``mask`` tensor; ``"zeros"`` infers the masks of
                the prunable weights from exact zeros (marked ``inferred``); ``"auto"`` uses hooks when the
                model has any and zeros otherwise (a model pruned "permanently").
        """
        if source not in ("auto", "hooks", "zeros"):
            raise ValueError(f"source must be 'auto', 'hooks' or 'zeros', got {source!r}")
        if source in ("auto", "hooks"):
            found = attached_masks(model)
            if found or source == "hooks":
                return cls(found)
        zeros = {}
        for name in prunable_parameters(model):
            module, attr = find_parameter(model, name)
            zeros[name] = current_tensor(module, attr) != 0
        return cls(zeros, inferred=True)

    @classmethod
    def from_state_dict(cls, state_dict: Mapping[str, torch.Tensor]) -> MaskSet:
        """Read the torch.nn.utils.prune masks (``*_mask`` next to ``*_orig``) held in a state dict."""
        masks = {}
        for key, value in state_dict.items():
            if key.endswith("_mask") and f"{key[: -len('_mask')]}_orig" in state_dict:
                masks[key[: -len("_mask")]] = value != 0
        return cls(masks)

    @classmethod
    def for_model(cls, model: nn.Module, masks: Mapping[str, torch.Tensor] | None = None) -> MaskSet:
        """``masks`` checked against ``model`` (a ValueError says what does not fit), or the model's own."""
        if masks is None:
            return cls.from_module(model)
        mask_set = masks if isinstance(masks, MaskSet) else cls(masks)
        mask_set.validate(model)
        return mask_set

    @classmethod
    def dense(cls, model: nn.Module, names: list[str] | None = None) -> MaskSet:
        """All-True masks for ``names`` (default: every prunable weight of ``model``)."""
        names = prunable_parameters(model) if names is None else names
        return cls({n: torch.ones_like(current_tensor(*find_parameter(model, n)), dtype=torch.bool) for n in names})

    # -- densities ---------------------------------------------------------------------------------------
    @property
    def inferred(self) -> bool:
        """True when read from exact zeros (a permanently pruned model), not from a pruning mechanism."""
        return self._inferred

    @property
    def num_kept(self) -> int:
        """Number of kept (True) entries over all tensors."""
        return int(sum(int(m.sum()) for m in self._masks.values()))

    @property
    def num_total(self) -> int:
        """Number of entries over all tensors."""
        return int(sum(m.numel() for m in self._masks.values()))

    @property
    def density(self) -> float:
        """Global density: kept / total over every tensor in the set (1.0 for an empty set)."""
        total = self.num_total
        return self.num_kept / total if total else 1.0

    @property
    def sparsity(self) -> float:
        """``1 - density``."""
        return 1.0 - self.density

    def tensor_densities(self) -> dict[str, float]:
        """Density of each tensor, keyed by parameter name."""
        return {n: float(m.float().mean()) if m.numel() else 1.0 for n, m in self._masks.items()}

    def layer_densities(self) -> dict[str, float]:
        """Density of each layer (module): its masked tensors pooled (e.g. weight and bias together)."""
        kept: dict[str, int] = {}
        total: dict[str, int] = {}
        for name, mask in self._masks.items():
            layer = name.rpartition(".")[0]
            kept[layer] = kept.get(layer, 0) + int(mask.sum())
            total[layer] = total.get(layer, 0) + mask.numel()
        return {layer: kept[layer] / total[layer] if total[layer] else 1.0 for layer in kept}

    def fingerprint(self) -> str:
        """A short content hash (names, shapes and bits): equal masks give equal fingerprints."""
        digest = hashlib.blake2b(digest_size=12)
        for name in sorted(self._masks):
            mask = self._masks[name]
            digest.update(f"{name}:{tuple(mask.shape)};".encode())
            digest.update(np.packbits(mask.numpy().reshape(-1)).tobytes())
        return digest.hexdigest()

    # -- combination -------------------------------------------------------------------------------------
    def __and__(self, other: MaskSet) -> MaskSet:
        """Intersection; a tensor present in only one set keeps that set's mask."""
        merged = dict(self._masks)
        for name, mask in other.items():
            if name in merged:
                if merged[name].shape != mask.shape:
                    raise ValueError(f"mask {name!r}: shapes differ, {tuple(merged[name].shape)} vs {tuple(mask.shape)}")
                merged[name] = merged[name] & mask
            else:
                merged[name] = mask
        return MaskSet(merged, inferred=self._inferred and other.inferred)

    def to_dict(self) -> dict[str, torch.Tensor]:
        """A mutable copy: parameter name -> bool tensor."""
        return {n: m.clone() for n, m in self._masks.items()}

    # -- model interaction -------------------------------------------------------------------------------
    def validate(self, model: nn.Module) -> None:
        """Check that every name exists in ``model`` with the mask's shape.

        Raises:
            ValueError: naming the parameter, the expected shape and the shape given.
        """
        for name, mask in self._masks.items():
            module, attr = find_parameter(model, name)
            expected = tuple(current_tensor(module, attr).shape)
            if tuple(mask.shape) != expected:
                raise ValueError(f"mask {name!r}: expected shape {expected} (from the model), got {tuple(mask.shape)}")

    def apply_to(self, model: nn.Module) -> nn.Module:
        """Set the model's masks to exactly these, through torch.nn.utils.prune; returns ``model``.

        A tensor that is already pruned keeps its ``*_orig`` parameter (optimizers keep working) and has
        its mask buffer overwritten, so applying twice is idempotent and Lightning's ModelPruning can
        prune on top. Tensors not in this set are left as they are.
        """
        self.validate(model)
        parents = parent_map(model)  # one walk for all tensors
        for name, mask in self._masks.items():
            # A tied tensor is masked in every module that holds it, so the tie (one Parameter, held as
            # ``*_orig`` by each owner) survives and every use sees the same zeros.
            for module, attr in tensor_owners(model, name):
                attach_mask(model, module, attr, mask, parents=parents)
        return model

    # -- persistence (the file format lives in :mod:`.storage`) ------------------------------------------
    def save(self, path: str | Path) -> Path:
        """Write the masks as a safetensors file (no pickled code); returns the path."""
        return save_masks(self._masks, self._inferred, path)

    @classmethod
    def load(cls, path: str | Path, model: nn.Module | None = None, *, strict: bool = True) -> MaskSet:
        """Read masks written by :meth:`save`; with ``model``, check names and shapes against it.

        Args:
            path: a file written by :meth:`save`.
            model: when given, every mask must fit one of its parameters, and (``strict``) every prunable
                parameter of the model must have a mask.
            strict: with ``model``, refuse a file that leaves a prunable parameter out (``False`` accepts a
                subset: the parameters not in the file are left as they are).

        Raises:
            FileNotFoundError: no file at ``path``.
            ValueError: naming ``path``: not a safetensors file, not a MaskSet file, an unknown format version,
                bad metadata, non-bool tensors, or masks that do not fit ``model``.
        """
        masks, inferred = read_masks(path)
        loaded = cls(masks, inferred=inferred)
        if model is not None:
            try:
                loaded.validate(model)
            except ValueError as error:
                raise ValueError(f"{path}: {error}") from None
            missing = [name for name in prunable_parameters(model) if name not in masks]
            if strict and missing:
                raise ValueError(f"{path}: no mask for the model's prunable parameters {missing}; expected one for "
                                 f"each of {prunable_parameters(model)} (pass strict=False to load a subset)")
        return loaded


# -- masks in a live training run (the Lightning callbacks read them through these) ---------------------
_RESTORE_HOOK = "_prune_landscape_restore_hook"


def current_masks(model: nn.Module) -> MaskSet:
    """The masks of every prunable weight: from pruning hooks where attached, from exact zeros elsewhere.

    Mixing the two sources makes the result independent of *how* a tensor is pruned: a model whose
    ModelPruning masks were just made permanent reads the same bits as just before. The set is marked
    ``inferred`` when no tensor carries a pruning hook.
    """
    hooked = MaskSet.from_module(model, source="hooks")
    masks = {}
    for name in prunable_parameters(model):
        if name in hooked:
            masks[name] = hooked[name]
        else:
            module, attr = find_parameter(model, name)
            masks[name] = current_tensor(module, attr) != 0
    return MaskSet(masks, inferred=not any(name in hooked for name in masks))


def mask_version_key(model: nn.Module) -> tuple:
    """A key that changes whenever a pruning-mask buffer is added, replaced or written in place.

    Costs one pass over the modules and no device synchronisation (tensor identity and version
    counters only), so it can run before every training step. Masks held as exact zeros (no hooks) are
    invisible to it; those are compared at epoch boundaries instead.
    """
    key = []
    for module in model.modules():
        for name, buffer in module._buffers.items():
            if buffer is not None and name.endswith("_mask"):
                key.append((id(module), name, id(buffer), buffer._version))
    return tuple(key)





def _restore_pre_hook(module: nn.Module, state_dict: Mapping[str, Any], prefix: str, *args: Any) -> None:
    """Attach torch.nn.utils.prune masks named in ``state_dict`` before the module's tensors load.

    A checkpoint of a pruned model holds ``*_orig``/``*_mask`` keys; a fresh model has plain ``weight``
    parameters, so loading would fail (or, non-strict, silently drop the masks). Root pre-hooks run
    before any child is loaded, so re-attaching here makes the keys fit; the loaded buffers then carry
    the checkpoint's bits.
    """
    local = {key[len(prefix):]: value for key, value in state_dict.items() if key.startswith(prefix)}
    masks = MaskSet.from_state_dict(local)
    missing = {}
    for name, mask in masks.items():
        try:
            target, attr = find_parameter(module, name)
        except ValueError:
            continue
        if f"{attr}_mask" not in target._buffers:
            missing[name] = mask
    if missing:
        MaskSet(missing).apply_to(module)


def install_mask_restore_hook(pl_module: nn.Module) -> None:
    """Make ``pl_module.load_state_dict`` re-attach pruning masks found in the checkpoint (idempotent)."""
    if getattr(pl_module, _RESTORE_HOOK, None) is not None:
        return
    register = getattr(pl_module, "register_load_state_dict_pre_hook", None)
    if register is not None:
        handle = register(_restore_pre_hook)
    else:  # torch < 2.5 exposes only the private spelling
        handle = pl_module._register_load_state_dict_pre_hook(_restore_pre_hook, with_module=True)
    object.__setattr__(pl_module, _RESTORE_HOOK, handle)
