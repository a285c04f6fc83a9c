"""Progress bars with an ETA for long pruning work, and iteration-level scalars for loggers.

:func:`prune_landscape.pruning.prune` wraps its schedule in a :class:`Progress`: a ``tqdm`` bar
(iterations done, rate, ETA) and, per iteration, one dict of scalars handed to an optional callback.
Scorers add their own scalars with :func:`report` (SynFlow: the flow ``R`` and whether float64 was
needed; NTK-SAP: the mean squared output distance) and move the bar within a long iteration with
:func:`advance`, with no change to the scorer signature.

The bar is on when ``progress=True``, off with ``progress=False``; ``None`` (the default) turns it on
only for an interactive terminal: never under pytest or CI (``PYTEST_CURRENT_TEST`` / ``CI`` set) or
when stderr is not a TTY. A bar appears only once the work has run ``delay`` seconds (default 1 s), so
quick calls print nothing.

Example:
    >>> seen = []
    >>> with Progress(2, "demo", enabled=False, callback=seen.append) as bar:
    ...     for density in (0.5, 0.25):
    ...         report(loss=1.0)
    ...         _ = bar.step(density=density)
    >>> [sorted(s) for s in seen][0]
    ['density', 'elapsed_s', 'iteration', 'iterations', 'loss']
    >>> seen[1]["iteration"], seen[1]["density"]
    (2, 0.25)
"""

from __future__ import annotations

import contextvars
import os
import sys
import time
from collections.abc import Callable
from typing import Any

__all__ = ["Progress", "ProgressCallback", "advance", "logger_callback", "progress_enabled", "report"]

#: Receives one dict of scalars per iteration (``iteration``, ``iterations``, ``elapsed_s`` and the rest).
ProgressCallback = Callable[[dict[str, float]], None]

_ACTIVE: contextvars.ContextVar[Progress | None] = contextvars.ContextVar("prune_landscape_progress", default=None)


def progress_enabled(progress: bool | None) -> bool:
    """Resolve the ``progress`` flag: True/False as given; None = an interactive terminal outside tests and CI.

    Raises:
        ValueError: if ``progress`` is not None, True or False.
    """
    if progress is None:
        if os.environ.get("PYTEST_CURRENT_TEST") or os.environ.get("CI"):
            return False
        stream = sys.stderr
        return bool(stream is not None and hasattr(stream, "isatty") and stream.isatty())
    if progress is True or progress is False:
        return progress
    raise ValueError(f"progress must be None (auto), True or False, got {progress!r}")


def report(**scalars: float) -> None:
    """Add scalars to the current iteration of the active :class:`Progress` (a no-op when none is active)."""
    active = _ACTIVE.get()
    if active is not None:
        active._pending.update({k: float(v) for k, v in scalars.items()})


def advance(done: int, total: int) -> None:
    """Move the active bar to ``done / total`` of the current iteration (a no-op without an active bar).

    Scorers whose single iteration is long (NTK-SAP: R x #batches noise batches) call this after each unit
    of work, so the bar and its ETA move within an iteration too.
    """
    active = _ACTIVE.get()
    if active is not None and active._bar is not None and total > 0:
        target = active.iteration + min(1.0, done / total)
        active._bar.update(target - active._bar.n)  # update() honours the bar's delay; refresh() would not


class Progress:
    """A context manager counting ``total`` iterations: a tqdm bar when enabled, scalars to ``callback``.

    Args:
        total: the number of iterations.
        description: the bar's label (e.g. ``"synflow"``).
        enabled: show the bar (see :func:`progress_enabled`).
        callback: called with each iteration's scalars, bar or no bar.
        delay: seconds before the bar first appears.
    """

    def __init__(
        self,
        total: int,
        description: str,
        *,
        enabled: bool,
        callback: ProgressCallback | None = None,
        delay: float = 1.0,
    ):
        if callback is not None and not callable(callback):
            raise ValueError(f"callback must be callable with one dict of scalars, got {type(callback).__name__}")
        self.total = int(total)
        self.description = description
        self.enabled = enabled
        self.callback = callback
        self.delay = delay
        self.iteration = 0
        self._pending: dict[str, float] = {}
        self._bar: Any = None
        self._token: contextvars.Token | None = None
        self._start = 0.0

    def __enter__(self) -> Progress:
        self._start = time.perf_counter()
        if self.enabled:
            from tqdm.auto import tqdm  # imported only when a bar is wanted

            self._bar = tqdm(total=self.total, desc=self.description, delay=self.delay, leave=True, dynamic_ncols=True)
        self._token = _ACTIVE.set(self)
        return self

    def step(self, **scalars: float) -> dict[str, float]:
        """Close one iteration: merge ``scalars`` with those :func:`report`-ed, advance the bar, call back."""
        self.iteration += 1
        values = {"iteration": self.iteration, "iterations": self.total, **self._pending}
        values.update({k: float(v) for k, v in scalars.items()})
        values["elapsed_s"] = time.perf_counter() - self._start
        self._pending = {}
        if self._bar is not None:
            shown = {k: v for k, v in values.items() if k in scalars}
            self._bar.set_postfix({k: _short(v) for k, v in shown.items()}, refresh=False)
            self._bar.n = self.iteration - 1  # undo any fraction advance() set within this iteration
            self._bar.update(1)
        if self.callback is not None:
            self.callback(values)
        return values

    def __exit__(self, *exc: object) -> None:
        if self._token is not None:
            _ACTIVE.reset(self._token)
            self._token = None
        if self._bar is not None:
            self._bar.close()
            self._bar = None


def _short(value: float) -> str:
    return str(int(value)) if float(value).is_integer() and abs(value) < 1e9 else f"{value:.4g}"


def logger_callback(logger: Any, prefix: str = "prune/") -> ProgressCallback:
    """A callback that sends each iteration's scalars to a Lightning-style logger (``log_metrics(dict, step)``).

    Example:
        >>> class Recorder:
        ...     def __init__(self):
        ...         self.rows = []
        ...     def log_metrics(self, metrics, step=None):
        ...         self.rows.append((step, metrics))
        >>> rec = Recorder()
        >>> logger_callback(rec)({"iteration": 1, "density": 0.5})
        >>> rec.rows
        [(1, {'prune/iteration': 1, 'prune/density': 0.5})]
    """
    if not callable(getattr(logger, "log_metrics", None)):
        raise ValueError(f"logger must have a log_metrics(metrics, step) method, got {type(logger).__name__}")

    def send(values: dict[str, float]) -> None:
        logger.log_metrics({prefix + k: v for k, v in values.items()}, step=int(values["iteration"]))

    return send
