"""Lightning adapters over :mod:`prune_landscape.data`: a data module by name, and one over plain tensors.

Constructor arguments are plain values (str/int/float/bool/lists) so Hydra can build these from
``_target_`` configs.

Example:
    >>> from prune_landscape.integrations.datamodules import DataModule
    >>> dm = DataModule("digits", batch_size=64, val_fraction=0.1)
    >>> dm.setup("fit")
    >>> x, y = next(iter(dm.train_dataloader()))
    >>> tuple(x.shape), dm.info.num_classes
    ((64, 1, 8, 8), 10)
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset, Sampler, TensorDataset, random_split

from prune_landscape.data import TORCHVISION_DATASETS, DatasetInfo, dataset_info, load_dataset

__all__ = ["DataModule", "EpochShuffleSampler", "TensorDataModule"]


def _check_loader_args(batch_size: int, num_workers: int) -> None:
    if isinstance(batch_size, bool) or int(batch_size) != batch_size or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    if isinstance(num_workers, bool) or int(num_workers) != num_workers or num_workers < 0:
        raise ValueError(f"num_workers must be a non-negative integer, got {num_workers!r}")


class EpochShuffleSampler(Sampler[int]):
    """A random order of ``range(size)`` that is a pure function of ``(seed, epoch)``.

    Lightning calls :meth:`set_epoch` before every epoch (and restores the epoch counter from a
    checkpoint), so a run resumed at epoch k draws epoch k's order, not epoch 0's again: resumed runs are
    bit-identical to uninterrupted ones. Outside Lightning each full pass moves on to the next epoch.

    Example:
        >>> sampler = EpochShuffleSampler(5, seed=0)
        >>> first, second = list(sampler), list(sampler)
        >>> sampler.set_epoch(1); list(sampler) == second
        True
    """

    def __init__(self, size: int, seed: int = 0):
        self.size, self.seed, self.epoch = int(size), int(seed), 0

    def set_epoch(self, epoch: int) -> None:
        """The epoch whose order the next pass draws."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.size

    def __iter__(self) -> Iterator[int]:
        # one stream per (seed, epoch): no state carried from earlier passes, so nothing to lose on resume
        generator = torch.Generator().manual_seed((self.seed * 1_000_003 + self.epoch) % (2**63))
        order = torch.randperm(self.size, generator=generator).tolist()
        self.epoch += 1
        return iter(order)


class _Loaders:
    """DataLoader construction shared by both modules: per-epoch seeded shuffling for train, fixed order otherwise."""

    batch_size: int
    num_workers: int
    seed: int

    def _loader(self, dataset: Dataset | None, *, shuffle: bool) -> DataLoader | list:
        if dataset is None:
            return []  # Lightning reads an empty list as "no batches for this stage"
        return DataLoader(
            dataset,
            batch_size=self.batch_size,
            sampler=EpochShuffleSampler(len(dataset), self.seed) if shuffle else None,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
        )


class DataModule(_Loaders, pl.LightningDataModule):
    """Train/val/test loaders over ``load_dataset(name, split, **dataset_options)``.

    The validation set, when ``val_fraction > 0``, is a seeded random share of the train split; with the
    default 0 there is no validation loader. Training batches are shuffled in an order drawn from
    ``(seed, epoch)`` (:class:`EpochShuffleSampler`), so a run resumed from a checkpoint sees the same
    batches as an uninterrupted one.

    Args:
        name: one of :data:`prune_landscape.data.DATASETS`.
        batch_size: samples per batch in every loader.
        root: folder of the torchvision data sets (ignored by digits and teacher_student).
        download: let torchvision download missing files (needs a network), done once in ``prepare_data``.
        num_workers: DataLoader worker processes.
        val_fraction: share of the train split held out for validation, in [0, 1).
        seed: seeds the validation split and the training shuffle.
        **dataset_options: passed to :func:`~prune_landscape.data.load_dataset` (e.g. ``image_size``).

    Example:
        >>> dm = DataModule("teacher_student", batch_size=32, n=128, d=4)
        >>> dm.info.input_shape
        (4,)
    """

    def __init__(
        self,
        name: str,
        *,
        batch_size: int = 128,
        root: str = "data",
        download: bool = False,
        num_workers: int = 0,
        val_fraction: float = 0.0,
        seed: int = 0,
        **dataset_options: Any,
    ):
        super().__init__()
        _check_loader_args(batch_size, num_workers)
        if not 0.0 <= val_fraction < 1.0:
            raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
        self.name = name
        self.batch_size = int(batch_size)
        self.num_workers = int(num_workers)
        self.val_fraction = float(val_fraction)
        self.seed = int(seed)
        self.download = bool(download)
        self.dataset_options = dict(dataset_options)
        if name in TORCHVISION_DATASETS:
            self.dataset_options.update(root=str(root), download=self.download)
        # Validates the name and options now, before any file is touched.
        self.info: DatasetInfo = dataset_info(name, **self.dataset_options)
        self.save_hyperparameters()
        self.train_set: Dataset | None = None
        self.val_set: Dataset | None = None
        self.test_set: Dataset | None = None

    def prepare_data(self) -> None:
        # Lightning calls this on one process only: the place to download.
        if self.download and self.name in TORCHVISION_DATASETS:
            for split in ("train", "test"):
                load_dataset(self.name, split, **self.dataset_options)

    def setup(self, stage: str | None = None) -> None:
        if stage in (None, "fit", "validate") and self.train_set is None:
            train = load_dataset(self.name, "train", **self.dataset_options)
            if self.val_fraction > 0:
                num_val = max(1, round(self.val_fraction * len(train)))
                split = random_split(train, [len(train) - num_val, num_val], generator=torch.Generator().manual_seed(self.seed))
                self.train_set, self.val_set = split[0], split[1]
            else:
                self.train_set = train
        if stage in (None, "test", "predict") and self.test_set is None:
            self.test_set = load_dataset(self.name, "test", **self.dataset_options)

    def train_dataloader(self) -> DataLoader:
        if self.train_set is None:
            self.setup("fit")
        return self._loader(self.train_set, shuffle=True)

    def val_dataloader(self) -> DataLoader | list:
        return self._loader(self.val_set, shuffle=False)

    def test_dataloader(self) -> DataLoader:
        if self.test_set is None:
            self.setup("test")
        return self._loader(self.test_set, shuffle=False)


class TensorDataModule(_Loaders, pl.LightningDataModule):
    """Loaders over in-memory ``(inputs, targets)`` tensor pairs; a missing split gives no batches.

    Example:
        >>> import torch
        >>> dm = TensorDataModule(train=(torch.randn(10, 3), torch.zeros(10)), batch_size=4)
        >>> [len(x) for x, _ in dm.train_dataloader()]
        [4, 4, 2]
    """

    def __init__(
        self,
        train: tuple[torch.Tensor, torch.Tensor],
        val: tuple[torch.Tensor, torch.Tensor] | None = None,
        test: tuple[torch.Tensor, torch.Tensor] | None = None,
        *,
        batch_size: int = 128,
        num_workers: int = 0,
        seed: int = 0,
        shuffle: bool = True,
    ):
        super().__init__()
        _check_loader_args(batch_size, num_workers)
        self.batch_size, self.num_workers, self.seed, self.shuffle = int(batch_size), int(num_workers), int(seed), bool(shuffle)
        self.train_set = self._dataset("train", train)
        if self.train_set is None:
            raise ValueError("train must be an (inputs, targets) pair of tensors, got None")
        self.val_set = self._dataset("val", val)
        self.test_set = self._dataset("test", test)

    @staticmethod
    def _dataset(split: str, pair: Any) -> TensorDataset | None:
        if pair is None:
            return None
        if not (isinstance(pair, (tuple, list)) and len(pair) == 2 and all(isinstance(t, torch.Tensor) for t in pair)):
            raise ValueError(f"{split} must be an (inputs, targets) pair of tensors, got {type(pair).__name__}")
        if pair[0].shape[0] != pair[1].shape[0]:
            raise ValueError(
                f"{split} inputs and targets must have equal first dimensions, got {pair[0].shape[0]} and {pair[1].shape[0]}"
            )
        return TensorDataset(pair[0], pair[1])

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_set, shuffle=self.shuffle)

    def val_dataloader(self) -> DataLoader | list:
        return self._loader(self.val_set, shuffle=False)

    def test_dataloader(self) -> DataLoader | list:
        return self._loader(self.test_set, shuffle=False)
