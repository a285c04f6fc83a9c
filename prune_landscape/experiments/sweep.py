"""Pruning-method audits: prune one model with several methods, sparsities, final-layer policies and seeds.

Each *cell* (method x sparsity x final-layer policy x seed) starts from the same freshly initialised
network for its seed, is pruned, optionally trained briefly under its mask with the core trainer, and is
audited; the result is one plain-dict *row*. Rows go to a :class:`RowStore` (``rows.jsonl``, one line per
finished row, appended under a file lock) the moment they finish, so an interrupted sweep loses nothing
already done and a re-run in the same directory skips them. Several processes (a Hydra multirun, SLURM
array jobs) may share one store: the report is re-rendered from all rows.

This module is part of the core: plain arguments in, plain rows out; no Hydra, Lightning or W&B.

Example:
    >>> from prune_landscape import models
    >>> from prune_landscape.data import digits
    >>> plan = SweepPlan(methods=("magnitude",), sparsities=(0.9,), epochs=1)
    >>> [cell.key for cell in plan.cells()]
    ['dense|0|dense|0', 'magnitude|0.9|prune|0']
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import math
import os
import re
import time
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from prune_landscape.batching import DataLike, num_samples
from prune_landscape.datacheck import check_data
from prune_landscape.masks import MaskSet

__all__ = ["Cell", "RowStore", "SweepPlan", "audit_cell", "check_data", "check_writable", "failed_rows", "finished_rows",
           "fresh_model", "run_sweep", "safe_name"]

_SCOPES = ("global", "layerwise", "erk")
#: The name of the unpruned reference row.
DENSE = "dense"


def _policy_text(policy: Any) -> str:
    """Normalise a final-layer policy: "prune", "dense" or "min_density=<float in (0, 1]>"."""
    if isinstance(policy, (int, float)) and not isinstance(policy, bool):
        value = float(policy)
    elif isinstance(policy, str) and policy in ("prune", "dense"):
        return policy
    elif isinstance(policy, str) and policy.startswith("min_density="):
        try:
            value = float(policy.split("=", 1)[1])
        except ValueError:
            raise ValueError(f"final-layer policy {policy!r}: expected min_density=<number in (0, 1]>") from None
    else:
        raise ValueError(f"final-layer policy must be 'prune', 'dense' or a min density in (0, 1] (e.g. 0.3 or "
                         f"'min_density=0.3'), got {policy!r}")
    if not 0.0 < value <= 1.0:
        raise ValueError(f"final-layer min density must be in (0, 1], got {value}")
    return f"min_density={value:g}"


#: train() keywords a plan fixes itself (per cell or from its own fields).
_PLAN_TRAIN_KEYS = ("model", "data", "epochs", "lr", "seed", "masks")


def _check_train_options(options: Mapping[str, Any]) -> None:
    """Every ``train_options`` name and value, checked before any work (``fit.*`` in the CLI)."""
    import inspect

    from prune_landscape.training import LOSSES, train

    accepted = sorted(set(inspect.signature(train).parameters) - set(_PLAN_TRAIN_KEYS))
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise ValueError(f"fit.{unknown[0]}: unknown training option; expected some of {accepted}")
    optimizer = options.get("optimizer", "sgd")
    if optimizer not in ("sgd", "adam"):
        raise ValueError(f"fit.optimizer: expected one of ['sgd', 'adam'], got {optimizer!r}")
    loss = options.get("loss", "cross_entropy")
    if loss not in LOSSES:
        raise ValueError(f"fit.loss: expected one of {list(LOSSES)}, got {loss!r}")
    batch_size = options.get("batch_size", 128)
    if batch_size is not None and (isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1):
        raise ValueError(f"fit.batch_size: expected a positive int or null, got {batch_size!r}")
    for key in ("momentum", "weight_decay"):
        value = options.get(key, 0.0)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
            raise ValueError(f"fit.{key}: expected a finite number >= 0, got {value!r}")
    if not isinstance(options.get("shuffle", True), bool):
        raise ValueError(f"fit.shuffle: expected true or false, got {options['shuffle']!r}")


@dataclass(frozen=True)
class Cell:
    """One audit: a method at a sparsity with a final-layer policy, from the init drawn by ``seed``."""

    method: str
    sparsity: float
    final_layer: str
    seed: int

    @property
    def key(self) -> str:
        """A stable identifier, e.g. ``"snip|0.98|dense|0"``."""
        return f"{self.method}|{self.sparsity:g}|{self.final_layer}|{self.seed}"


@dataclass(frozen=True)
class SweepPlan:
    """What to audit; validated on construction, before any work.

    Attributes:
        methods: pruning methods (names from ``prune_landscape.pruning.available_methods()``).
        sparsities: target sparsities in [0, 1).
        final_layers: final-layer policies: "prune", "dense" or a min density ("min_density=0.3" or 0.3).
        seeds: one cell per seed (the seed draws the init, the pruning randomness and the batch order).
        scope: "global", "layerwise" or "erk" allocation.
        method_options: per-method keyword options for ``prune`` (e.g. ``{"ntk_sap": {"iterations": 20}}``).
        epochs: training epochs after pruning (0 = audit at initialisation).
        lr: learning rate of that training.
        train_options: further keywords for ``prune_landscape.training.train`` (batch_size, momentum, ...).
        probes: probe names for ``audit`` (keys of ``prune_landscape.probes.PROBES``).
        n_samples: samples the audit and probes read (None = all training samples).
        dense_baseline: add one unpruned reference row per seed.
    """

    methods: tuple[str, ...]
    sparsities: tuple[float, ...]
    final_layers: tuple[str, ...] = ("prune",)
    seeds: tuple[int, ...] = (0,)
    scope: str = "global"
    method_options: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    epochs: int = 0
    lr: float = 0.1
    train_options: Mapping[str, Any] = field(default_factory=dict)
    probes: tuple[str, ...] = ()
    n_samples: int | None = None
    dense_baseline: bool = True

    def __post_init__(self) -> None:
        from prune_landscape.probes import PROBES
        from prune_landscape.pruning import available_methods, get_pruner

        set_ = object.__setattr__  # frozen: normalise once, here
        set_(self, "methods", tuple(str(m) for m in self.methods))
        set_(self, "sparsities", tuple(float(s) for s in self.sparsities))
        set_(self, "final_layers", tuple(_policy_text(p) for p in self.final_layers))
        set_(self, "seeds", tuple(self.seeds))
        # one name given as a string is one probe, not one probe per character
        set_(self, "probes", (self.probes,) if isinstance(self.probes, str) else tuple(str(p) for p in self.probes))
        valid = available_methods()
        if not self.methods:
            raise ValueError(f"methods must name at least one pruning method; expected some of {valid}")
        unknown = [m for m in self.methods if m not in valid]
        if unknown:
            raise ValueError(f"unknown pruning method {unknown[0]!r}; expected one of {valid}")
        if not self.sparsities or any(not 0.0 <= s < 1.0 for s in self.sparsities):
            raise ValueError(f"sparsities must be a non-empty list of numbers in [0, 1), got {list(self.sparsities)}")
        if not self.final_layers:
            raise ValueError("final_layers must list at least one policy: 'prune', 'dense' or 'min_density=<x>'")
        if not self.seeds or any(isinstance(s, bool) or not isinstance(s, int) or s < 0 for s in self.seeds):
            raise ValueError(f"seeds must be a non-empty list of non-negative ints, got {list(self.seeds)}")
        if self.scope not in _SCOPES:
            raise ValueError(f"scope must be one of {_SCOPES}, got {self.scope!r}")
        # Options for a valid method that is not selected are kept for when it is (recipes list several);
        # a name that is no method at all is a typo.
        extra = sorted(set(self.method_options) - set(valid))
        if extra:
            raise ValueError(f"method_options for unknown method {extra[0]!r}; expected names from {valid}")
        for method, options in self.method_options.items():
            if not isinstance(options, Mapping):
                raise ValueError(f"method_options.{method}: expected a mapping of option names to values, got "
                                 f"{options!r}")
            accepted = get_pruner(method).valid_options()
            unknown_options = sorted(set(options) - set(accepted))
            if unknown_options:
                raise ValueError(f"method_options.{method}: unknown option {unknown_options[0]!r}; expected some of "
                                 f"{accepted}")
        _check_train_options(self.train_options)
        if isinstance(self.epochs, bool) or not isinstance(self.epochs, int) or self.epochs < 0:
            raise ValueError(f"epochs must be an int >= 0, got {self.epochs!r}")
        if isinstance(self.lr, bool) or not isinstance(self.lr, (int, float)) or not math.isfinite(self.lr) or not self.lr > 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")
        bad_probes = [p for p in self.probes if p not in PROBES]
        if bad_probes:
            raise ValueError(f"unknown probe {bad_probes[0]!r}; expected some of {sorted(PROBES)}")
        if self.n_samples is not None and (isinstance(self.n_samples, bool) or self.n_samples < 1):
            raise ValueError(f"n_samples must be a positive int or None, got {self.n_samples!r}")

    def check_model(self, model: nn.Module) -> None:
        """Raise before any work when a final-layer policy cannot fit a sparsity's weight budget."""
        from prune_landscape.masks import prunable_parameters
        from prune_landscape.structure import final_layer_name

        sizes = {name: int(dict(model.named_parameters())[name].numel()) for name in prunable_parameters(model)}
        final = final_layer_name(model)
        total = sum(sizes.values())
        for policy in self.final_layers:
            floor = 1.0 if policy == "dense" else float(policy.split("=")[1]) if policy != "prune" else 0.0
            for sparsity in self.sparsities:
                budget = round((1 - sparsity) * total)
                needed = math.ceil(floor * sizes[final])
                if needed > budget:
                    raise ValueError(f"final-layer policy {policy!r} at sparsity {sparsity:g} needs {needed} weights in "
                                     f"{final} but the whole budget is {budget} of {total}; lower the sparsity or the "
                                     f"final layer's share")

    def cells(self) -> list[Cell]:
        """Every cell, in run order: the dense references first, then methods x sparsities x policies x seeds."""
        cells = [Cell(DENSE, 0.0, "dense", seed) for seed in self.seeds] if self.dense_baseline else []
        cells += [Cell(m, s, p, seed) for m in self.methods for s in self.sparsities for p in self.final_layers
                  for seed in self.seeds]
        return cells


def check_writable(directory: str | os.PathLike) -> Path:
    """Create ``directory`` if needed and prove a file can be written there; raise a clear error if not.

    Example:
        >>> import tempfile
        >>> check_writable(tempfile.mkdtemp()).is_dir()
        True
    """
    path = Path(directory).expanduser()
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / f".write-test-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as error:
        raise PermissionError(f"output directory {str(path)!r} is not writable ({error.strerror or error}); "
                              f"choose another one (e.g. hydra.run.dir=... or output_dir=...)") from error
    return path


def _jsonable(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, torch.Tensor):
        return _jsonable(value.tolist())
    if hasattr(value, "item") and callable(value.item) and getattr(value, "ndim", 1) == 0:  # numpy scalars
        value = value.item()
    if isinstance(value, float):
        return value if math.isfinite(value) else None  # strict JSON has no NaN/inf
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if hasattr(value, "name") and hasattr(value, "value"):  # an Enum
        return value.name
    return str(value)


class RowStore:
    """Finished rows in ``<directory>/rows.jsonl``; safe to share between processes (``flock``).

    Example:
        >>> import tempfile
        >>> store = RowStore(tempfile.mkdtemp())
        >>> store.append({"key": "a", "x": 1}); store.append({"key": "a", "x": 2})
        >>> store.rows()
        [{'key': 'a', 'x': 2}]
    """

    def __init__(self, directory: str | os.PathLike):
        self.directory = Path(directory)
        self.path = self.directory / "rows.jsonl"

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """Hold the store's exclusive lock (appends and report renders take it)."""
        self.directory.mkdir(parents=True, exist_ok=True)
        with open(self.directory / ".rows.lock", "a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def append(self, row: Mapping[str, Any]) -> None:
        """Append one finished row (one JSON line, flushed and synced before returning).

        A torn last line (a process killed or a disk filled mid-write) is moved aside to
        ``rows.jsonl.torn`` first: otherwise this row would be glued onto it and lost when read back.
        """
        if "key" not in row:
            raise ValueError(f"a row needs a 'key', got keys {sorted(row)}")
        line = json.dumps(_jsonable(row), sort_keys=False) + "\n"
        with self.lock():
            self._repair()
            with open(self.path, "a") as stream:
                stream.write(line)
                stream.flush()
                os.fsync(stream.fileno())

    @property
    def torn(self) -> bool:
        """True when the file ends in a partial line: its writer was interrupted mid-write."""
        if not self.path.is_file() or self.path.stat().st_size == 0:
            return False
        with open(self.path, "rb") as stream:
            stream.seek(-1, os.SEEK_END)
            return stream.read(1) != b"\n"

    def _repair(self) -> None:
        """Cut a torn last line off (kept in ``rows.jsonl.torn``); the caller holds the lock."""
        if not self.torn:
            return
        data = self.path.read_bytes()
        cut = data.rfind(b"\n") + 1  # 0 when the only line is torn
        with contextlib.suppress(ValueError):  # only the newline is missing: the row is whole, keep it
            fragment = json.loads(data[cut:])
            if isinstance(fragment, dict) and "key" in fragment:
                with open(self.path, "ab") as stream:
                    stream.write(b"\n")
                return
        with open(self.path.with_name(self.path.name + ".torn"), "ab") as aside:
            aside.write(data[cut:] + b"\n")
        with open(self.path, "r+b") as stream:
            stream.truncate(cut)
            stream.flush()
            os.fsync(stream.fileno())
        warnings.warn(f"{self.path}: the last line was torn (its writer was interrupted mid-write); moved it to "
                      f"{self.path.name}.torn, and its row will be run again", RuntimeWarning, stacklevel=3)

    def repair(self) -> bool:
        """Cut a torn last line off under the lock; True when there was one."""
        with self.lock():
            torn = self.torn
            self._repair()
        return torn

    def rows(self) -> list[dict[str, Any]]:
        """All rows, the last one kept per (context, key); a torn or unreadable line is skipped."""
        if not self.path.is_file():
            return []
        latest: dict[tuple[str, str], dict[str, Any]] = {}
        for line in self.path.read_text(errors="replace").splitlines():
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue
            if not isinstance(row, dict) or "key" not in row:
                continue
            identity = (str(row.get("context", "")), str(row["key"]))
            latest.pop(identity, None)
            latest[identity] = row
        return list(latest.values())


def failed_rows(rows: Iterable[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """The rows whose cell raised (they hold ``status="failed"`` and the ``error``)."""
    return [row for row in rows if row.get("status") == "failed"]


def finished_rows(rows: Iterable[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """The rows whose cell ran to the end."""
    return [row for row in rows if row.get("status") != "failed"]


_UNSAFE = re.compile(r"[^A-Za-z0-9._=-]+")


def safe_name(text: str) -> str:
    """``text`` as one file-name component: no separators, no ``..``, no leading dot.

    Example:
        >>> safe_name("../../x|0.9|prune|0")
        'x_0.9_prune_0'
    """
    cleaned = _UNSAFE.sub("_", str(text)).replace("..", "_").strip("._")
    return cleaned or "unnamed"


def fresh_model(factory: Callable[[], nn.Module], seed: int) -> nn.Module:
    """Build a model and draw its initial weights from ``seed`` (its ``init_weights`` when it has one).

    Example:
        >>> from prune_landscape import models
        >>> a, b = (fresh_model(lambda: models.mlp([4, 3]), 7) for _ in range(2))
        >>> bool(torch.equal(a.fc1.weight, b.fc1.weight))
        True
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        model = factory()
    if hasattr(model, "init_weights"):
        model.init_weights(generator=torch.Generator().manual_seed(int(seed)))
    return model


def _fold_masks(model: nn.Module) -> None:
    """Make torch.nn.utils.prune masks permanent (weight = orig * mask as a plain Parameter).

    The audit then reads the masks it is given, and the model deep-copies cleanly (a hooked weight
    computed with autograd on is a non-leaf tensor, which ``copy.deepcopy`` refuses).
    """
    from torch.nn.utils import prune as torch_prune

    for module in model.modules():
        for hook in list(module._forward_pre_hooks.values()):
            if isinstance(hook, torch_prune.BasePruningMethod):
                torch_prune.remove(module, hook._tensor_name)


def _figure(result: Any, path: Path) -> bool:
    figure_fn = getattr(result, "figure", None)
    figure = figure_fn() if callable(figure_fn) else None
    if figure is None:
        return False
    import matplotlib.pyplot as plt

    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=80)
    plt.close(figure)
    return True


@dataclass(frozen=True)
class ProbeFailure:
    """A probe that raised: kept in the report in place of its result, so the row and the run go on."""

    name: str
    error: str

    def to_dict(self) -> dict[str, str]:
        """A JSON-ready dict: ``{"error": "<type>: <message>"}``."""
        return {"error": self.error}

    def scalars(self) -> dict[str, float]:
        """No numbers: the probe gave none."""
        return {}

    def figure(self) -> None:
        """No figure."""
        return None


def _error_text(error: BaseException) -> str:
    return f"{type(error).__name__}: {' '.join(str(error).split())}"[:2000]


def _isolated_probe(name: str, probe: Callable[[nn.Module, DataLike], Any], label: str) -> Callable[[nn.Module, DataLike], Any]:
    """``probe`` that returns a :class:`ProbeFailure` (and warns) instead of raising."""

    def run(model: nn.Module, data: DataLike) -> Any:
        try:
            return probe(model, data)
        except Exception as error:  # one probe (e.g. a diverged model's Hessian) must not end the row
            warnings.warn(f"{label}: probe {name!r} failed ({_error_text(error)}); the row keeps its other results",
                          RuntimeWarning, stacklevel=2)
            return ProbeFailure(name, _error_text(error))

    run.__name__ = name
    return run


def audit_cell(cell: Cell, plan: SweepPlan, factory: Callable[[], nn.Module], train_data: DataLike,
               test_data: DataLike | None = None, *, figure_dir: str | os.PathLike | None = None,
               context: str = "") -> dict[str, Any]:
    """Prune, train and audit one cell; return its row (plain, JSON-ready).

    Args:
        cell: what to run.
        plan: the shared settings (training, probes, options).
        factory: builds the untrained model (its init is redrawn from ``cell.seed``).
        train_data: data for pruning scores, training and the audit.
        test_data: held-out data for the test accuracy (optional).
        figure_dir: where probe figures are saved as PNG (None: not saved); rows hold paths relative to
            its parent directory.
        context: a fingerprint of everything else (model, data, ...) stored with the row.
    """
    from prune_landscape.audit import audit
    from prune_landscape.pruning import prune
    from prune_landscape.training import evaluate, train

    started = time.perf_counter()
    model = fresh_model(factory, cell.seed)
    if cell.method == DENSE:
        masks = MaskSet.dense(model)
    else:
        options = dict(plan.method_options.get(cell.method, {}))
        masks = prune(model, cell.method, cell.sparsity, train_data, final_layer=cell.final_layer,
                      scope=plan.scope, seed=cell.seed, **options)
    masks.apply_to(model)
    pruned = time.perf_counter()
    train_result = None
    if plan.epochs > 0:
        train_result = train(model, train_data, epochs=plan.epochs, lr=plan.lr, masks=masks, seed=cell.seed,
                             **dict(plan.train_options))
    trained = time.perf_counter()
    loss_name = plan.train_options.get("loss", "cross_entropy")
    train_loss, train_accuracy = evaluate(model, train_data, loss=loss_name)
    test_loss, test_accuracy = evaluate(model, test_data, loss=loss_name) if test_data is not None else (None, None)
    _fold_masks(model)
    from prune_landscape.probes import PROBES

    probes_run = [_isolated_probe(name, PROBES[name], cell.key) for name in plan.probes]
    report = audit(model, train_data, n_samples=plan.n_samples, probes=probes_run, masks=masks,
                   weight_decay=float(plan.train_options.get("weight_decay", 0.0)))
    structure = report.structure
    available = num_samples(train_data)
    n = plan.n_samples if available is None else min(available, plan.n_samples or available)
    figures: dict[str, str] = {}
    probes: dict[str, dict[str, float]] = {}
    probe_errors: dict[str, str] = {}
    for name, result in report.probes.items():
        if isinstance(result, ProbeFailure):
            probe_errors[name] = result.error
            continue
        probes[name] = {k: float(v) for k, v in result.scalars().items()}
        if figure_dir is not None:
            # names come from users (registered methods, probe names): one safe component, inside figure_dir
            path = Path(figure_dir) / safe_name(f"{cell.key}_{name}.png".replace("|", "_"))
            try:
                if _figure(result, path):
                    figures[name] = str(path.relative_to(Path(figure_dir).parent))
            except Exception as error:  # a figure is a nicety: a failed one is noted, never fatal
                probe_errors[f"{name}/figure"] = _error_text(error)
                warnings.warn(f"{cell.key}: figure of probe {name!r} failed ({_error_text(error)})", RuntimeWarning,
                              stacklevel=2)
    row = {
        "key": cell.key,
        "method": cell.method,
        "sparsity": cell.sparsity,
        "final_layer_policy": cell.final_layer,
        "seed": cell.seed,
        "density": masks.density,
        "final_layer": structure.final_layer,
        "final_layer_density": structure.final_layer_density,
        "final_layer_dense": structure.final_layer_dense,
        "fan_in_min": structure.fan_in_min,
        "fan_in_median": structure.fan_in_median,
        "fan_in_max": structure.fan_in_max,
        "last_hidden_width": structure.last_hidden_width,
        "n": n,
        "dead_units": structure.total_dead_units,
        "collapsed_layers": list(structure.collapsed_layers),
        "connected": structure.connected,
        "landscape": report.landscape.verdict.name,
        "landscape_rules": [getattr(rule, "id", str(rule)) for rule in getattr(report.landscape, "rules", ())],
        "existence": report.existence.verdict.name,
        "existence_rules": [getattr(rule, "id", str(rule)) for rule in getattr(report.existence, "rules", ())],
        **_verdict_fields(report),
        "train_loss": train_loss,
        "train_accuracy": train_accuracy,
        "test_loss": test_loss,
        "test_accuracy": test_accuracy,
        "epoch_losses": list(train_result.epoch_losses) if train_result else [],
        "layer_densities": {layer.name: layer.density for layer in structure.layers},
        "probes": probes,
        "figures": figures,
        "probe_errors": probe_errors,
        "metrics": report.metrics(),
        "audit": report.to_dict(),
        "seconds": {"prune": pruned - started, "train": trained - pruned, "audit": time.perf_counter() - trained},
        "context": context,
    }
    return _jsonable(row)


def _verdict_fields(report: Any) -> dict[str, Any]:
    """The mask verdict, head price, baseline and remedy as flat row fields (what the report pages read)."""
    verdict, baseline, remedy = report.mask_verdict, report.baseline, report.remedy
    return {
        "mask_verdict": verdict.level.name,
        "mask_verdict_code": int(verdict.level),
        "mask_verdict_rules": list(verdict.rules),
        "mask_verdict_explanation": verdict.explanation,
        "mask_verdict_summary": verdict.summary,
        "head_price": verdict.price_value,
        "head_price_relative": verdict.relative_price,
        "head_price_loss": None if verdict.price is None else verdict.price.loss,
        "last_hidden_units": report.structure.last_hidden_units,
        "baseline": {"landscape": baseline.landscape.verdict.name, "landscape_rules": list(baseline.landscape.rules),
                     "existence": baseline.existence.verdict.name, "existence_rules": list(baseline.existence.rules),
                     "last_hidden_width": baseline.last_hidden_width, "text": baseline.text},
        "remedy": None if remedy is None else remedy.to_dict(),
    }


def _failed_row(cell: Cell, error: BaseException, context: str) -> dict[str, Any]:
    import traceback

    return _jsonable({
        "key": cell.key, "method": cell.method, "sparsity": cell.sparsity, "final_layer_policy": cell.final_layer,
        "seed": cell.seed, "status": "failed", "error": _error_text(error),
        "traceback": "".join(traceback.format_exception(type(error), error, error.__traceback__, limit=-3)),
        "context": context,
    })


def run_sweep(plan: SweepPlan, factory: Callable[[], nn.Module], train_data: DataLike, test_data: DataLike | None = None,
              *, store: RowStore, on_row: Iterable[Callable[[dict[str, Any]], None]] = (), context: str = "",
              progress: bool = True, figure_dir: str | os.PathLike | None = None) -> list[dict[str, Any]]:
    """Run every cell of ``plan`` not already in ``store`` (same key and context); return the new rows.

    Each finished row is appended to ``store`` first, then handed to every ``on_row`` callback (e.g.
    re-render the report, log to W&B). A cell that raises becomes a row with ``status="failed"`` and its
    ``error`` (with a warning) and the sweep goes on; a re-run retries it. A probe that raises leaves its
    error in the row's ``probe_errors``. A KeyboardInterrupt propagates; every row finished before it is
    already in the store.

    Example:
        >>> # run_sweep(plan, lambda: models.mlp([64, 32, 10]), digits("train"), digits("test"),
        >>> #           store=RowStore("out"), on_row=[lambda row: print(row["key"])])
    """
    store.repair()  # a torn last line from a killed run: its row is run again, not glued to the next one
    done = {row["key"] for row in finished_rows(store.rows()) if row.get("context", "") == context}
    todo = [cell for cell in plan.cells() if cell.key not in done]  # failed rows are retried
    callbacks: Sequence[Callable[[dict[str, Any]], None]] = tuple(on_row)
    if todo:  # data the model cannot take fails every row: say so once, before any work
        check_data(factory(), train_data, loss=str(plan.train_options.get("loss", "cross_entropy")), name="train data")
        if test_data is not None:
            check_data(factory(), test_data, loss=str(plan.train_options.get("loss", "cross_entropy")), name="test data")
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(todo), desc="audit", unit="row", dynamic_ncols=True)
    finished = []
    try:
        for cell in todo:
            if bar is not None:
                bar.set_postfix_str(cell.key)
            try:
                row = audit_cell(cell, plan, factory, train_data, test_data, figure_dir=figure_dir, context=context)
            except Exception as error:  # one failing cell is recorded and the sweep goes on (Ctrl-C still stops it)
                row = _failed_row(cell, error, context)
                warnings.warn(f"row {cell.key} failed ({row['error']}); it is recorded as failed in the report and the "
                              f"sweep goes on (a re-run retries it)", RuntimeWarning, stacklevel=2)
            store.append(row)
            finished.append(row)
            if bar is not None:
                bar.update(1)
            for callback in callbacks:
                try:
                    callback(row)
                except Exception as error:  # a failing logger or hook must not end the sweep; the row is stored
                    warnings.warn(f"an on_row callback failed on row {cell.key} ({_error_text(error)}); the row is "
                                  f"saved in {store.path} and the sweep goes on", RuntimeWarning, stacklevel=2)
    finally:
        if bar is not None:
            bar.close()
    return finished
