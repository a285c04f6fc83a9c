"""Built-in data: digits and teacher-student against independent recomputation; torchvision sets read
from small files this test writes in the real on-disk formats (idx, idx.gz, CIFAR pickles)."""

from __future__ import annotations

import gzip
import os
import pickle
import struct
import subprocess
import sys
from urllib.error import URLError

import numpy as np
import pytest
import torch
import torchvision
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

from prune_landscape import models
from prune_landscape.data import DATASETS, DatasetInfo, dataset_info, digits, load_dataset, teacher_network, teacher_student
from prune_landscape.integrations.datamodules import DataModule, TensorDataModule

MNIST_STATS = ((0.1307,), (0.3081,))
FASHION_STATS = ((0.2860,), (0.3530,))
CIFAR10_STATS = ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616))
CIFAR100_STATS = ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762))


# ------------------------------------------------------------------------------------------- writers
def _write_idx(path, array: np.ndarray, gz: bool = False) -> None:
    # idx format: magic (0, 0, type 0x08 = uint8, ndim), then each dimension as big-endian uint32, then bytes.
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    payload = header + array.astype(np.uint8).tobytes()
    if gz:
        with gzip.open(str(path) + ".gz", "wb") as f:
            f.write(payload)
    else:
        with open(path, "wb") as f:
            f.write(payload)


def _write_mnist_like(root, folder: str, gz: bool = False, sizes=(20, 7)) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    raw = root / folder / "raw"
    raw.mkdir(parents=True)
    rng = np.random.RandomState(0)
    written = {}
    for split, prefix, count in (("train", "train", sizes[0]), ("test", "t10k", sizes[1])):
        images = rng.randint(0, 256, size=(count, 28, 28)).astype(np.uint8)
        labels = rng.randint(0, 10, size=count).astype(np.uint8)
        _write_idx(raw / f"{prefix}-images-idx3-ubyte", images, gz)
        _write_idx(raw / f"{prefix}-labels-idx1-ubyte", labels, gz)
        written[split] = (images, labels)
    return written


def _dump(path, entry: dict) -> None:
    # The real files are Python 2 pickles whose str keys load as str under torchvision's encoding="latin1";
    # a Python 3 pickle with str keys reproduces exactly what torchvision sees (bytes keys would not).
    with open(path, "wb") as f:
        pickle.dump(entry, f, protocol=2)


def _write_cifar(root, hundred: bool) -> dict[str, tuple[np.ndarray, list[int]]]:
    rng = np.random.RandomState(1)
    folder = root / ("cifar-100-python" if hundred else "cifar-10-batches-py")
    folder.mkdir(parents=True)
    classes = 100 if hundred else 10
    files = {"train": ["train"], "test": ["test"]} if hundred else {
        "train": [f"data_batch_{i}" for i in range(1, 6)], "test": ["test_batch"]}
    written = {}
    for split, names in files.items():
        rows, labels = [], []
        for name in names:
            data = rng.randint(0, 256, size=(4 if split == "train" else 6, 3 * 32 * 32)).astype(np.uint8)  # rows: R, G, B planes
            label = [int(v) for v in rng.randint(0, classes, size=data.shape[0])]
            entry = {"batch_label": f"{name} of test", "data": data, "filenames": [f"{i}.png" for i in range(len(label))]}
            if hundred:
                entry.update(fine_labels=label, coarse_labels=[v // 5 for v in label])
            else:
                entry["labels"] = label
            _dump(folder / name, entry)
            rows.append(data)
            labels += label
        written[split] = (np.concatenate(rows), labels)
    if hundred:
        _dump(folder / "meta", {"fine_label_names": [f"c{i}" for i in range(100)], "coarse_label_names": [f"s{i}" for i in range(20)]})
    else:
        _dump(folder / "batches.meta", {"label_names": [f"c{i}" for i in range(10)], "num_cases_per_batch": 4, "num_vis": 3072})
    return written


@pytest.fixture
def skip_cifar_md5(monkeypatch):
    # Our files are not the published ones: drop torchvision's md5 list here in the test (check_integrity
    # with md5=None checks only that the file exists); the library itself never skips the check.
    for cls in (torchvision.datasets.CIFAR10, torchvision.datasets.CIFAR100):
        monkeypatch.setattr(cls, "train_list", [[name, None] for name, _ in cls.train_list])
        monkeypatch.setattr(cls, "test_list", [[name, None] for name, _ in cls.test_list])
        monkeypatch.setattr(cls, "meta", {**cls.meta, "md5": None})


def _normalised(images_uint8: torch.Tensor, stats) -> torch.Tensor:
    mean, std = (torch.tensor(s).view(-1, 1, 1) for s in stats)
    return (images_uint8.float() / 255.0 - mean) / std


def _stack(dataset) -> tuple[torch.Tensor, torch.Tensor]:
    items = [dataset[i] for i in range(len(dataset))]
    return torch.stack([x for x, _ in items]), torch.tensor([int(y) for _, y in items])


# -------------------------------------------------------------------------------------------- digits
def _digits_oracle(seed: int, size: int | None = None):
    bunch = load_digits()
    train_index, test_index = train_test_split(np.arange(len(bunch.target)), test_size=0.25, stratify=bunch.target, random_state=seed)
    images = torch.tensor(bunch.images, dtype=torch.float32).unsqueeze(1) / 16
    if size is not None:
        images = torch.nn.functional.interpolate(images, size=(size, size), mode="bilinear", align_corners=False)
    train = images[train_index]
    mean, std = train.mean(), train.std(correction=0)
    return (images - mean) / std, torch.tensor(bunch.target), train_index, test_index


def test_digits_split_standardisation_and_stratification():
    x_train, y_train = digits("train")
    x_test, y_test = digits("test")
    assert x_train.shape == (1347, 1, 8, 8) and x_test.shape == (450, 1, 8, 8)
    assert x_train.dtype == torch.float32 and y_train.dtype == torch.long
    assert abs(x_train.mean().item()) < 1e-5 and abs(x_train.std(correction=0).item() - 1) < 1e-5
    expected, labels, train_index, test_index = _digits_oracle(seed=0)
    torch.testing.assert_close(x_train, expected[train_index])
    torch.testing.assert_close(x_test, expected[test_index])
    assert torch.equal(y_test, labels[test_index])
    full_counts = torch.bincount(labels, minlength=10)
    assert torch.equal(torch.bincount(y_train, minlength=10) + torch.bincount(y_test, minlength=10), full_counts)
    # Stratified: every class's test share is within one sample of 25 %.
    assert torch.all((torch.bincount(y_test, minlength=10) - 0.25 * full_counts).abs() <= 1)


def test_digits_seed_decides_the_split():
    a, b, c = digits("test", seed=3), digits("test", seed=3), digits("test", seed=4)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[1], c[1])
    assert len(digits("train", max_samples=100)[0]) == 100
    with pytest.raises(ValueError, match="test_fraction must be in"):
        digits(test_fraction=1.0)
    with pytest.raises(ValueError, match="channels must be 1 or 3, got 2"):
        digits(channels=2)


def test_digits_upsampled_runs_resnet20():
    x, y = digits("train", image_size=32, channels=3, max_samples=16)
    assert x.shape == (16, 3, 32, 32)
    expected, labels, train_index, _ = _digits_oracle(seed=0, size=32)
    torch.testing.assert_close(x, expected[train_index[:16]].repeat(1, 3, 1, 1))
    full, _ = digits("train", image_size=32)
    assert abs(full.mean().item()) < 1e-5 and abs(full.std(correction=0).item() - 1) < 1e-5
    assert models.resnet20().eval()(x).shape == (16, 10)


# ----------------------------------------------------------------------------------- teacher-student
def _documented_teacher(d, widths, outputs, seed, gain):
    # The docstring's recipe, redone by hand: Gaussian weights std gain/sqrt(fan_in) (1 on the output layer),
    # zero hidden biases, output bias = minus the mean output over 4,096 N(0, I) draws; in float64.
    generator = torch.Generator().manual_seed(seed)
    sizes = [d, *widths, outputs]
    weights = [torch.randn(fan_out, fan_in, generator=generator) * ((gain if i < len(sizes) - 2 else 1.0) / fan_in**0.5)
               for i, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:]))]
    weights = [w.double() for w in weights]

    def forward(x):
        h = x.double()
        for w in weights[:-1]:
            h = torch.relu(h @ w.T)
        return h @ weights[-1].T

    reference = torch.randn(4096, d, generator=generator)
    bias = -forward(reference).mean(0)
    return lambda x: forward(x) + bias


def test_teacher_student_targets_are_the_teachers_outputs():
    state = torch.get_rng_state()
    x, y = teacher_student(3000, 6, widths=(12, 8), outputs=2, seed=5)
    assert torch.equal(torch.get_rng_state(), state)  # the global RNG is never drawn from
    again = teacher_student(3000, 6, widths=(12, 8), outputs=2, seed=5)
    assert torch.equal(x, again[0]) and torch.equal(y, again[1])
    oracle = _documented_teacher(6, (12, 8), 2, seed=5, gain=2**0.5)
    torch.testing.assert_close(y.double(), oracle(x), rtol=1e-5, atol=1e-5)
    assert y.shape == (3000, 2) and y.std() > 0.3 and y.mean(0).abs().max() < 0.1
    # N(0, I_d) inputs: sample mean and covariance of 3,000 draws.
    assert x.mean(0).abs().max() < 0.1 and (torch.cov(x.T) - torch.eye(6)).abs().max() < 0.1


def test_teacher_student_splits_labels_and_noise():
    x_test, y_test = teacher_student(500, 4, widths=(16,), outputs=5, task="classification", seed=2, split="test")
    x_train, _ = teacher_student(500, 4, widths=(16,), outputs=5, task="classification", seed=2)
    teacher = teacher_network(4, widths=(16,), outputs=5, seed=2)
    assert y_test.dtype == torch.long and torch.equal(y_test, teacher(x_test).argmax(1))
    assert not torch.allclose(x_train, x_test)
    assert torch.bincount(y_test, minlength=5).min() > 0  # the centred output bias spreads the labels
    x, y = teacher_student(4000, 4, widths=(16,), noise=0.5, seed=2)
    residual = y - teacher_network(4, widths=(16,), seed=2)(x)
    assert abs(residual.std().item() - 0.5) < 0.03
    with pytest.raises(ValueError, match="outputs >= 2"):
        teacher_student(10, 3, task="classification", outputs=1)


def test_a_teacher_value_and_loose_keywords_draw_the_same_task():
    from prune_landscape.data import Teacher

    x, y = teacher_student(200, 5, widths=(7, 3), outputs=4, activation="relu", seed=1)
    teacher = Teacher(widths=(7, 3), outputs=4)
    for other in (teacher_student(200, 5, teacher, seed=1),
                  teacher_student(200, 5, Teacher(widths=(7, 3), activation="tanh"), outputs=4, activation="relu", seed=1)):
        assert torch.equal(x, other[0]) and torch.equal(y, other[1])  # keywords override the value's fields
    torch.testing.assert_close(y.double(), _documented_teacher(5, (7, 3), 4, seed=1, gain=2**0.5)(x), rtol=1e-5, atol=1e-5)
    assert teacher.network(5, seed=1).widths == (5, 7, 3, 4)
    with pytest.raises(TypeError, match=r"teacher_student\(\) got an unexpected keyword argument 'width'; expected one "
                                        r"of \['widths', 'outputs', 'activation'\]"):
        teacher_student(10, 3, width=(4,))


# ---------------------------------------------------------------------------------- torchvision sets
@pytest.mark.parametrize("name, folder, stats, gz", [
    ("mnist", "MNIST", MNIST_STATS, False),
    ("fashion_mnist", "FashionMNIST", FASHION_STATS, True),  # hand-copied .gz files are unpacked
])
def test_mnist_like_files_load_normalised(tmp_path, name, folder, stats, gz):
    written = _write_mnist_like(tmp_path, folder, gz=gz)
    for split in ("train", "test"):
        images, labels = written[split]
        dataset = load_dataset(name, split, root=str(tmp_path))
        x, y = _stack(dataset)
        assert x.shape == (len(images), 1, 28, 28)
        torch.testing.assert_close(x, _normalised(torch.from_numpy(images).unsqueeze(1), stats))
        assert torch.equal(y, torch.from_numpy(labels).long())
    small = load_dataset(name, "train", root=str(tmp_path), image_size=32, channels=3, max_samples=5)
    x, _ = _stack(small)
    assert x.shape == (5, 3, 32, 32) and torch.equal(x[:, 0], x[:, 2])
    assert dataset_info(name, image_size=32, channels=3).input_shape == (3, 32, 32)


@pytest.mark.parametrize("name, hundred, stats", [("cifar10", False, CIFAR10_STATS), ("cifar100", True, CIFAR100_STATS)])
def test_cifar_files_load_normalised(tmp_path, skip_cifar_md5, name, hundred, stats):
    written = _write_cifar(tmp_path, hundred)
    for split, count in (("train", 4 if hundred else 20), ("test", 6)):
        rows, labels = written[split]
        x, y = _stack(load_dataset(name, split, root=str(tmp_path)))
        assert x.shape == (count, 3, 32, 32)
        torch.testing.assert_close(x, _normalised(torch.from_numpy(rows).view(-1, 3, 32, 32), stats))
        assert y.tolist() == labels
    info = dataset_info(name)
    assert info == DatasetInfo(name, (3, 32, 32), 100 if hundred else 10, "classification", 50_000, 10_000)


def test_cifar_wrong_checksums_are_reported(tmp_path):
    _write_cifar(tmp_path, hundred=False)  # torchvision's real md5 list stays in force here
    with pytest.raises(RuntimeError, match="md5"):
        load_dataset("cifar10", "train", root=str(tmp_path))


@pytest.mark.parametrize("name, folder, files", [
    ("mnist", "MNIST/raw", ["train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"]),
    ("fashion_mnist", "FashionMNIST/raw", ["train-images-idx3-ubyte", "t10k-labels-idx1-ubyte"]),
    ("cifar10", "cifar-10-batches-py", [*(f"data_batch_{i}" for i in range(1, 6)), "test_batch", "batches.meta"]),
    ("cifar100", "cifar-100-python", ["train", "test", "meta"]),
])
def test_missing_files_error_names_them(tmp_path, name, folder, files):
    with pytest.raises(FileNotFoundError) as error:
        load_dataset(name, "test", root=str(tmp_path))
    message = str(error.value)
    assert os.path.join(str(tmp_path), folder) in message and "download=True" in message
    assert all(f in message for f in files)


def test_failed_download_becomes_file_not_found(tmp_path, monkeypatch):
    def offline(*args, **kwargs):
        raise URLError("no network")

    monkeypatch.setattr(torchvision.datasets.mnist, "download_and_extract_archive", offline)
    monkeypatch.setattr(torchvision.datasets.cifar, "download_and_extract_archive", offline)
    for name, expected in (("mnist", "t10k-labels-idx1-ubyte"), ("cifar100", "meta")):
        with pytest.raises(FileNotFoundError, match=f"download failed.*{expected}"):
            load_dataset(name, "train", root=str(tmp_path), download=True)


def test_names_and_options_are_checked():
    assert DATASETS == ("digits", "teacher_student", "mnist", "fashion_mnist", "cifar10", "cifar100")
    with pytest.raises(ValueError, match=r"unknown dataset 'svhn'; expected one of \['digits', 'teacher_student'"):
        load_dataset("svhn", "train")
    with pytest.raises(ValueError, match="split must be one of"):
        load_dataset("digits", "val")
    with pytest.raises(TypeError, match=r"digits does not take options \['root'\]"):
        load_dataset("digits", "train", root="data")
    with pytest.raises(ValueError, match="channels for cifar10 must be one of \\[3\\], got 1"):
        load_dataset("cifar10", "train", channels=1)
    assert dataset_info("digits", image_size=32, channels=3) == DatasetInfo("digits", (3, 32, 32), 10, "classification", 1347, 450)
    info = dataset_info("teacher_student", n=100, n_test=40, d=7, task="classification", outputs=3)
    assert info == DatasetInfo("teacher_student", (7,), 3, "classification", 100, 40)
    test_set = load_dataset("teacher_student", "test", n=100, n_test=40, d=7, task="classification", outputs=3)
    assert len(test_set) == 40 and test_set[0][0].shape == (7,)


def test_data_module_never_imports_lightning():
    code = ("import sys, prune_landscape.data; "
            "print([m for m in sys.modules if m.split('.')[0] in ('lightning', 'pytorch_lightning', 'hydra', 'omegaconf', 'wandb')])")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


# -------------------------------------------------------------------------------------- datamodules
def test_datamodule_digits_splits_and_batches():
    dm = DataModule("digits", batch_size=100, val_fraction=0.2, seed=1, image_size=32, channels=3)
    dm.setup("fit")
    dm.setup("test")
    assert len(dm.train_set) + len(dm.val_set) == 1347 and len(dm.val_set) == 269
    assert not set(dm.train_set.indices) & set(dm.val_set.indices)
    x, y = next(iter(dm.train_dataloader()))
    assert x.shape == (100, 3, 32, 32) and y.shape == (100,)
    assert sum(len(b[1]) for b in dm.val_dataloader()) == 269
    assert sum(len(b[1]) for b in dm.test_dataloader()) == 450
    first = [b[1] for b in DataModule("digits", batch_size=100, seed=1).train_dataloader()]
    second = [b[1] for b in DataModule("digits", batch_size=100, seed=1).train_dataloader()]
    assert all(torch.equal(a, b) for a, b in zip(first, second))
    assert DataModule("digits").val_dataloader() == []


def test_datamodule_reads_torchvision_files(tmp_path):
    _write_mnist_like(tmp_path, "MNIST")
    dm = DataModule("mnist", root=str(tmp_path), batch_size=8, max_samples=12)
    dm.setup()
    assert [len(y) for _, y in dm.train_dataloader()] == [8, 4]
    assert [tuple(x.shape) for x, _ in dm.test_dataloader()] == [(7, 1, 28, 28)]
    assert dm.info.input_shape == (1, 28, 28) and dm.hparams["root"] == str(tmp_path)
    with pytest.raises(FileNotFoundError, match="cifar-10-batches-py"):
        DataModule("cifar10", root=str(tmp_path)).setup("fit")


def test_tensor_datamodule():
    x, y = torch.arange(20.0).view(10, 2), torch.arange(10)
    dm = TensorDataModule(train=(x, y), test=(x[:3], y[:3]), batch_size=4, seed=0)
    seen = torch.cat([b[1] for b in dm.train_dataloader()])
    assert sorted(seen.tolist()) == list(range(10)) and seen.tolist() != list(range(10))
    assert dm.val_dataloader() == [] and [b[1].tolist() for b in dm.test_dataloader()] == [[0, 1, 2]]
    with pytest.raises(ValueError, match="train inputs and targets must have equal first dimensions, got 10 and 9"):
        TensorDataModule(train=(x, y[:9]))
