"""The built-in data sets by name: :func:`load_dataset` and :func:`dataset_info` (shapes without reading files)."""

from __future__ import annotations

from typing import Any

from torch.utils.data import Dataset, TensorDataset

from prune_landscape.data.common import _TASKS, DatasetInfo, _cap, _check_max_samples, _check_split
from prune_landscape.data.images import _IMAGE_SETS, TORCHVISION_DATASETS, _torchvision_dataset
from prune_landscape.data.offline import _digits_split_sizes, digits, teacher_student

__all__ = ["DATASETS", "dataset_info", "load_dataset"]

#: Names accepted by :func:`load_dataset` and :func:`dataset_info`.
DATASETS: tuple[str, ...] = ("digits", "teacher_student", *TORCHVISION_DATASETS)
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
