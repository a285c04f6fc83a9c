"""Where sweep rows are kept (the row itself is built by :func:`prune_landscape.experiments.row.row_of`):
:class:`RowStore` appends each finished row as one JSON line to
``rows.jsonl`` under a file lock, the moment it finishes, so an interrupted sweep loses nothing already
done and several processes (a Hydra multirun, SLURM array jobs) may share one store.

Experiment module: plain dicts in and out; no Hydra, Lightning or W&B.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import math
import os
import re
import warnings
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import torch

__all__ = ["RowStore", "check_writable", "failed_rows", "finished_rows", "jsonable", "safe_name"]


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


def jsonable(value: Any) -> Any:
    """``value`` as strict JSON data: mappings and sequences recursively, tensors as lists, NaN/inf as None.

    Example:
        >>> jsonable({"loss": float("nan"), "kept": torch.tensor([1, 0])})
        {'loss': None, 'kept': [1, 0]}
    """
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, torch.Tensor):
        return jsonable(value.tolist())
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

    @property
    def figure_dir(self) -> Path:
        """Where the rows' probe figures are saved (``<directory>/figures``; rows hold paths relative to
        ``directory``, so the report pages written next to ``rows.jsonl`` link them)."""
        return self.directory / "figures"

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
        line = json.dumps(jsonable(row), sort_keys=False) + "\n"
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


