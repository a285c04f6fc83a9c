"""Logger helpers: W&B offline by default, and logging that never kills a training run.

Lightning adapter: this module may import pytorch_lightning (and wandb lazily); the core never imports it.

* :func:`configure_wandb_mode` sets ``WANDB_MODE=offline`` unless the user chose a mode *and* has an API
  key, so nothing ever waits on the network; ``wandb sync`` uploads offline runs later.
* :class:`SafeWandbLogger` is a drop-in ``WandbLogger`` that starts offline by default and, when W&B
  cannot initialise, warns and goes on as a no-op logger.
* :func:`guard_logger` makes any attached Lightning logger fault tolerant: an exception it raises (a lost
  connection, a full disk) is recorded on the logger (:func:`logger_failures`) and warned about once per
  kind of call; training continues and the logger stays on, so the next calls still go through (a
  connection that comes back loses nothing after it). ``LandscapeAudit`` guards every logger of its trainer.
* W&B loggers are recognised in both Lightning namespaces (``pytorch_lightning`` and ``lightning.pytorch``).

Example:
    >>> import os
    >>> from prune_landscape.integrations.loggers import configure_wandb_mode
    >>> configure_wandb_mode({"WANDB_MODE": "online"})  # no API key: offline
    'offline'
"""

from __future__ import annotations

import functools
import netrc
import os
import sys
import warnings
from dataclasses import dataclass
from collections.abc import Callable, Mapping, MutableMapping
from pathlib import Path
from typing import Any

from lightning_fabric.loggers.logger import _DummyExperiment
from pytorch_lightning.loggers import Logger, WandbLogger
from pytorch_lightning.utilities.rank_zero import rank_zero_only

__all__ = [
    "SafeWandbLogger",
    "configure_wandb_mode",
    "guard_logger",
    "has_wandb_api_key",
    "log_scalars",
    "is_wandb_logger",
    "logger_failed",
    "logger_failures",
    "LoggerFailure",
    "safe_call",
    "figure_to_array",
    "wandb_log_figures",
    "wandb_log_file_artifact",
    "wandb_log_table",
    "wandb_loggers",
    "wandb_update_summary",
]

_FAILURES = "_prune_landscape_failures"
_DISABLED = "_prune_landscape_disabled"  # only a SafeWandbLogger whose W&B run could not start
_GUARDED = "_prune_landscape_guarded"
#: Logger methods the Trainer (or our callbacks) call; each one is wrapped by :func:`guard_logger`.
_GUARDED_METHODS = (
    "log_metrics",
    "log_hyperparams",
    "log_graph",
    "save",
    "finalize",
    "after_save_checkpoint",
    "log_table",
    "log_image",
    "log_text",
)
_OFFLINE_SAFE_MODES = ("offline", "dryrun", "disabled")


def has_wandb_api_key(environ: Mapping[str, str] | None = None) -> bool:
    """True when W&B credentials exist: ``WANDB_API_KEY`` or an ``api.wandb.ai`` entry in ``~/.netrc``."""
    environ = os.environ if environ is None else environ
    if environ.get("WANDB_API_KEY"):
        return True
    try:
        host = environ.get("WANDB_BASE_URL", "https://api.wandb.ai").split("://")[-1].rstrip("/")
        return netrc.netrc(environ.get("NETRC")).authenticators(host) is not None
    except (OSError, netrc.NetrcParseError):
        return False


def configure_wandb_mode(environ: MutableMapping[str, str] | None = None) -> str:
    """Make W&B offline unless the user set a mode and has an API key; returns the mode now in force.

    ``offline``/``disabled`` chosen by the user are always kept (they need no network). An ``online``
    mode without credentials, or no mode at all, becomes ``offline`` so a run never blocks on a login
    prompt or the network.

    Args:
        environ: the environment to read and update (default ``os.environ``).

    Example:
        >>> configure_wandb_mode({"WANDB_MODE": "disabled"})
        'disabled'
    """
    environ = os.environ if environ is None else environ
    mode = environ.get("WANDB_MODE", "").strip().lower()
    if mode in _OFFLINE_SAFE_MODES:
        return mode
    if mode and has_wandb_api_key(environ):
        return mode
    if mode:
        warnings.warn(
            f"WANDB_MODE={mode!r} but no W&B API key was found (WANDB_API_KEY or ~/.netrc); logging offline "
            "instead (upload later with `wandb sync`)",
            stacklevel=2,
        )
    environ["WANDB_MODE"] = "offline"
    return "offline"


@dataclass(frozen=True)
class LoggerFailure:
    """One failed logger call: which logger, during what, the error, and how often that call failed."""

    logger: str
    action: str
    error: str
    count: int = 1

    def to_dict(self) -> dict[str, Any]:
        return {"logger": self.logger, "action": self.action, "error": self.error, "count": self.count}


def logger_failures(logger: Logger) -> list[LoggerFailure]:
    """Every kind of call that failed on ``logger`` (first error kept, with a count), oldest first."""
    return list(getattr(logger, _FAILURES, {}).values())


def logger_failed(logger: Logger) -> bool:
    """True once any call on ``logger`` has failed (the logger itself stays on unless it never started)."""
    return bool(getattr(logger, _FAILURES, None))


def _logger_disabled(logger: Logger) -> bool:
    return bool(getattr(logger, _DISABLED, False))


def _action_kind(action: str) -> str:
    # "log_image('audit/probe/x')" and "log_image('audit/probe/y')" are one kind of call for the warning.
    return action.split("(", 1)[0]


def _record_failure(logger: Logger, action: str, error: BaseException) -> None:
    failures: dict[str, LoggerFailure] = getattr(logger, _FAILURES, None) or {}
    kind = _action_kind(action)
    previous = failures.get(kind)
    if previous is not None:
        failures[kind] = LoggerFailure(previous.logger, previous.action, previous.error, previous.count + 1)
        return
    failures[kind] = LoggerFailure(type(logger).__name__, action, f"{type(error).__name__}: {error}")
    object.__setattr__(logger, _FAILURES, failures)
    after = "without this logger" if _logger_disabled(logger) else "and the logger stays on for the next calls"
    warnings.warn(
        f"{type(logger).__name__} failed during {action} ({type(error).__name__}: {error}); training continues "
        f"{after}, and the local audit report is still written",
        RuntimeWarning,
        stacklevel=3,
    )


def safe_call(logger: Logger, action: str, function: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Call ``function(*args, **kwargs)`` for ``logger``; an exception is recorded and warned, never raised.

    The first failure of each kind of call warns; every failure is counted (:func:`logger_failures`). The
    logger is never switched off: the next call is attempted as usual. Returns the function's result, or
    None when it failed (or when the logger is a SafeWandbLogger whose run never started).
    """
    if _logger_disabled(logger):
        return None
    try:
        return function(*args, **kwargs)
    except Exception as error:  # a logger must never end training: any failure is reported, not raised
        _record_failure(logger, action, error)
        return None


def guard_logger(logger: Logger) -> Logger:
    """Wrap the logger's methods (on this instance only) so a failure is recorded and warned, not raised.

    Idempotent; returns ``logger``.

    Example:
        >>> from pytorch_lightning.loggers import CSVLogger
        >>> logger = guard_logger(CSVLogger("/tmp/pl-example"))
        >>> logger_failed(logger)
        False
    """
    if getattr(logger, _GUARDED, False):
        return logger
    for name in _GUARDED_METHODS:
        method = getattr(logger, name, None)
        if method is None or not callable(method):
            continue

        def guarded(*args: Any, __method: Callable[..., Any] = method, __name: str = name, **kwargs: Any) -> Any:
            return safe_call(logger, __name, __method, *args, **kwargs)

        functools.update_wrapper(guarded, method)
        # An instance attribute shadows the class method, so the Trainer's calls go through the guard.
        object.__setattr__(logger, name, guarded)
    object.__setattr__(logger, _GUARDED, True)
    return logger


def _wandb_logger_classes() -> tuple[type, ...]:
    """WandbLogger classes of the Lightning namespaces already imported (importing one costs seconds)."""
    classes: list[type] = [WandbLogger]
    unified = sys.modules.get("lightning.pytorch.loggers.wandb")
    if unified is not None and getattr(unified, "WandbLogger", None) is not None:
        classes.append(unified.WandbLogger)
    return tuple(classes)


def is_wandb_logger(logger: Any) -> bool:
    """True for a ``WandbLogger`` of ``pytorch_lightning`` or of ``lightning.pytorch`` (or a subclass)."""
    return isinstance(logger, _wandb_logger_classes())


def wandb_loggers(loggers: list[Logger]) -> list[Any]:
    """The WandbLoggers among ``loggers`` (either Lightning namespace), except runs that never started."""
    return [logger for logger in loggers if is_wandb_logger(logger) and not _logger_disabled(logger)]


@rank_zero_only
def log_scalars(loggers: list[Logger], metrics: Mapping[str, float], step: int | None, *, flush: bool = False) -> None:
    """Send ``metrics`` to every logger (rank zero only), each call guarded; ``flush`` also calls ``save()``.

    This is the path for callbacks in hooks where ``LightningModule.log`` is not allowed
    (``on_train_end``, ``on_fit_end``), as Lightning's LearningRateMonitor does.
    """
    clean = {key: float(value) for key, value in metrics.items()}
    for logger in loggers:
        safe_call(logger, "log_metrics", logger.log_metrics, clean, step)
        if flush:
            safe_call(logger, "save", logger.save)


class SafeWandbLogger(WandbLogger):
    """A ``WandbLogger`` that logs offline by default and survives W&B failures.

    Same arguments as ``pytorch_lightning.loggers.WandbLogger``, plus ``init_timeout``. Unless ``offline``
    is given, the mode follows :func:`configure_wandb_mode`. An online start that cannot reach the
    server gives up after ``init_timeout`` seconds (W&B's own default waits 90 s) and the run is logged
    offline instead, with a warning (``wandb sync`` uploads it later). If W&B cannot start at all, a
    warning says why and the logger becomes a no-op (training continues); later failures (a lost
    connection) are recorded and warned, and the next calls still go through.

    Example:
        >>> import pytorch_lightning as pl
        >>> logger = SafeWandbLogger(save_dir="/tmp/wandb-example", project="demo")  # offline without a key
        >>> trainer = pl.Trainer(max_epochs=1, logger=logger)
    """

    def __init__(self, *args: Any, offline: bool | None = None, init_timeout: float = 15.0, **kwargs: Any) -> None:
        if offline is None:
            offline = False
            configure_wandb_mode()
        if kwargs.get("save_dir") is not None:
            Path(kwargs["save_dir"]).mkdir(parents=True, exist_ok=True)
        if "settings" not in kwargs and not offline and os.environ.get("WANDB_MODE") not in _OFFLINE_SAFE_MODES:
            import wandb

            kwargs["settings"] = wandb.Settings(init_timeout=float(init_timeout))
        super().__init__(*args, offline=offline, **kwargs)
        guard_logger(self)

    def _start_offline_instead(self, error: BaseException) -> bool:
        """After an online start failed: retry offline once; True when that is worth trying."""
        if self._offline or self._wandb_init.get("mode") in _OFFLINE_SAFE_MODES or os.environ.get("WANDB_MODE") in _OFFLINE_SAFE_MODES:
            return False
        warnings.warn(
            f"W&B could not start online ({type(error).__name__}: {str(error).splitlines()[0]}); logging this run "
            "offline instead (upload it later with `wandb sync`)",
            RuntimeWarning,
            stacklevel=4,
        )
        self._wandb_init["mode"] = "offline"
        self._wandb_init.pop("settings", None)
        return True

    @property
    def experiment(self) -> Any:
        if _logger_disabled(self):
            return _DummyExperiment()
        try:
            return WandbLogger.experiment.fget(self)  # type: ignore[attr-defined]
        except Exception as error:  # W&B could not start online: log offline, or carry on without it
            if self._start_offline_instead(error):
                try:
                    return WandbLogger.experiment.fget(self)  # type: ignore[attr-defined]
                except Exception as offline_error:
                    error = offline_error
            object.__setattr__(self, _DISABLED, True)  # nothing can reach a run that does not exist
            _record_failure(self, "initialisation", error)
            return _DummyExperiment()


# -- W&B extras (each call guarded: a failure is recorded and warned, the logger stays on) ---------------
def wandb_log_table(logger: WandbLogger, key: str, columns: list[str], rows: list[list[Any]], step: int | None = None) -> None:
    """Log a ``wandb.Table`` (e.g. the per-layer mask table) through ``logger``."""
    # The class's own method: the instance attribute may be the guard's wrapper, which would warn twice.
    safe_call(logger, f"log_table({key!r})", type(logger).log_table, logger, key=key, columns=columns, data=rows, step=step)


def wandb_update_summary(logger: WandbLogger, values: Mapping[str, Any]) -> None:
    """Write ``values`` into the run summary (the verdict and its rules, final numbers)."""

    def update() -> None:
        summary = logger.experiment.summary
        for key, value in values.items():
            summary[key] = value

    safe_call(logger, "summary update", update)


def figure_to_array(figure: Any) -> Any:
    """Render a matplotlib figure to an ``(H, W, 3)`` uint8 array on an Agg canvas; close it if pyplot holds it.

    Figures built as ``matplotlib.figure.Figure()`` (as the probes do, to stay clear of pyplot's global
    state) carry a bare ``FigureCanvasBase``, which cannot render; attaching an Agg canvas renders any
    figure without touching the user's backend. No plotly or display is needed.

    Example:
        >>> from matplotlib.figure import Figure
        >>> figure = Figure(figsize=(2, 1), dpi=50)
        >>> _ = figure.add_subplot().plot([0, 1])
        >>> figure_to_array(figure).shape
        (50, 100, 3)
    """
    import numpy as np
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = figure.canvas if isinstance(figure.canvas, FigureCanvasAgg) else FigureCanvasAgg(figure)
    canvas.draw()
    array = np.asarray(canvas.buffer_rgba())[..., :3].copy()
    pyplot = sys.modules.get("matplotlib.pyplot")  # close only what pyplot manages; never import it here
    if pyplot is not None and getattr(figure, "number", None) in pyplot.get_fignums():
        pyplot.close(figure)
    return array


def wandb_log_figures(logger: WandbLogger, figures: Mapping[str, Any], step: int | None = None) -> None:
    """Log matplotlib figures as images, one key each; the figures are closed afterwards."""
    for key, figure in figures.items():
        image = safe_call(logger, f"render({key!r})", figure_to_array, figure)
        if image is not None:
            safe_call(logger, f"log_image({key!r})", type(logger).log_image, logger, key=key, images=[image], step=step)


def wandb_log_file_artifact(
    logger: WandbLogger,
    path: str | Path,
    *,
    name: str,
    artifact_type: str,
    metadata: Mapping[str, Any] | None = None,
    aliases: list[str] | None = None,
) -> None:
    """Log one file as a ``wandb.Artifact`` (e.g. ``type="mask"`` for a MaskSet safetensors file)."""

    def log() -> None:
        import wandb

        artifact = wandb.Artifact(name=name, type=artifact_type, metadata=dict(metadata or {}))
        artifact.add_file(str(path))
        logger.experiment.log_artifact(artifact, aliases=aliases)

    safe_call(logger, f"log_artifact({name!r})", log)
