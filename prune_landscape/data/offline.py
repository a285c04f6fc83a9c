"""The offline data sets: scikit-learn's digits and a teacher-student task drawn from a seed.

Example:
    >>> x, y = teacher_student(100, 5, widths=(8,), outputs=3, task="classification")
    >>> tuple(x.shape), tuple(y.shape), y.dtype
    ((100, 5), (100,), torch.int64)
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from prune_landscape.data.common import _SPLITS, _TASKS, _check_max_samples, _check_split
from prune_landscape.models import MLP, mlp
from prune_landscape.options import with_keywords

__all__ = ["Teacher", "digits", "teacher_network", "teacher_student"]


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
    _check_digits_options(test_fraction, channels, image_size)
    _check_max_samples(max_samples)
    images, labels, train_index, test_index = _digit_images(image_size, test_fraction, seed)
    train_pixels = images[torch.as_tensor(train_index)]
    mean, std = train_pixels.mean(), train_pixels.std(correction=0)
    index = torch.as_tensor(train_index if split == "train" else test_index)
    if max_samples is not None:
        index = index[:max_samples]
    inputs = (images[index] - mean) / std
    if channels == 3:
        inputs = inputs.repeat(1, 3, 1, 1)
    return inputs.contiguous(), torch.as_tensor(labels, dtype=torch.long)[index]


def _check_digits_options(test_fraction: float, channels: int, image_size: int | None) -> None:
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 or 3, got {channels}")
    if image_size is not None and (int(image_size) != image_size or image_size < 1):
        raise ValueError(f"image_size must be a positive integer or None, got {image_size!r}")


def _digit_images(image_size: int | None, test_fraction: float, seed: int):
    """All 1,797 images in [0, 1] (resized when asked), their labels, and the stratified split's indices."""
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
    return images, labels, train_index, test_index


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


@dataclass(frozen=True)
class Teacher:
    """The dense teacher MLP of :func:`teacher_student`: hidden ``widths``, ``outputs`` and ``activation``.

    Example:
        >>> Teacher(widths=(4,), outputs=2).network(5).widths
        (5, 4, 2)
    """

    widths: Sequence[int] = (32,)
    outputs: int = 1
    activation: str = "relu"

    def network(self, d: int, seed: int = 0) -> MLP:
        """:func:`teacher_network` for ``d`` inputs, drawn from ``seed``."""
        return teacher_network(d, widths=self.widths, outputs=self.outputs, activation=self.activation, seed=seed)


def teacher_student(
    n: int,
    d: int,
    teacher: Teacher | None = None,
    *,
    task: str = "regression",
    noise: float = 0.0,
    seed: int = 0,
    split: str = "train",
    **teacher_knobs,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` Gaussian inputs in ``d`` dimensions labelled by a random dense teacher MLP (the theorems' setting).

    Inputs are N(0, I_d). The teacher is :func:`teacher_network` with the :class:`Teacher`'s settings
    (``widths``, ``outputs`` and ``activation`` are also accepted one by one as keywords, overriding
    ``teacher``). For ``task="regression"`` the targets are the teacher's outputs plus ``noise`` times
    standard Gaussian noise, shape ``(n, outputs)``; for ``"classification"`` they are the argmax over
    ``outputs >= 2`` (noisy) teacher logits, int64 ``(n,)``. Inputs and noise come from a torch.Generator
    seeded from ``(seed, split)``: the same arguments give the same tensors, and "train"/"test" share the
    teacher.

    Example:
        >>> x, y = teacher_student(100, 5, widths=(8,), outputs=3, task="classification")
        >>> tuple(x.shape), tuple(y.shape), y.dtype
        ((100, 5), (100,), torch.int64)
    """
    teacher = with_keywords(Teacher, teacher, teacher_knobs, where="teacher_student")
    _check_split(split)
    if int(n) != n or n < 1:
        raise ValueError(f"n must be a positive integer, got {n!r}")
    if task not in _TASKS:
        raise ValueError(f"task must be one of {_TASKS}, got {task!r}")
    if task == "classification" and teacher.outputs < 2:
        raise ValueError(f"classification needs outputs >= 2 teacher logits, got outputs={teacher.outputs}")
    if noise < 0:
        raise ValueError(f"noise must be >= 0, got {noise}")
    network = teacher.network(d, seed=seed)
    generator = torch.Generator().manual_seed(_split_seed(seed, split))
    inputs = torch.randn(int(n), int(d), generator=generator)
    outputs = network(inputs)
    if noise > 0:
        outputs = outputs + noise * torch.randn(outputs.shape, generator=generator)
    if task == "classification":
        return inputs, outputs.argmax(dim=1)
    return inputs, outputs
