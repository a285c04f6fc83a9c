"""Deprecated import paths: the old flat module names forward to their new home and warn once.

The adapters moved to ``prune_landscape/integrations/`` (issue 14). ``prune_landscape.callbacks``,
``prune_landscape.lit``, ``prune_landscape.loggers`` and ``prune_landscape.datamodules`` keep working as
thin aliases: each re-exports its new module, forwards every other attribute to it (Hydra ``_target_``
strings in old configs still resolve), and raises one :class:`DeprecationWarning` on first import.
``prune_landscape.cli`` forwards the same way but silently: console scripts installed before the move run
``from prune_landscape.cli import main``, and a warning there would be printed on every command.
"""

from __future__ import annotations

import importlib
import sys
import types
import warnings
from collections.abc import Callable
from typing import Any

__all__ = ["alias"]


def _caller_level() -> int:
    """The ``stacklevel`` that points at the line importing the alias, past the import machinery."""
    frame, level = sys._getframe(2), 2  # frame 2: the alias module's body (level 2 for warnings.warn in alias)
    while frame is not None:
        name = frame.f_globals.get("__name__", "")
        filename = frame.f_code.co_filename
        machinery = filename.startswith("<frozen importlib") or filename.endswith(("importlib/__init__.py", "_moved.py"))
        if not (machinery or name == "prune_landscape" or frame.f_globals.get("_MOVED_TO")):
            return level
        frame, level = frame.f_back, level + 1
    return level


def alias(old: str, new: str, *, warn: bool = True) -> tuple[list[str], Callable[[str], Any]]:
    """Warn that ``old`` moved to ``new`` (unless ``warn`` is False); return ``new``'s public names and a
    module ``__getattr__``.

    Used by an alias module as::

        _MOVED_TO = "prune_landscape.integrations.lit"
        __all__, __getattr__ = alias(__name__, _MOVED_TO)
    """
    target: types.ModuleType = importlib.import_module(new)
    if warn:
        warnings.warn(f"{old} moved to {new}; import from {new} instead ({old} is a deprecated alias and will be "
                      f"removed)", DeprecationWarning, stacklevel=_caller_level())
    public = list(getattr(target, "__all__", [n for n in vars(target) if not n.startswith("_")]))

    def forward(name: str) -> Any:
        try:
            return getattr(target, name)
        except AttributeError:
            raise AttributeError(f"module {old!r} (moved to {new!r}) has no attribute {name!r}") from None

    sys.modules[old].__dict__.update({n: getattr(target, n) for n in public})
    return public, forward
