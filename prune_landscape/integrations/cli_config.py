"""What both CLI commands share: the data config read as a data set, the ``${data_info:...}`` resolver, the
output directory, the model check, ``torch_threads``, the one-line :class:`UsageError` with its clean-up, and
a command's frame (config check, exit statuses: :func:`checked_command`, :func:`command_exit_codes`).

Adapter module (Hydra/OmegaConf); torch and the core load inside the functions, after the arguments are checked.
"""

from __future__ import annotations

import contextlib
import math
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from hydra.errors import HydraException
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from prune_landscape.integrations.config_check import ConfigError, check_config

__all__ = ["UsageError", "checked_command", "command_exit_codes", "dataset_options", "load_data", "usage_errors"]

#: Keys of a data config that configure loaders, not the data set.
_LOADER_KEYS = ("_target_", "batch_size", "num_workers", "val_fraction", "seed")
_FILE_KEYS = ("root", "download")
_TORCHVISION = ("mnist", "fashion_mnist", "cifar10", "cifar100")
#: Errors that mean "the configuration is wrong": reported in one line, before any work starts.
_USER_ERRORS = (ValueError, TypeError, KeyError, FileNotFoundError, PermissionError, OmegaConfBaseException,
                HydraException)


def _message(error: BaseException) -> str:
    # Hydra wraps the target's own error ("unknown model ...; expected one of [...]"): show that one.
    cause = error.__cause__ if isinstance(error, HydraException) and error.__cause__ is not None else error
    return str(cause)


class UsageError(Exception):
    """A configuration problem found before any work: printed as one line, exit status 2."""


@contextlib.contextmanager
def usage_errors() -> Iterator[None]:
    """Turn a configuration error raised while a command builds its parts into a one-line :class:`UsageError`."""
    try:
        yield
    except UsageError:
        raise
    except _USER_ERRORS as error:
        raise UsageError(_message(error)) from error


@contextlib.contextmanager
def checked_command(cfg: DictConfig, command: str) -> Iterator[None]:
    """The body runs once ``cfg`` passes :func:`check_config` for ``command``, under its ``torch_threads``.

    A context manager, not a runner taking a callback: the command's own code stays on the call stack
    below its own module (no cli_audit -> cli_config -> cli_audit bounce; ``tests/test_walks.py``).

    Raises:
        UsageError: a configuration problem (nothing has run yet, no output folder made).
    """
    try:
        check_config(cfg, command)
    except ConfigError as error:
        raise UsageError(str(error)) from None
    with _threads(cfg):
        yield


@contextlib.contextmanager
def command_exit_codes(cfg: DictConfig, command: str, interrupted: Callable[[Path], str]) -> Iterator[None]:
    """The Hydra task's frame around the body: the commands' exit statuses.

    Exit status 2 for a configuration problem (one line on stderr, no folder left); 130 for Ctrl-C
    (``interrupted(directory)`` on stderr, where the partial results are, then the directory on stdout).
    """
    try:
        yield
    except UsageError as error:
        _remove_empty_run_dir(cfg)
        print(f"prune-landscape {command}: error: {error}", file=sys.stderr)
        raise SystemExit(2) from None
    except KeyboardInterrupt:
        directory = Path(str(cfg.output_dir))
        print(interrupted(directory), file=sys.stderr)
        print(directory, flush=True)
        raise SystemExit(130) from None


# ------------------------------------------------------------------------------------------ config
def dataset_options(data_cfg: Any) -> tuple[str, dict[str, Any]]:
    """``(name, options for load_dataset)`` from a data config (loader keys dropped).

    Example:
        >>> dataset_options({"_target_": "x", "name": "digits", "batch_size": 8, "channels": 1})
        ('digits', {'channels': 1})
    """
    raw = OmegaConf.to_container(data_cfg, resolve=True) if isinstance(data_cfg, DictConfig) else dict(data_cfg)
    options = {k: v for k, v in raw.items() if k not in _LOADER_KEYS}
    if "name" not in options:
        raise UsageError(f"the data config needs a `name`, got keys {sorted(raw)}")
    name = str(options.pop("name"))
    if name not in _TORCHVISION:
        options = {k: v for k, v in options.items() if k not in _FILE_KEYS}
    options = {k: v for k, v in options.items() if not (v is None and k in ("max_samples", "image_size", "channels"))}
    return name, options


def _data_info(field: str, *, _root_: DictConfig) -> int:
    """``${data_info:features|classes|channels|image_size}``: model sizes read from the data config."""
    from prune_landscape.data import dataset_info

    name, options = dataset_options(_root_.data)
    info = dataset_info(name, **options)
    shape = info.input_shape
    values = {
        "features": math.prod(shape),
        "channels": shape[0],
        "image_size": shape[-1],
        "classes": info.num_classes if info.num_classes is not None else int(options.get("outputs", 1)),
    }
    if field not in values:
        raise ValueError(f"data_info field must be one of {sorted(values)}, got {field!r}")
    return int(values[field])


OmegaConf.register_new_resolver("data_info", _data_info, replace=True)


def load_data(data_cfg: Any) -> tuple[Any, Any]:
    """(train, test) data for the audit: tensor pairs for in-memory sets, Datasets for torchvision's."""
    from prune_landscape.data import load_dataset

    name, options = dataset_options(data_cfg)
    splits = []
    for split in ("train", "test"):
        dataset = load_dataset(name, split, **options)
        tensors = getattr(dataset, "tensors", None)
        splits.append(tuple(tensors[:2]) if tensors is not None else dataset)
    return splits[0], splits[1]



def _output_dir(cfg: DictConfig) -> Path:
    """``cfg.output_dir``, made and proven writable (a clear error before any work otherwise)."""
    try:
        configured = cfg.output_dir
    except OmegaConfBaseException as error:  # ${hydra:...} outside a Hydra run (e.g. hydra.compose)
        raise UsageError(f"output_dir cannot be resolved ({error}); set output_dir=<directory>") from None
    if not configured:
        raise UsageError("output_dir is empty; set output_dir=<directory>")
    from prune_landscape.experiments.rowstore import check_writable

    return check_writable(str(configured))



def _check_model(factory: Callable[[], Any], data: Any, *, loss: str = "cross_entropy") -> str:
    """One forward on two samples and the label range, before any work (see ``datacheck.check_data``)."""
    from prune_landscape.datacheck import check_data

    model = factory()
    try:
        check_data(model, data, loss=loss, name="data")
    except ValueError as error:
        raise UsageError(str(error)) from None
    return type(model).__name__


@contextlib.contextmanager
def _threads(cfg: DictConfig) -> Iterator[None]:
    """Apply ``torch_threads`` for the duration of a command (restored after, for in-process callers)."""
    import torch

    threads, previous = cfg.get("torch_threads"), torch.get_num_threads()
    if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 1):
        raise UsageError(f"torch_threads must be a positive int or null, got {threads!r}")
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)



def _hydra_only(directory: Path) -> bool:
    """True when ``directory`` holds nothing but what Hydra writes before our code runs."""
    return directory.is_dir() and all(p.name == ".hydra" or (p.is_file() and p.suffix == ".log") for p in directory.iterdir())


def _remove_empty_run_dir(cfg: DictConfig) -> None:
    """A failed call leaves no folder behind: remove Hydra's run directory (and emptied parents) if unused."""
    import shutil

    try:
        directory = Path(str(cfg.output_dir)).absolute()
    except OmegaConfBaseException:
        return
    if not _hydra_only(directory):
        return
    shutil.rmtree(directory, ignore_errors=True)
    stop = Path.cwd().absolute()
    for parent in directory.parents:
        if parent == stop or stop not in parent.parents:
            break
        try:
            parent.rmdir()  # only succeeds when empty
        except OSError:
            break

