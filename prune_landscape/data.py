"""Built-in data: scikit-learn's digits and a teacher-student task (offline), and torchvision's image sets.

Everything here returns plain tensors or a ``torch.utils.data.Dataset``; the Lightning adapter lives in
:mod:`prune_landscape.integrations.datamodules`. Nothing is downloaded unless ``download=True`` is asked for, and
missing files raise a :class:`FileNotFoundError` that names every file expected and where.

Example:
    >>> from prune_landscape.data import dataset_info, digits
    >>> inputs, targets = digits("train")
    >>> tuple(inputs.shape), targets.dtype, dataset_info("digits").num_test
    ((1347, 1, 8, 8), torch.int64, 450)
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch.utils.data import Dataset, Subset, TensorDataset

from prune_landscape.models import MLP, mlp

__all__ = ["DATASETS", "TORCHVISION_DATASETS", "DatasetInfo", "dataset_info", "digits", "load_dataset", "teacher_network", "teacher_student"]

#: The data sets read through torchvision (files under ``root``, downloaded only when asked).
TORCHVISION_DATASETS = ("mnist", "fashion_mnist", "cifar10", "cifar100")
#: Names accepted by :func:`load_dataset` and :func:`dataset_info`.
DATASETS: tuple[str, ...] = ("digits", "teacher_student", *TORCHVISION_DATASETS)
_SPLITS = ("train", "test")
_TASKS = ("regression", "classification")


@dataclass(frozen=True)
class DatasetInfo:
    """What a model needs to know about a data set: per-sample input shape, classes, task and sizes."""

    name: str
    input_shape: tuple[int, ...]
    num_classes: int | None
    task: str
    num_train: int
    num_test: int


def _check_split(split: str) -> None:
    if split not in _SPLITS:
        raise ValueError(f"split must be one of {_SPLITS}, got {split!r}")


def _check_max_samples(max_samples: int | None) -> None:
    if max_samples is not None and (isinstance(max_samples, bool) or int(max_samples) != max_samples or max_samples < 1):
        raise ValueError(f"max_samples must be a positive integer or None, got {max_samples!r}")


def _cap(count: int, max_samples: int | None) -> int:
    return count if max_samples is None else min(count, int(max_samples))


# --------------------------------------------------------------------------------------------- digits
_DIGITS_SAMPLES = 1797


def _digits_split_sizes(test_fraction: float) -> tuple[int, int]:
    # scikit-learn's train_test_split rounds the test share up.
    num_test = math.ceil(test_fraction * _DIGITS_SAMPLES)
    return _DIGITS_SAMPLES - num_test, num_test


def digits(
    split: str = "train",
    *,
    image_size: int | None = None,
    channels: int = 1,
    seed: int = 0,
    test_fraction: float = 0.25,
    max_samples: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """scikit-learn's 8x8 handwritten digits (1,797 images, 10 classes), standardised, as tensors.

    The train/test split is stratified by class and drawn from ``seed``. Pixels (0..16) are scaled to
    [0, 1], resized when ``image_size`` is given (bilinear), then standardised with the mean and
    (population) standard deviation of all train-split pixels, so the train inputs have mean 0 and std 1
    and both splits share one affine map. ``channels=3`` repeats the grey channel.

    Args:
        split: "train" or "test".
        image_size: side of the returned images (default 8). ``image_size=32, channels=3`` feeds CIFAR nets.
        channels: 1 or 3.
        seed: seeds the stratified split.
        test_fraction: share of samples in the test split, in (0, 1).
        max_samples: keep only the first this many samples of the (already shuffled) split.

    Returns:
        ``(inputs, targets)``: float32 ``(N, channels, size, size)`` and int64 ``(N,)``.

    Example:
        >>> x, y = digits("test", image_size=32, channels=3)
        >>> tuple(x.shape)
        (450, 3, 32, 32)
    """
    _check_split(split)
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 or 3, got {channels}")
    if image_size is not None and (int(image_size) != image_size or image_size < 1):
        raise ValueError(f"image_size must be a positive integer or None, got {image_size!r}")
    _check_max_samples(max_samples)

    from sklearn.datasets import load_digits  # sklearn is heavy to import; only digits needs it
    from sklearn.model_selection import train_test_split

    bunch = load_digits()
    labels = bunch.target
    train_index, test_index = train_test_split(
        range(len(labels)), test_size=test_fraction, stratify=labels, random_state=seed, shuffle=True
    )
    images = torch.as_tensor(bunch.images, dtype=torch.float32).unsqueeze(1) / 16.0
    if image_size is not None and image_size != images.shape[-1]:
        images = torch.nn.functional.interpolate(images, size=(image_size, image_size), mode="bilinear", align_corners=False)
    train_pixels = images[torch.as_tensor(train_index)]
    mean, std = train_pixels.mean(), train_pixels.std(correction=0)
    index = torch.as_tensor(train_index if split == "train" else test_index)
    if max_samples is not None:
        index = index[:max_samples]
    inputs = (images[index] - mean) / std
    if channels == 3:
        inputs = inputs.repeat(1, 3, 1, 1)
    return inputs.contiguous(), torch.as_tensor(labels, dtype=torch.long)[index]


# ------------------------------------------------------------------------------------ teacher-student
def _split_seed(seed: int, split: str) -> int:
    # The teacher is drawn from `seed`; each split's inputs from its own stream, so train and test share
    # the teacher but never the samples.
    return int(seed) * 1_000_003 + 1 + _SPLITS.index(split)


_TEACHER_REFERENCE_SAMPLES = 4096


def teacher_network(d: int, *, widths: Sequence[int] = (32,), outputs: int = 1, activation: str = "relu", seed: int = 0) -> MLP:
    """The dense teacher of :func:`teacher_student`: ``mlp([d, *widths, outputs], activation)``.

    Drawn from ``torch.Generator().manual_seed(seed)``: every weight is Gaussian with std
    ``gain / sqrt(fan_in)`` (``torch.nn.init.calculate_gain(activation)`` on hidden layers, 1 where the
    activation has no standard gain and on the output layer), so signals keep their scale with depth;
    hidden biases are 0; the output bias centres every output over 4,096 N(0, I_d) draws from the same
    generator, so argmax labels use all classes. Returned in eval mode with gradients off; the global RNG
    is left untouched.

    Example:
        >>> teacher_network(5, widths=(4,), outputs=2).widths
        (5, 4, 2)
    """
    if int(d) != d or d < 1:
        raise ValueError(f"d must be a positive integer, got {d!r}")
    if int(outputs) != outputs or outputs < 1:
        raise ValueError(f"outputs must be a positive integer, got {outputs!r}")
    with torch.random.fork_rng(devices=[]):  # nn.Linear draws a throwaway init from the global RNG
        teacher = mlp([int(d), *[int(w) for w in widths], int(outputs)], activation=activation)
    try:
        hidden_gain = torch.nn.init.calculate_gain(activation)
    except ValueError:  # gelu, silu, softplus: no standard gain
        hidden_gain = 1.0
    generator = torch.Generator().manual_seed(int(seed))
    layers = [m for m in teacher if isinstance(m, torch.nn.Linear)]
    teacher.requires_grad_(False)
    for index, layer in enumerate(layers):
        gain = hidden_gain if index < len(layers) - 1 else 1.0
        layer.weight.copy_(torch.randn(layer.weight.shape, generator=generator) * (gain / layer.in_features**0.5))
        layer.bias.zero_()
    reference = torch.randn(_TEACHER_REFERENCE_SAMPLES, int(d), generator=generator)
    layers[-1].bias.copy_(-teacher(reference).mean(dim=0))
    return teacher.eval()


def teacher_student(
    n: int,
    d: int,
    *,
    widths: Sequence[int] = (32,),
    outputs: int = 1,
    task: str = "regression",
    activation: str = "relu",
    noise: float = 0.0,
    seed: int = 0,
    split: str = "train",
) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` Gaussian inputs in ``d`` dimensions labelled by a random dense teacher MLP (the theorems' setting).

    Inputs are N(0, I_d). The teacher is :func:`teacher_network` with the same arguments. For
    ``task="regression"`` the targets are the teacher's outputs plus ``noise`` times standard Gaussian
    noise, shape ``(n, outputs)``; for ``"classification"`` they are the argmax over ``outputs >= 2``
    (noisy) teacher logits, int64 ``(n,)``. Inputs and noise come from a torch.Generator seeded from
    ``(seed, split)``: the same arguments give the same tensors, and "train"/"test" share the teacher.

    Example:
        >>> x, y = teacher_student(100, 5, widths=(8,), outputs=3, task="classification")
        >>> tuple(x.shape), tuple(y.shape), y.dtype
        ((100, 5), (100,), torch.int64)
    """
    _check_split(split)
    if int(n) != n or n < 1:
        raise ValueError(f"n must be a positive integer, got {n!r}")
    if task not in _TASKS:
        raise ValueError(f"task must be one of {_TASKS}, got {task!r}")
    if task == "classification" and outputs < 2:
        raise ValueError(f"classification needs outputs >= 2 teacher logits, got outputs={outputs}")
    if noise < 0:
        raise ValueError(f"noise must be >= 0, got {noise}")
    teacher = teacher_network(d, widths=widths, outputs=outputs, activation=activation, seed=seed)
    generator = torch.Generator().manual_seed(_split_seed(seed, split))
    inputs = torch.randn(int(n), int(d), generator=generator)
    outputs_ = teacher(inputs)
    if noise > 0:
        outputs_ = outputs_ + noise * torch.randn(outputs_.shape, generator=generator)
    if task == "classification":
        return inputs, outputs_.argmax(dim=1)
    return inputs, outputs_


# ------------------------------------------------------------------------------------------ torchvision
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


# ----------------------------------------------------------------------------------------- dispatch
_OPTIONS = {
    "digits": {"image_size", "channels", "seed", "test_fraction", "max_samples"},
    "teacher_student": {"n", "n_test", "d", "widths", "outputs", "task", "activation", "noise", "seed"},
    **{name: {"root", "download", "image_size", "channels", "augment", "max_samples"} for name in TORCHVISION_DATASETS},
}
_TEACHER_DEFAULTS = {"n": 1024, "n_test": None, "d": 16}


def _check_name_and_options(name: str, options: dict[str, Any], ignore: tuple[str, ...] = ()) -> None:
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; expected one of {list(DATASETS)}")
    unknown = sorted(set(options) - _OPTIONS[name] - set(ignore))
    if unknown:
        raise TypeError(f"{name} does not take options {unknown}; it takes {sorted(_OPTIONS[name])}")


def load_dataset(name: str, split: str = "train", **options: Any) -> Dataset:
    """A built-in data set by name as a torch ``Dataset`` of ``(input, target)`` pairs.

    Args:
        name: one of :data:`DATASETS`.
        split: "train" or "test".
        **options: per data set (unknown ones raise ``TypeError``):
            digits: ``image_size, channels, seed, test_fraction, max_samples`` (see :func:`digits`);
            teacher_student: ``n`` (train size, default 1024), ``n_test`` (default ``n``), ``d``
            (default 16), ``widths, outputs, task, activation, noise, seed`` (see :func:`teacher_student`);
            mnist / fashion_mnist / cifar10 / cifar100: ``root="data"``, ``download=False``,
            ``image_size``, ``channels`` (3 repeats a grey channel), ``augment`` (train split: random crop
            with padding size/8 and horizontal flip, drawn from torch's global RNG), ``max_samples``
            (the first samples). Images are ``ToTensor`` + ``Normalize`` with the data set's mean/std.

    Raises:
        ValueError: unknown name or split. FileNotFoundError: image files missing (names them).

    Example:
        >>> len(load_dataset("teacher_student", "test", n=64, n_test=32, d=4))
        32
    """
    _check_name_and_options(name, options)
    _check_split(split)
    if name == "digits":
        return TensorDataset(*digits(split, **options))
    if name == "teacher_student":
        settings = {**_TEACHER_DEFAULTS, **options}
        n, n_test = settings.pop("n"), settings.pop("n_test")
        if split == "test" and n_test is not None:
            n = n_test
        return TensorDataset(*teacher_student(n, settings.pop("d"), split=split, **settings))
    return _torchvision_dataset(name, split, **options)


def dataset_info(name: str, **options: Any) -> DatasetInfo:
    """Shapes, classes and sizes of ``load_dataset(name, ..., **options)`` without reading any file.

    Options that do not change the answer (``root``, ``download``, ``seed``, ...) are accepted.

    Example:
        >>> dataset_info("cifar10", image_size=64).input_shape
        (3, 64, 64)
    """
    _check_name_and_options(name, options)
    max_samples = options.get("max_samples")
    _check_max_samples(max_samples)
    if name == "digits":
        num_train, num_test = _digits_split_sizes(options.get("test_fraction", 0.25))
        side = options.get("image_size") or 8
        return DatasetInfo(name, (options.get("channels", 1), side, side), 10, "classification",
                           _cap(num_train, max_samples), _cap(num_test, max_samples))
    if name == "teacher_student":
        settings = {**_TEACHER_DEFAULTS, **options}
        task = settings.get("task", "regression")
        if task not in _TASKS:
            raise ValueError(f"task must be one of {_TASKS}, got {task!r}")
        n_test = settings["n_test"] if settings["n_test"] is not None else settings["n"]
        return DatasetInfo(name, (int(settings["d"]),), int(settings.get("outputs", 1)) if task == "classification" else None,
                           task, int(settings["n"]), int(n_test))
    spec = _IMAGE_SETS[name]
    side = options.get("image_size") or spec.shape[-1]
    channels = options.get("channels") or spec.shape[0]
    return DatasetInfo(name, (channels, side, side), spec.num_classes, "classification",
                       _cap(spec.num_train, max_samples), _cap(spec.num_test, max_samples))
