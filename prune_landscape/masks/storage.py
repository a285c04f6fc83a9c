"""The MaskSet file: safetensors tensors (no pickled code) plus format, version and ``inferred`` metadata."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

__all__ = ["FORMAT", "FORMAT_VERSION", "read_masks", "save_masks"]

FORMAT = "prune_landscape.MaskSet"
FORMAT_VERSION = "1"


def save_masks(masks: Mapping[str, torch.Tensor], inferred: bool, path: str | Path) -> Path:
    """Write bool ``masks`` to ``path`` (parent folders made); returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    metadata = {"format": FORMAT, "version": FORMAT_VERSION, "inferred": json.dumps(bool(inferred))}
    save_file(dict(masks), str(path), metadata=metadata)
    return path


def _read_file(path: Path) -> tuple[dict[str, str], dict[str, torch.Tensor]]:
    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
            if metadata.get("format") != FORMAT:
                raise ValueError(f"{path} is not a {FORMAT} file: expected format metadata {FORMAT!r}, got "
                                 f"{metadata.get('format')!r}")
            if metadata.get("version") != FORMAT_VERSION:
                raise ValueError(f"{path}: unknown {FORMAT} format version {metadata.get('version')!r}; this "
                                 f"version reads {FORMAT_VERSION!r} (upgrade prune_landscape to read it)")
            return metadata, {name: handle.get_tensor(name) for name in handle.keys()}
    except ValueError:
        raise
    except Exception as error:  # safetensors raises its own error types for a corrupt or foreign file
        raise ValueError(f"{path} is not a readable {FORMAT} file (expected a safetensors file written by "
                         f"MaskSet.save): {type(error).__name__}: {error}") from None


def read_masks(path: str | Path) -> tuple[dict[str, torch.Tensor], bool]:
    """``(masks, inferred)`` from a file written by :func:`save_masks`.

    Raises:
        FileNotFoundError: no file at ``path``.
        ValueError: naming ``path``: not a safetensors file, not a MaskSet file, an unknown format version,
            bad metadata or non-bool tensors.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"expected a MaskSet file written by MaskSet.save at {path}, found nothing")
    metadata, masks = _read_file(path)
    try:
        inferred = json.loads(metadata.get("inferred", "false"))
    except json.JSONDecodeError:
        inferred = None
    if not isinstance(inferred, bool):
        raise ValueError(f"{path}: metadata 'inferred' must be 'true' or 'false', got {metadata.get('inferred')!r}")
    not_bool = sorted(name for name, mask in masks.items() if mask.dtype != torch.bool)
    if not_bool:
        raise ValueError(f"{path}: masks must be bool tensors, got {masks[not_bool[0]].dtype} for {not_bool[0]!r}")
    return masks, inferred
