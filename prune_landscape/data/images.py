"""torchvision's image sets (MNIST, Fashion-MNIST, CIFAR-10/100) read from files under ``root``.

Nothing is downloaded unless ``download=True`` is asked for, and missing files raise a
:class:`FileNotFoundError` that names every file expected and where. torchvision is imported only when a
set is read (it is heavy to import).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
from torch.utils.data import Dataset, Subset

from prune_landscape.data.common import _check_max_samples

__all__ = ["TORCHVISION_DATASETS"]

#: The data sets read through torchvision (files under ``root``, downloaded only when asked).
TORCHVISION_DATASETS = ("mnist", "fashion_mnist", "cifar10", "cifar100")


@dataclass(frozen=True)
class _ImageSet:
    folder: str  # under root
    files: tuple[str, ...]  # every file torchvision requires, whichever split is read
    gzipped: bool  # whether hand-downloaded files may sit there as .gz
    shape: tuple[int, int, int]
    num_classes: int
    num_train: int
    num_test: int
    mean: tuple[float, ...]
    std: tuple[float, ...]


_IDX_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
# Per-channel mean/std of each training set's pixels in [0, 1] (the widely used published values).
_IMAGE_SETS = {
    "mnist": _ImageSet("MNIST/raw", _IDX_FILES, True, (1, 28, 28), 10, 60_000, 10_000, (0.1307,), (0.3081,)),
    "fashion_mnist": _ImageSet("FashionMNIST/raw", _IDX_FILES, True, (1, 28, 28), 10, 60_000, 10_000, (0.2860,), (0.3530,)),
    "cifar10": _ImageSet(
        "cifar-10-batches-py",
        (*(f"data_batch_{i}" for i in range(1, 6)), "test_batch", "batches.meta"),
        False, (3, 32, 32), 10, 50_000, 10_000, (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616),
    ),
    "cifar100": _ImageSet(
        "cifar-100-python", ("train", "test", "meta"),
        False, (3, 32, 32), 100, 50_000, 10_000, (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762),
    ),
}


class _RepeatChannels:
    """Repeat a one-channel image tensor ``count`` times (a class, not a lambda, so loaders can pickle it)."""

    def __init__(self, count: int):
        self.count = count

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        return image.repeat(self.count, 1, 1)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(count={self.count})"


def _missing_files(spec: _ImageSet, directory: str) -> list[str]:
    return [f for f in spec.files if not os.path.isfile(os.path.join(directory, f))]


def _missing_error(name: str, spec: _ImageSet, directory: str, missing: list[str], reason: str) -> FileNotFoundError:
    suffix = " (or the same name + .gz)" if spec.gzipped else ""
    return FileNotFoundError(
        f"{name}: {reason}. Expected these files in {os.path.abspath(directory)}{suffix}: {', '.join(spec.files)}; "
        f"missing: {', '.join(missing)}. Get them with load_dataset({name!r}, ..., download=True) on a machine "
        f"with a network (or DataModule(..., download=True)), then copy the folder here."
    )


def _unpack_gzipped(directory: str, missing: list[str]) -> None:
    # The idx files are published as .gz; torchvision reads them unpacked, so unpack hand-copied archives.
    from torchvision.datasets.utils import extract_archive

    for file in missing:
        archive = os.path.join(directory, file + ".gz")
        if os.path.isfile(archive):
            extract_archive(archive, directory)


def _image_transform(spec: _ImageSet, split: str, image_size: int | None, channels: int | None, augment: bool):
    from torchvision import transforms

    steps: list[Any] = []
    if image_size is not None:
        steps.append(transforms.Resize((image_size, image_size), antialias=True))
    if augment and split == "train":
        side = image_size or spec.shape[-1]
        steps += [transforms.RandomCrop(side, padding=side // 8), transforms.RandomHorizontalFlip()]
    steps += [transforms.ToTensor(), transforms.Normalize(spec.mean, spec.std)]
    if channels is not None and channels != spec.shape[0]:
        steps.append(_RepeatChannels(channels))
    return transforms.Compose(steps)


def _torchvision_dataset(
    name: str,
    split: str,
    *,
    root: str | os.PathLike = "data",
    download: bool = False,
    image_size: int | None = None,
    channels: int | None = None,
    augment: bool = False,
    max_samples: int | None = None,
) -> Dataset:
    from torchvision import datasets

    spec = _IMAGE_SETS[name]
    allowed_channels = sorted({spec.shape[0], 3})  # a grey image may be repeated to RGB, not the reverse
    if channels is not None and channels not in allowed_channels:
        raise ValueError(f"channels for {name} must be one of {allowed_channels}, got {channels!r}")
    if image_size is not None and (int(image_size) != image_size or image_size < 1):
        raise ValueError(f"image_size must be a positive integer or None, got {image_size!r}")
    _check_max_samples(max_samples)
    cls = {"mnist": datasets.MNIST, "fashion_mnist": datasets.FashionMNIST, "cifar10": datasets.CIFAR10,
           "cifar100": datasets.CIFAR100}[name]
    directory = os.path.join(os.fspath(root), spec.folder)
    missing = _missing_files(spec, directory)
    if missing and spec.gzipped:
        _unpack_gzipped(directory, missing)
        missing = _missing_files(spec, directory)
    transform = _image_transform(spec, split, image_size, channels, augment)
    if missing and download:
        try:
            cls(os.fspath(root), train=split == "train", download=True)
        except Exception as error:  # noqa: BLE001 - any network failure becomes the one clear error below
            missing = _missing_files(spec, directory)
            if missing:
                raise _missing_error(name, spec, directory, missing, f"download failed ({' '.join(str(error).split())})") from error
            raise
        missing = _missing_files(spec, directory)
    if missing:
        reason = "files still missing after download" if download else "files not found and download=False"
        raise _missing_error(name, spec, directory, missing, reason)
    try:
        dataset = cls(os.fspath(root), train=split == "train", transform=transform, download=False)
    except RuntimeError as error:
        # Every file exists (checked above), so CIFAR's refusal means an md5 mismatch: say so.
        cause = "their md5 checksums differ from the published ones" if not spec.gzipped else "they are unreadable"
        raise RuntimeError(
            f"{name}: torchvision rejected the files in {os.path.abspath(directory)} ({error}); {cause}. "
            f"Delete the folder and fetch it again with download=True."
        ) from error
    if max_samples is not None and max_samples < len(dataset):
        dataset = Subset(dataset, range(int(max_samples)))
    return dataset
